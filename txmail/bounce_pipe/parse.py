"""Bounce parser: one returned mail in, the recipients' outcomes out.

SYNOPSIS
    parse_message(raw: bytes) -> list[BounceEvent]
    parse_report(raw: bytes) -> BounceReport
    python -m txmail.bounce_pipe.parse FILE...

DESCRIPTION
    parse_report() reads one message as it arrives on the bounce address
    (a DSN, a non-standard MTA notice, an ARF complaint, an auto-reply) and
    returns a BounceReport: one BounceEvent per recipient named in it, plus
    what links the report to the message that was sent (the returned
    message's Message-ID and X- headers, the Original-Envelope-Id, Postfix's
    X-Postfix-Queue-ID).

    The message is parsed with the stdlib email package (policy compat32,
    which never raises on bad headers) after its line ends are made LF; then
    the detectors in txmail.bounce_pipe.detectors are tried in order and the
    first that recognises the message answers. Ordinary mail yields no event.

    Run as a module, it prints one JSON line per FILE, as
    `txmail bounces parse` does.

READS
    At most MAX_INPUT_BYTES of the message, and at most MAX_NESTED_PARTS
    nested parts: the rest of a huge message is an attachment nobody needs
    to classify a bounce.

FAILURE
    Malformed MIME, unknown charsets, bare CR line ends, random bytes and
    empty input all give a report (usually with no events), never an
    exception; MIME nested too deeply for the stdlib parser, or with a boundary
    parameter it cannot read, is read for its headers only. A detector that
    trips over a message it claimed is logged and skipped, so the next
    detector still gets its chance.
"""

from __future__ import annotations

import email
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email import policy
from email.errors import MessageError
from email.message import Message
from email.parser import BytesHeaderParser
from itertools import islice

from txmail.bounce_pipe.decoding import header_text
from txmail.bounce_pipe.detectors import DETECTORS
from txmail.bounce_pipe.returned import (
    ReturnedMail,
    with_fixed_boundaries,
    without_returned_bodies,
)
from txmail.outcomes.findings import BounceEvent

__all__ = ["BounceEvent", "BounceReport", "parse_message", "parse_report", "MAX_INPUT_BYTES"]

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_NESTED_PARTS = 64

# Headers of the returned message worth keeping to find what was sent;
# every X- header is kept as well (VERP tokens and tracking ids live there).
_ORIGINAL_HEADERS = ("message-id", "from", "to", "subject", "date", "return-path", "list-id")
_MAX_ORIGINAL_HEADERS = 40
# How many fields of the returned message to look through (a long Received
# chain comes first and says nothing about what was sent).
_MAX_ORIGINAL_FIELDS = 200

# What reading a message or a detector may raise on input it misjudged;
# anything else is a bug that should surface.
_DETECTOR_ERRORS = (
    MessageError,
    ValueError,
    LookupError,
    TypeError,
    IndexError,
    AttributeError,
    UnicodeError,
    RecursionError,
)


@dataclass
class BounceReport:
    """Everything one returned mail says, for the bounce pipe."""

    events: list[BounceEvent] = field(default_factory=list)
    original_message_id: str | None = None
    original_envelope_id: str | None = None
    postfix_queue_id: str | None = None
    original_headers: dict[str, str] = field(default_factory=dict)
    detector: str | None = None
    # d= domains of the DKIM signatures that verify; filled for complaints only
    # (txmail.bounce_pipe.feedback), where it says whether a feedback loop sent the report
    dkim_domains: tuple[str, ...] = ()
    # the mail cut for RET=HDRS (forward.headers_only), computed by the parser worker so the
    # recorder never takes hostile mail apart: b"" when it is the mail itself, None when not
    # computed (a report parsed in the recorder's own process, which then cuts it itself)
    headers_only: bytes | None = None


def parse_message(raw: bytes) -> list[BounceEvent]:
    """The events one returned mail reports (see parse_report)."""
    return parse_report(raw).events


def parse_report(raw: bytes) -> BounceReport:
    """Parse one returned mail into a BounceReport; never raises on bad mail."""
    message = read_message(raw)
    if message is None:
        return BounceReport()
    report = BounceReport()
    try:
        mail = ReturnedMail.from_message(message)
    except _DETECTOR_ERRORS:
        # A bug meeting input nobody foresaw: no events rather than a crash,
        # so the bounce is kept as unparsed instead of being lost.
        log.warning("bounce: could not read the message; no events", exc_info=True)
        return report
    _detect(report, mail)
    if not report.events and mail.original is not None and _is_forwarded_report(mail.original):
        # A gateway that returns the bounce it received as an attachment:
        # the attached report says who failed (read one level deep only).
        inner = ReturnedMail.from_message(mail.original)
        _detect(report, inner)
        if report.events:
            mail = inner
    _link_original(report, mail)
    return report


def _detect(report: BounceReport, mail: ReturnedMail) -> None:
    for detector in DETECTORS:
        try:
            events = detector.detect(mail)
        except _DETECTOR_ERRORS:
            log.warning(
                "bounce detector %s failed on a message; trying the next",
                detector.name,
                exc_info=True,
            )
            continue
        if events:
            report.events = events
            report.detector = detector.name
            return


def _is_forwarded_report(original: Message) -> bool:
    if not original.is_multipart():
        return False
    sender = str(original.get("From", "")).lower()
    return original.get_content_type() == "multipart/report" or "mailer-daemon" in sender


def read_message(raw: bytes) -> Message | None:
    """The message parsed from raw bytes with LF line ends, or None if empty.

    Before the stdlib parser reads it, the returned message's body is left out and the
    multipart boundaries are renamed to a fixed set (returned.without_returned_bodies and
    with_fixed_boundaries): the parts the detectors read come out the same, without a regex
    compiled per boundary or a pass over the returned body's lines.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError("parse_report() wants the message as bytes")
    data = bytes(raw[:MAX_INPUT_BYTES])
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    data = data.lstrip(b"\n")
    if data.startswith(b"From "):
        # An mbox separator line is not a header; drop it before parsing.
        data = data.partition(b"\n")[2]
    if not data.strip():
        return None
    data = with_fixed_boundaries(without_returned_bodies(_cut_deep_nesting(data)))
    try:
        return email.message_from_bytes(data, policy=policy.compat32)
    except RecursionError:
        # The stdlib parser recurses once per nested part; a hostile nesting
        # thousands deep exhausts the stack. Its headers are still readable.
        log.warning("bounce: MIME nested too deeply; reading the headers only")
    except TypeError:
        # A boundary given both whole and in RFC 2231 pieces (boundary*= and
        # boundary*0=) makes the stdlib parser raise.
        log.warning("bounce: MIME boundary parameter unreadable; reading the headers only")
    return BytesHeaderParser(policy=policy.compat32).parsebytes(data)


def _cut_deep_nesting(data: bytes) -> bytes:
    """The message cut before its MAX_NESTED_PARTS-th nested part.

    The stdlib parser's work grows with the square of the nesting depth
    (every line is checked against every open boundary) and it recurses per
    level; real bounces nest a handful of parts, so what lies beyond a few
    dozen is dropped rather than parsed.
    """
    if data.count(b"oundary=") + data.count(b"/rfc822") <= MAX_NESTED_PARTS:
        return data
    lowered = data.lower()
    starts = sorted(
        [m.start() for m in re.finditer(rb"boundary=|message/rfc822", lowered)][
            : MAX_NESTED_PARTS + 1
        ]
    )
    if len(starts) <= MAX_NESTED_PARTS:
        return data
    log.warning("bounce: more than %d nested parts; reading the first ones only", MAX_NESTED_PARTS)
    return data[: starts[MAX_NESTED_PARTS]]


def _link_original(report: BounceReport, mail: ReturnedMail) -> None:
    fields = mail.report_fields
    report.postfix_queue_id = fields.get("x-postfix-queue-id") or None
    envelope_id = fields.get("original-envelope-id")
    if not envelope_id:
        for group in mail.status_groups:
            if group.get("original-envelope-id"):
                envelope_id = group["original-envelope-id"]
                break
    report.original_envelope_id = envelope_id or None
    headers: dict[str, str] = {}
    original = mail.original
    if original is not None:
        for name, value in islice(original.raw_items(), _MAX_ORIGINAL_FIELDS):
            key = name.lower()
            if key in _ORIGINAL_HEADERS or key.startswith("x-"):
                headers.setdefault(key, header_text(value)[:1000])
            if len(headers) >= _MAX_ORIGINAL_HEADERS:
                break
    elif mail.quoted:
        for line in mail.quoted.split("\n")[:200]:
            name, sep, value = line.partition(":")
            key = name.strip().lower()
            if sep and (key in _ORIGINAL_HEADERS or key.startswith("x-")) and " " not in key:
                headers.setdefault(key, value.strip()[:1000])
    report.original_headers = headers
    message_id = headers.get("message-id", "").strip()
    report.original_message_id = message_id or None


def report_line(path: str, report: BounceReport, *, details: bool = False) -> str:
    """One output line of `bounces parse`: the file and its events as JSON."""
    if details:
        record: dict[str, object] = {
            "file": path,
            "events": [asdict(e) for e in report.events],
            "detector": report.detector,
            "original_message_id": report.original_message_id,
            "original_envelope_id": report.original_envelope_id,
            "postfix_queue_id": report.postfix_queue_id,
            "original_headers": report.original_headers,
        }
    else:
        record = {"file": path, "events": [e.summary() for e in report.events]}
    return json.dumps(record, ensure_ascii=False)


def report_files(
    paths: list[str],
    write_line: Callable[[str], None],
    write_error: Callable[[str], None],
    *,
    details: bool = False,
) -> int:
    """Write one JSON line per readable file, in order; 2 if any was unreadable.

    '-' reads the message from standard input. An unreadable file gets one
    line on the error stream and no JSON line; the others are still read.
    """
    status = 0
    for path in paths:
        try:
            if path == "-":
                raw = sys.stdin.buffer.read(MAX_INPUT_BYTES)
            else:
                with open(path, "rb") as handle:
                    raw = handle.read(MAX_INPUT_BYTES)
        except OSError as error:
            write_error(f"cannot read {path}: {error.strerror or error}")
            status = 2
            continue
        write_line(report_line(path, parse_report(raw), details=details))
    return status


def main(argv: list[str] | None = None) -> int:
    """python -m txmail.bounce_pipe.parse FILE...: as `txmail bounces parse`."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m txmail.bounce_pipe.parse FILE...", file=sys.stderr)
        return 2

    def write_error(line: str) -> None:
        sys.stdout.flush()
        print(f"parse: error: {line}", file=sys.stderr)

    return report_files(paths, print, write_error)


if __name__ == "__main__":
    sys.exit(main())
