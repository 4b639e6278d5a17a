"""DSN field blocks (RFC 3464): the per-message and per-recipient fields of a report.

DESCRIPTION
    field_blocks() splits text into blocks of "Name: value" fields separated by blank lines,
    as a message/delivery-status part or an old MTA's inline DSN prints them;
    parsed_blocks() does the same for a delivery-status part the stdlib parsed already; and
    split_dsn_groups() separates the per-message fields (Reporting-MTA, Arrival-Date, ...)
    from the per-recipient groups (Final-Recipient, Action, Status, ...).

FAILURE
    Never raises: lines that are not fields are skipped, a repeated recipient field without a
    blank line before it starts a new group, and field names are capped in length.
"""

from __future__ import annotations

import re
from email.message import Message

from txmail.bounce_pipe.decoding import header_text, raw_payload

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{1,40})[ \t]*:[ \t]*(.*)$")


def field_blocks(text: str) -> list[dict[str, str]]:
    """Split text into blocks of 'Name: value' fields separated by blank lines.

    Continuation lines are unfolded; the first value of a repeated name wins,
    as in a DSN each name may appear once per block. Lines that are not fields
    end nothing: old MTAs interleave prose and fields.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            last = None
            continue
        if line[0] in " \t" and last is not None:
            current[last] = (current[last] + " " + line.strip()).strip()
            continue
        match = _FIELD_RE.match(line)
        if match:
            name = match.group(1).lower()
            if name in current:
                # The same field again starts a new recipient block (DSNs with
                # no blank line between recipients exist).
                if name in ("final-recipient", "original-recipient") or name == "status":
                    blocks.append(current)
                    current = {}
                else:
                    last = None
                    continue
            current[name] = match.group(2).strip()
            last = name
        else:
            last = None
    if current:
        blocks.append(current)
    return blocks


def split_dsn_groups(blocks: list[dict[str, str]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Separate the per-message fields from the per-recipient groups."""
    message_fields: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    for block in blocks:
        if "final-recipient" in block or "original-recipient" in block:
            groups.append(block)
        elif "status" in block and "action" in block and groups:
            groups.append(block)
        else:
            for key, value in block.items():
                message_fields.setdefault(key, value)
    return message_fields, groups


def parsed_blocks(groups: list[Message]) -> list[dict[str, str]]:
    """DSN field blocks from a message/delivery-status part the stdlib parsed.

    The stdlib already split the part at blank lines into one Message per
    block; a block that names a second recipient without a blank line in
    between is split here, as field_blocks() does for text.
    """
    blocks: list[dict[str, str]] = []
    for group in groups:
        current: dict[str, str] = {}
        for name, value in group.raw_items():
            key = name.lower()
            if key in current:
                if key not in ("final-recipient", "original-recipient", "status"):
                    continue
                blocks.append(current)
                current = {}
            text = value if value.isascii() and "=?" not in value else header_text(value)
            current[key] = " ".join(text.split())
        body = raw_payload(group)
        if isinstance(body, str) and body.strip():
            # A field folded without indentation ends the stdlib's header
            # block; the fields after it land in the body. Read them there.
            extra = field_blocks(body)
            if extra:
                for key, value in extra[0].items():
                    current.setdefault(key, value)
                blocks.append(current)
                blocks.extend(extra[1:])
                continue
        if current:
            blocks.append(current)
    return blocks
