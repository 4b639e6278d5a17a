"""One message as the milter sees it: envelope, headers and body, parsed once at end of message.

The milter fills a Submission from its callbacks (MAIL FROM, RCPT TO, each header, body chunks)
and the rules read it. Header values arrive from Postfix without the space after the colon and
with folded lines joined by a bare newline; `message_bytes()` rebuilds the message with CRLF line
ends, which is what the stdlib `email` parser reads once (`parse()`) and what the DKIM signer
signs after the milter's edits (`message_bytes(edits, added)`).

The parsed message uses the compat32 policy: it never raises on malformed headers or MIME, it
records defects instead, and it decodes nothing the rules do not ask for.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from txmail.milter.plan import HeaderEdit, Plan

if TYPE_CHECKING:
    from txmail.store.suppressions import SuppressionEntry

LINE_BREAK = re.compile(rb"\r?\n")
MAX_ADDRESS = 512  # cap what untrusted input can make us carry around


class UnreadableMessage(Exception):
    """The message's structure cannot be read; the milter answers 554 5.6.0."""


def strip_brackets(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address[:MAX_ADDRESS]


def unfold(value: str) -> str:
    """A header value on one line (RFC 5322 §2.2.3)."""
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def domain_of(address: str) -> str:
    """The lower-cased domain of an address ("" when it has none)."""
    if "@" not in address:
        return ""
    return address.rsplit("@", 1)[1].strip().strip("[]").rstrip(".").lower()


def esmtp_params(params: Iterable[str]) -> dict[str, str | None]:
    """ESMTP parameters (`SIZE=123`, `RET=HDRS`, `SMTPUTF8`) by upper-cased keyword."""
    found: dict[str, str | None] = {}
    for param in params:
        keyword, _, value = param.partition("=")
        found[keyword.upper()] = value if "=" in param else None
    return found


@dataclass
class Submission:
    """Envelope, headers and body of the message in progress; reset at every MAIL FROM."""

    account: str
    domains: tuple[str, ...]
    sender: str
    sender_params: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    recipient_params: dict[str, list[str]] = field(default_factory=dict)
    queue_id: str = ""
    stage: str = "mail"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    message: email.message.Message | None = None
    plan: Plan = field(default_factory=lambda: Plan(recipients=[]))
    track_bounces: bool | None = None  # the send API's per-message choice (finish.py)
    suppressed: dict[str, SuppressionEntry] = field(default_factory=dict)
    _authors: list[tuple[str, str]] | None = field(default=None, repr=False)
    _body: bytes | None = field(default=None, repr=False)

    # -- what the callbacks add ------------------------------------------------------------

    def add_header(self, name: str, value: str) -> None:
        self.headers.append((name, value))
        self._authors = None
        self.size += len(name) + len(value) + 4

    def add_body(self, chunk: bytes, keep: bool = True) -> None:
        """Count a body chunk; keep it only while the message can still be accepted."""
        self.size += len(chunk)
        if keep:
            self.body_chunks.append(chunk)
            self._body = None

    def drop_body(self) -> None:
        self.body_chunks.clear()
        self._body = None

    def replace_body(self, body: bytes) -> None:
        """The milter's new body (tracking rewrite), seen by every later step."""
        self.body_chunks = [body]
        self._body = body

    def body(self) -> bytes:
        """The body as one bytes object, joined once however many steps read it (rules,
        parsing, spam check, tracking, DKIM)."""
        if self._body is None:
            self._body = b"".join(self.body_chunks)
        return self._body

    # -- what the rules read ---------------------------------------------------------------

    @property
    def params(self) -> dict[str, str | None]:
        return esmtp_params(self.sender_params)

    def authors(self) -> list[tuple[str, str]]:
        """(display name, address) of every From header address; parsed once per message."""
        if self._authors is None:
            self._authors = addresses(self.header_values("From"))
        return self._authors

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in message order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def message_bytes(
        self, edits: Iterable[HeaderEdit] = (), added: Iterable[tuple[str, str]] = ()
    ) -> bytes:
        """The message with CRLF line ends; with `edits` applied and `added` headers appended
        the way Postfix applies smfi_chgheader and smfi_addheader."""
        headers = apply_edits(self.headers, edits) + list(added)
        lines = [
            LINE_BREAK.sub(b"\r\n", f"{name}: {value}".encode("utf-8", "surrogateescape"))
            for name, value in headers
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body()

    def parse(self) -> email.message.Message:
        """Parse the message once, on first use; every rule reads the same object."""
        if self.message is None:
            try:
                self.message = email.message_from_bytes(self.message_bytes())
            except (
                ValueError,
                TypeError,
                AttributeError,
                IndexError,
                LookupError,
                RecursionError,
            ) as exc:
                raise UnreadableMessage(f"the parser gave up: {exc.__class__.__name__}") from exc
        return self.message


def apply_edits(
    headers: list[tuple[str, str]], edits: Iterable[HeaderEdit]
) -> list[tuple[str, str]]:
    """Headers after smfi_chgheader edits; each index counts the headers of that name as they
    were when the milter saw them, so edits do not shift one another."""
    by_position: dict[tuple[str, int], str | None] = {}
    for edit in edits:
        by_position[(edit.name.lower(), edit.index)] = edit.value
    if not by_position:
        return list(headers)
    seen: dict[str, int] = {}
    result: list[tuple[str, str]] = []
    for name, value in headers:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        position = (key, seen[key])
        if position not in by_position:
            result.append((name, value))
        elif by_position[position] is not None:
            result.append((name, by_position[position]))  # type: ignore[arg-type]
    return result


def addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, address) pairs of address headers; never raises on junk."""
    try:
        return [(name, address) for name, address in email.utils.getaddresses(values) if address]
    except (ValueError, TypeError, IndexError):
        return []
