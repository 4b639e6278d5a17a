"""Postfix's SMTP access policy delegation protocol (SMTPD_POLICY_README), both directions.

A request is a block of `name=value` lines ended by an empty line; the answer is
`action=TEXT` and an empty line. One connection carries many requests, one after another.

Reads:  the bytes of one block, without its closing empty line.
Fails:  ProtocolError for anything that is not a policy request: a line without `=`, a name or
        value over 512 characters (as greylist.pl caps them), no `request=smtpd_access_policy`,
        a block over MAX_REQUEST bytes. The server logs a warning and closes the connection,
        as SMTPD_POLICY_README asks; it never answers garbage.
Unknown attributes are ignored: Postfix adds new ones from release to release.
"""

from __future__ import annotations

from txmail.errors import TxmailError
from txmail.policyd.decide import Request

MAX_ATTRIBUTE = 512
MAX_REQUEST = 32 * 1024  # a real request is about 1 KB; more is a client that never stops
SEPARATOR = b"\n\n"


class ProtocolError(TxmailError):
    """The peer sent something that is not a policy request."""


def parse_block(block: bytes) -> dict[str, str]:
    """The attributes of one request block (with or without its closing empty line)."""
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = [line for line in text.split("\n") if line]
    if lines and max(map(len, lines)) > MAX_ATTRIBUTE:  # a long line: the name or the value?
        for line in lines:
            name, _, value = line.partition("=")
            if len(name) > MAX_ATTRIBUTE or len(value) > MAX_ATTRIBUTE:
                raise ProtocolError(f"attribute {name[:40]!r} is over {MAX_ATTRIBUTE} characters")
    try:
        attributes = dict(line.split("=", 1) for line in lines)
    except ValueError:
        garbage = next(line for line in lines if "=" not in line)
        raise ProtocolError(f"not an attribute line: {garbage[:100]!r}") from None
    if "" in attributes:
        raise ProtocolError("not an attribute line: an attribute without a name")
    if attributes.get("request") != "smtpd_access_policy":
        raise ProtocolError("not a policy request (no request=smtpd_access_policy)")
    return attributes


def _count(attributes: dict[str, str], name: str) -> int:
    value = attributes.get(name, "") or "0"
    if not value.isdigit():
        raise ProtocolError(f"{name}={value[:40]!r} is not a number")
    return int(value)


def parse_request(block: bytes) -> Request:
    attributes = parse_block(block)
    return Request(
        protocol_state=attributes.get("protocol_state", "").upper(),
        sasl_username=attributes.get("sasl_username", ""),
        queue_id=attributes.get("queue_id", ""),
        instance=attributes.get("instance", ""),
        recipient=attributes.get("recipient", ""),
        recipient_count=_count(attributes, "recipient_count"),
        size=_count(attributes, "size"),
        server_port=_count(attributes, "server_port"),
    )


def encode_action(text: str) -> bytes:
    """The answer block for one action; line breaks in `text` could split it, so they go."""
    return b"action=" + text.replace("\n", " ").replace("\r", " ").encode() + SEPARATOR
