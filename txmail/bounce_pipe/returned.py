"""The returned-mail view: one returned mail decoded once, for every bounce detector.

DESCRIPTION
    A detector looks at one returned mail and says which recipients failed
    (or complained, or auto-replied) and why. Every detector receives the same
    pre-digested view of the message, a ReturnedMail, so that MIME walking,
    transfer decoding and charset repair happen once, here, and never in a
    detector:

        notification     the human-readable text of the report, decoded,
                         with line ends as LF, without the returned message
        status_groups    the per-recipient field groups of every
                         message/delivery-status part (or of DSN fields
                         printed inline in the text, as old MTAs do)
        report_fields    the per-message DSN fields (Reporting-MTA, ...)
        feedback_fields  the fields of a message/feedback-report part (ARF)
        original         the headers of the returned original message

    The text of each part comes from txmail.bounce_pipe.decoding, the DSN
    fields from txmail.bounce_pipe.dsn_fields; what a detector returns
    (Finding, BounceEvent) is in txmail.outcomes.findings.

READS
    An email.message.Message built with policy compat32 from bytes whose line
    ends were already made LF by txmail.bounce_pipe.parse.

FAILURE
    Building the view never raises on bad input: undecodable parts become
    text with replacement characters (txmail.bounce_pipe.decoding), and the
    MIME walk is bounded in depth and in the number of parts, so a part that
    reuses its parent's boundary cannot make it run away.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32

from txmail.bounce_pipe.decoding import (
    MAX_TEXT_CHARS,
    header_text,
    html_to_text,
    message_lines,
    part_text,
    raw_payload,
)
from txmail.bounce_pipe.dsn_fields import field_blocks, parsed_blocks, split_dsn_groups
from txmail.outcomes.addresses import clean_address

# Bounds on untrusted structure: deeper or wider MIME trees are not bounces
# anybody needs to read, and each bound keeps one hostile message cheap.
MAX_PARTS = 64
MAX_DEPTH = 8


# ---------------------------------------------------------------------------
# The returned message's body, left out before MIME parsing

# Both read the message lowercased (bytes keep their offsets when lowercased).
# (A literal first lets the regex engine skip ahead to it, unlike "^" or a look-behind.)
_RETURNED_PART_RE = re.compile(rb"\ncontent-type:[ \t]*message/(?:rfc822|global)\b")
_PLAIN_ENCODINGS = (b"7bit", b"8bit", b"binary")
# Lines opening with "--" that either rewrite looks at, at most (the work stays small on
# hostile input; past it, the message is parsed as it came).
_MAX_DASH_LINES = 2000


def without_returned_bodies(data: bytes) -> bytes:
    """data (LF line ends) with the body of each returned message left out, its headers kept.

    A bounce carries the sender's own message back as a message/rfc822 part; only that
    message's headers link the report to what was sent, its body is the sender's text and
    never says why delivery failed. Parsing that body costs the MIME parser most of its work
    (and a regex compiled per multipart boundary), so it is cut out first, up to the line that
    closes the part (RFC 2046: a boundary never occurs inside its parts). Kept whole: a part
    with a transfer encoding (its headers are encoded too), and a returned message that is
    itself a report or comes from a mailer-daemon (a gateway forwarding the bounce it got,
    which the parser reads one level deep).
    """
    lowered = data.lower()
    if b"message/" not in lowered or not _multipart_at_top(lowered):
        return data
    pieces: list[bytes] = []
    kept_to = 0
    for match in _RETURNED_PART_RE.finditer(lowered):
        start = match.start() + 1
        if start < kept_to:
            continue  # inside a returned message already cut
        opener = data.rfind(b"\n--", 0, start)
        headers_end = data.find(b"\n\n", start)
        if opener < 0 or headers_end < 0 or b"\n\n" in data[opener:start]:
            continue  # not in the headers of a part that a delimiter line opens
        delimiter = data[opener + 1 : data.find(b"\n", opener + 1)].rstrip()
        if not _declared(data, delimiter[2:]):
            continue
        part_headers = lowered[opener:headers_end]
        encoding = part_headers.partition(b"content-transfer-encoding:")[2].split(b"\n", 1)[0]
        if encoding.strip() and encoding.strip() not in _PLAIN_ENCODINGS:
            continue
        body_start = data.find(b"\n\n", headers_end + 2)
        closer = _delimiter_line(data, delimiter, headers_end + 1)
        if body_start < 0 or closer < 0 or body_start >= closer:
            continue
        returned_headers = lowered[headers_end + 2 : body_start]
        if b"multipart/report" in returned_headers or b"mailer-daemon" in returned_headers:
            continue
        pieces.append(data[kept_to : body_start + 1])
        kept_to = closer
    if not pieces:
        return data
    pieces.append(data[kept_to:])
    return b"".join(pieces)


def _dash_lines(data: bytes) -> Iterator[tuple[int, int]]:
    """Start and end of each line of data that opens with "--"."""
    start = 0 if data.startswith(b"--") else data.find(b"\n--") + 1
    if start == 0 and not data.startswith(b"--"):
        return
    while True:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        yield start, end
        following = data.find(b"\n--", end)
        if following < 0:
            return
        start = following + 1


def _delimiter_line(data: bytes, delimiter: bytes, start: int) -> int:
    """Where the line break before the next line opening with delimiter is, or -1.

    A line counts, as the stdlib parser reads it, when the delimiter is followed by "--",
    blanks or the line end (a longer boundary that starts the same way is another one).
    """
    needle = b"\n" + delimiter
    at = data.find(needle, start)
    for _ in range(_MAX_DASH_LINES):
        if at < 0:
            break
        line_end = data.find(b"\n", at + 1)
        tail = data[at + len(needle) : len(data) if line_end < 0 else line_end]
        if tail.rstrip(b" \t") in (b"", b"--"):
            return at
        at = data.find(needle, at + 1)
    return -1


def _multipart_at_top(lowered: bytes) -> bool:
    """Whether the message's own header (lowercased) says multipart: else it has no parts."""
    return b"multipart/" in lowered[: lowered.find(b"\n\n")]


def _declared(data: bytes, boundary: bytes) -> bool:
    """Whether a boundary parameter in data names this boundary."""
    # (Spelt boundary=, Boundary= or BOUNDARY=; another spelling only means no cut.)
    return any(
        (name + b'="' + boundary + b'"') in data or (name + b"=" + boundary) in data
        for name in (b"oundary", b"OUNDARY")
    )


# ---------------------------------------------------------------------------
# MIME boundaries renamed to a fixed set before parsing

# A boundary parameter whose value ends where the stdlib reads it to end (then ";" or the
# line's end): quoted without quoted-pairs, or a bare token.
_BOUNDARY_PARAM_RE = re.compile(
    rb'boundary\s*=\s*(?:"([^"\\\n]{1,200})"|([^\s;"\\]{1,200}))(?=[ \t]*(?:;|\n|$))'
)
_OUR_BOUNDARY = b"txmail-boundary-"


def with_fixed_boundaries(data: bytes) -> bytes:
    """data with each multipart boundary renamed txmail-boundary-N (N from 0, in order).

    The stdlib parser compiles a regular expression for every boundary it meets, and
    boundaries are unique per message, so each bounce paid a fresh compile per multipart
    (a third of its parsing time); with boundaries from a small fixed set the re module's
    cache serves them. A boundary is renamed in its parameter and on every line that is
    exactly a delimiter of it ("--" boundary, optionally "--", optionally blanks), so the
    parts come out as before (a text that quotes a boundary, such as a copy of the returned
    message's headers inline, shows the new name). Left as they are: a message that is not
    multipart at the top, boundaries in a form this does not read
    (RFC 2231 pieces, quoted-pairs, over 200 characters), and every boundary of a message
    that already uses our names.
    """
    lowered = data.lower()
    if b"boundary" not in lowered or b"boundary*" in lowered or _OUR_BOUNDARY in lowered:
        return data
    if not _multipart_at_top(lowered):
        return data  # a single-part notice: boundaries in it are quoted text, not structure
    if data.count(b"\n--") > _MAX_DASH_LINES:
        return data  # no bounce has so many: not worth a pass over each
    names: dict[bytes, bytes] = {}
    spans: list[tuple[int, int, bytes]] = []
    # Found in the lowercased copy, read from the message: a boundary's case counts.
    for match in _BOUNDARY_PARAM_RE.finditer(lowered):
        if lowered[match.start() - 1 : match.start()] not in (b";", b" ", b"\t", b"\n"):
            continue  # part of a longer word (a boundary value such as "MCBoundary=_1")
        group = 1 if match.group(1) is not None else 2
        value = data[match.start(group) : match.end(group)].rstrip(b" \t")
        if not value:
            continue
        if value not in names:
            if len(names) >= 64:
                continue  # beyond the fixed set: left as it is, parameter and lines alike
            names[value] = _OUR_BOUNDARY + str(len(names)).encode()
        spans.append((match.start(group), match.end(group), names[value]))
    if not names:
        return data
    pieces: list[bytes] = []
    kept_to = 0
    for start, end, name in spans:
        pieces.append(data[kept_to:start])
        pieces.append(name)
        kept_to = end
    pieces.append(data[kept_to:])
    renamed = b"".join(pieces)
    pieces = []
    kept_to = 0
    for start, end in _dash_lines(renamed):
        rest = renamed[start + 2 : end].rstrip(b" \t")
        value = rest if rest in names else rest[:-2] if rest.endswith(b"--") else b""
        if value in names:
            pieces.append(renamed[kept_to : start + 2])
            pieces.append(names[value])
            kept_to = start + 2 + len(value)
    pieces.append(renamed[kept_to:])
    return b"".join(pieces)


# ---------------------------------------------------------------------------
# Where a plain-text bounce starts quoting the returned message

_RETURNED_MARKERS = re.compile(
    r"^[ \t>|]*(?:"
    r"-+ ?this is a copy of the message|"
    r"-+ ?below this line is a copy of the message|"
    r"-+ ?(?:original|unsent|returned) message (?:follows|headers?)|"
    r"-+ ?(?:the )?original message\b|"
    r"-+ ?(?:start of )?(?:returned|original|undelivered) (?:message|mail)\b|"
    r"-+ ?(?:message|mail) (?:headers? )?follows?\b|"
    r"-+ ?the header of the original message|"
    r"-+ ?the header and top \d+ lines of the message follows|"
    r"-+ ?included is a copy of the message|"
    r"-+ ?original message header|"
    r"-+ ?forwarded message|"
    r"-+ ?begin original message|"
    r"-+ ?message text follows|"
    r"-+ ?\w+ message follows|"
    r"original message follows|"
    r"original message:[ \t]*$|"
    r"-+ ?message text follows|"
    r"message headers follow|"
    r"below is a copy of the original message|"
    r"your message reads \(in part\)|"
    r"the original message was:|"
    r"original message headers:|"
    r"content-type: message/rfc822"
    r")",
    re.I | re.M,
)


# Every marker above contains one of these words: without them, skip the scan.
_MARKER_WORDS = (
    "copy of", "original", "returned", "unsent", "undelivered", "follow", "forwarded",
    "your message reads", "message/rfc822",
)  # fmt: skip


def split_returned(text: str, lowered: str | None = None) -> tuple[str, str]:
    """Split a plain-text bounce into the notice and the quoted original."""
    lowered = text.lower() if lowered is None else lowered
    found = [at for at in map(lowered.find, _MARKER_WORDS) if at >= 0]
    if not found:
        return text, ""
    # A marker's line holds one of the words: the scan starts at the line of the first one
    # (the regex has no literal to skip ahead to, and notices run to kilobytes).
    start = text.rfind("\n", 0, min(found)) + 1 if len(lowered) == len(text) else 0
    match = _RETURNED_MARKERS.search(text, start)
    if not match or match.start() < 20:
        return text, ""
    return text[: match.start()], text[match.start() :]


# ---------------------------------------------------------------------------
# The view every detector reads


@dataclass
class ReturnedMail:
    """One returned mail, decoded once for every detector."""

    message: Message
    subject: str = ""
    header_from: str = ""
    from_address: str = ""
    notification: str = ""
    status_groups: list[dict[str, str]] = field(default_factory=list)
    report_fields: dict[str, str] = field(default_factory=dict)
    feedback_fields: dict[str, str] = field(default_factory=dict)
    feedback_text: str = ""
    original: Message | None = None
    original_text: str = ""
    has_dsn_part: bool = False
    _lower: str | None = None
    _notice: str | None = None
    _quoted: str | None = None
    _headers: dict[str, list[str]] | None = None

    def header(self, name: str) -> str:
        """A decoded top-level header value, '' when absent."""
        values = self._header_index().get(name.lower())
        return header_text(values[0]) if values else ""

    def headers_all(self, name: str) -> list[str]:
        """Every value of one top-level header, decoded."""
        return [header_text(v) for v in self._header_index().get(name.lower(), [])]

    def _header_index(self) -> dict[str, list[str]]:
        # Message.get() lowercases every field name on every call; detectors
        # ask for many headers, so index them once.
        if self._headers is None:
            index: dict[str, list[str]] = {}
            for name, value in self.message.raw_items():
                index.setdefault(name.lower(), []).append(value)
            self._headers = index
        return self._headers

    def original_headers(self, name: str) -> list[str]:
        """Values of one header of the returned message, parsed or quoted."""
        if self.original is not None:
            values = self.original.get_all(name)
            if values:
                return [header_text(v) for v in values]
        if self.quoted:
            wanted = name.lower() + ":"
            return [
                line.split(":", 1)[1].strip()
                for line in self.quoted.split("\n")[:300]
                if line.lower().startswith(wanted)
            ]
        return []

    @property
    def notification_lower(self) -> str:
        if self._lower is None:
            self._lower = self.notification.lower()
        return self._lower

    @property
    def notice(self) -> str:
        """The notification without a returned message quoted inline."""
        if self._notice is None:
            self._notice, self._quoted = split_returned(self.notification, self.notification_lower)
        return self._notice

    @property
    def quoted(self) -> str:
        """The returned message as quoted inline in the text ('' if none)."""
        if self._quoted is None:
            self._notice, self._quoted = split_returned(self.notification, self.notification_lower)
        return self._quoted

    @classmethod
    def from_message(cls, message: Message) -> ReturnedMail:
        mail = cls(message=message)
        mail.subject = mail.header("Subject")
        mail.header_from = mail.header("From")
        mail.from_address = clean_address(mail.header_from)
        _digest(mail, message)
        return mail


def _digest(mail: ReturnedMail, top: Message) -> None:
    texts: list[str] = []
    html: list[Message] = []
    status_text: list[str] = []
    blocks: list[dict[str, str]] = []
    stack: list[tuple[Message, int]] = [(top, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        ctype = _content_type(part)
        if ctype.startswith("multipart/") and not part.is_multipart() and depth < MAX_DEPTH:
            repaired = _repair_multipart(part, ctype)
            if repaired is not None:
                stack.append((repaired, depth + 1))
                continue
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if ctype in ("message/delivery-status", "message/global-delivery-status"):
                mail.has_dsn_part = True
                blocks.extend(parsed_blocks(children))
            elif ctype == "message/feedback-report":
                _read_feedback(mail, "\n".join(message_lines(c) for c in children))
            elif ctype in ("message/rfc822", "message/global"):
                # The returned message: its headers link the bounce to what
                # was sent; its body is the sender's, never the report's.
                if mail.original is None and children:
                    mail.original = children[0]
            elif not ctype.startswith("message/") and depth < MAX_DEPTH:
                stack.extend((child, depth + 1) for child in reversed(children))
            continue
        if ctype in (
            "message/delivery-status",
            "message/global-delivery-status",
            "text/delivery-status",
        ):
            mail.has_dsn_part = True
            status_text.append(part_text(part))
        elif ctype == "message/feedback-report":
            _read_feedback(mail, part_text(part))
        elif ctype in ("text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"):
            if not mail.original_text and mail.original is None:
                mail.original_text = part_text(part)
        elif ctype in ("message/rfc822", "message/global"):
            # Not parsed as a message (an encoded one): keep its headers.
            if not mail.original_text and mail.original is None:
                mail.original_text = part_text(part)
        elif ctype == "text/html":
            # Decoded only if no plain text says the same (it usually does).
            html.append(part)
        elif ctype.startswith(("text/", "multipart/")) or ctype == "application/octet-stream":
            if ctype != "text/plain" and "content-disposition" in part and _named(part):
                # A named attachment is the sender's file, not the report.
                continue
            texts.append(part_text(part))
    notification = "\n".join(t for t in texts if t)
    if not notification.strip() and html:
        notification = "\n".join(html_to_text(part_text(h)) for h in html)
    mail.notification = notification[:MAX_TEXT_CHARS]
    for chunk in status_text:
        blocks.extend(field_blocks(chunk))
    if not any("final-recipient" in b or "original-recipient" in b for b in blocks):
        # DSN fields printed inline (no delivery-status part, or a broken one).
        lowered = mail.notification_lower
        if "final-recipient" in lowered or "original-recipient" in lowered:
            blocks.extend(field_blocks(mail.notification))
    mail.report_fields, mail.status_groups = split_dsn_groups(blocks)
    if mail.original is None and mail.original_text:
        mail.original = _headers_message(mail.original_text)


def _named(part: Message) -> bool:
    """Whether the part gives a file name. An RFC 2231 parameter given both whole and in
    pieces (filename*= and filename*0=) makes the stdlib raise TypeError: a name all the same."""
    try:
        return bool(part.get_filename())
    except TypeError:
        return True


_BOUNDARY_LINE_RE = re.compile(r"^--([^\s]{1,200})[ \t]*\n(?=[A-Za-z-]+:)", re.M)


def _repair_multipart(part: Message, ctype: str) -> Message | None:
    """Re-read a multipart whose boundary parameter is missing or mangled.

    Some MTAs fold the Content-Type so the boundary is lost; the first
    '--token' line followed by a header names it again.
    """
    body = raw_payload(part)
    if not isinstance(body, str):
        return None
    match = _BOUNDARY_LINE_RE.search(body)
    if not match:
        return None
    boundary = match.group(1)
    if boundary.endswith("--"):
        boundary = boundary[:-2]
    head = f'Content-Type: {ctype}; boundary="{boundary}"\n\n'
    data = (head + body).encode("utf-8", "surrogateescape")
    try:
        repaired = email.message_from_bytes(data, policy=compat32)
    except RecursionError:
        return None
    return repaired if repaired.is_multipart() else None


def _headers_message(text: str) -> Message:
    message = Message()
    for block in field_blocks(text)[:1]:
        for key, value in block.items():
            message[key] = value
    return message


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except (ValueError, TypeError, AttributeError):
        return "text/plain"


def _read_feedback(mail: ReturnedMail, text: str) -> None:
    mail.feedback_text = text
    for block in field_blocks(text):
        for key, value in block.items():
            mail.feedback_fields.setdefault(key, value)
