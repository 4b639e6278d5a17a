"""What the parser does to a bounce's bytes before the stdlib MIME parser reads them.

Two rewrites make parsing cheaper without changing what is read: the returned message's body
is left out (its headers stay), and multipart boundaries are renamed to a fixed set (the
stdlib compiles one regular expression per boundary). Every test checks that the parts the
detectors read come out as before.
"""

from __future__ import annotations

import email
from email import policy
from email.message import Message
from pathlib import Path

import pytest

from txmail.bounce_pipe.parse import parse_report
from txmail.bounce_pipe.returned import with_fixed_boundaries, without_returned_bodies

CORPUS = Path(__file__).resolve().parents[3].parent / "shared/corpus/bounces"

DSN = (
    b"From: MAILER-DAEMON@mx.example.net\n"
    b"To: sender@example.com\n"
    b"Subject: Undelivered Mail Returned to Sender\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="Outer.1"\n'
    b"\n"
    b"--Outer.1\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"Your message could not be delivered.\n"
    b"--Outer.1-not-this-one\n"
    b"\n"
    b"--Outer.1\n"
    b"Content-Type: message/delivery-status\n"
    b"\n"
    b"Reporting-MTA: dns; mx.example.net\n"
    b"\n"
    b"Final-Recipient: rfc822; gone@example.org\n"
    b"Action: failed\n"
    b"Status: 5.1.1\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected:"
    b" User unknown\n"
    b"\n"
    b"--Outer.1\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: sender@example.com\n"
    b"To: gone@example.org\n"
    b"Message-ID: <sent.1@example.com>\n"
    b"X-Campaign: welcome\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; BOUNDARY=inner-B\n"
    b"\n"
    b"--inner-B\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"Hello there.\n"
    b"--inner-B\n"
    b"Content-Type: application/pdf\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + b"QUJD" * 4000 + b"\n"
    b"--inner-B--\n"
    b"\n"
    b"--Outer.1--  \n"
)


def _parts(raw: bytes) -> list[tuple[str, str | None]]:
    """Each part's content type and, for a leaf, its text: what the detectors read."""
    found: list[tuple[str, str | None]] = []
    for part in email.message_from_bytes(raw, policy=policy.compat32).walk():
        payload = None if part.is_multipart() else str(part.get_payload())
        found.append((part.get_content_type(), payload))
    return found


def _returned(raw: bytes) -> Message:
    message = email.message_from_bytes(raw, policy=policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            assert isinstance(inner, list) and isinstance(inner[0], Message)
            return inner[0]
    raise AssertionError("no returned message")


def test_the_returned_body_is_left_out_and_its_headers_kept() -> None:
    cut = without_returned_bodies(DSN)
    assert len(cut) < len(DSN) // 4
    assert b"QUJD" not in cut and b"Hello there." not in cut
    original = _returned(cut)
    assert original["Message-ID"] == "<sent.1@example.com>"
    assert original["X-Campaign"] == "welcome"
    # The report's own parts are untouched.
    assert _parts(cut)[:3] == _parts(DSN)[:3]
    assert cut.endswith(b"--Outer.1--  \n")


def test_a_forwarded_report_or_an_encoded_part_is_kept_whole() -> None:
    forwarded = DSN.replace(b"From: sender@example.com", b"From: MAILER-DAEMON@relay.example")
    assert without_returned_bodies(forwarded) == forwarded
    as_report = DSN.replace(b"multipart/mixed; BOUNDARY", b"multipart/report; BOUNDARY")
    assert without_returned_bodies(as_report) == as_report
    encoded = DSN.replace(
        b"Content-Type: message/rfc822\n",
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n",
    )
    assert without_returned_bodies(encoded) == encoded
    # No closing delimiter: nothing is cut.
    unclosed = DSN[: DSN.index(b"--inner-B--")]
    assert without_returned_bodies(unclosed) == unclosed


def test_boundaries_renamed_keep_every_part() -> None:
    renamed = with_fixed_boundaries(DSN)
    assert b"Outer.1\n" not in renamed and b"inner-B\n" not in renamed
    assert b'boundary="txmail-boundary-0"' in renamed
    assert b"BOUNDARY=txmail-boundary-1" in renamed
    # A line that only starts like a delimiter is no delimiter, before or after.
    assert b"--Outer.1-not-this-one" in renamed
    assert _parts(renamed) == _parts(DSN)


@pytest.mark.parametrize(
    "raw",
    [
        # RFC 2231 pieces: not read here, so nothing is renamed.
        DSN.replace(b'boundary="Outer.1"', b"boundary*0=Outer; boundary*1=.1"),
        # A message that already uses our names.
        DSN.replace(b"Hello there.", b"--txmail-boundary-0"),
        b"Subject: plain\n\nno parts at all\n",
    ],
)
def test_boundaries_left_alone(raw: bytes) -> None:
    assert with_fixed_boundaries(raw) == raw


def test_parsed_report_is_the_same() -> None:
    report = parse_report(DSN)
    assert [(e.recipient, e.reason) for e in report.events] == [("gone@example.org", "userunknown")]
    assert report.original_message_id == "<sent.1@example.com>"
    assert report.original_headers.get("x-campaign") == "welcome"


def _same_parts_but_names(raw: bytes, renamed: bytes) -> bool:
    """The same parts with the same texts, but for lines that show a boundary's new name."""
    before, after = _parts(raw), _parts(renamed)
    assert [t for t, _ in after] == [t for t, _ in before]
    differing = False
    for (_, text), (_, new_text) in zip(before, after, strict=True):
        if new_text == text:
            continue
        differing = True
        assert text is not None and new_text is not None
        old_lines, new_lines = text.split("\n"), new_text.split("\n")
        assert len(old_lines) == len(new_lines)
        for old, new in zip(old_lines, new_lines, strict=True):
            assert old == new or "txmail-boundary-" in new
    return differing


def test_corpus_parts_unchanged_by_the_renaming() -> None:
    """Same parts, same texts; only a line that quotes a boundary shows its new name."""
    assert CORPUS.is_dir(), f"bounce corpus not found at {CORPUS}"
    quoting = 0
    for path in sorted(CORPUS.glob("*.eml")):
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        quoting += _same_parts_but_names(raw, with_fixed_boundaries(raw))
    assert quoting <= 40


def test_a_boundary_the_stdlib_reads_differently_is_left_alone() -> None:
    # The stdlib reads this boundary as 'Outer.1 (note)': the lines '--Outer.1 (note)' are
    # its delimiters, and neither they nor the parameter may change alone.
    odd = DSN.replace(b'boundary="Outer.1"', b"boundary=Outer.1 (note)").replace(
        b"--Outer.1\n", b"--Outer.1 (note)\n"
    )
    assert _parts(with_fixed_boundaries(odd)) == _parts(odd)


@pytest.mark.parametrize(
    "raw",
    [
        # Odd input: a first line that looks like a delimiter, no line end at all.
        b'--b\nContent-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
        b"x\n--b--",
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b',
        b'Content-Type: multipart/mixed; boundary=""\n\n--\n',
    ],
)
def test_odd_input_keeps_its_parts(raw: bytes) -> None:
    _same_parts_but_names(raw, with_fixed_boundaries(raw))
    assert _parts(without_returned_bodies(raw)) == _parts(raw)


def test_what_only_looks_like_a_returned_part_is_kept() -> None:
    # A single-part notice quoting a report's structure: it has no parts to cut.
    quoted = b"Subject: failure\n\n" + DSN.split(b"\n\n", 1)[1]
    assert without_returned_bodies(quoted) == quoted
    # Inside the returned body, a line that starts like the closing delimiter but is
    # longer is the sender's text: the cut runs to the real delimiter.
    lookalike = DSN.replace(b"Hello there.\n", b"Hello there.\n--Outer.1-x\n")
    cut = without_returned_bodies(lookalike)
    assert b"--Outer.1-x" not in cut and b"Hello there." not in cut
    assert _parts(cut)[:3] == _parts(lookalike)[:3]


def test_a_flood_of_delimiter_like_lines_is_parsed_as_it_came() -> None:
    flood = DSN.replace(b"Hello there.\n", b"Hello there.\n" + b"--Outer.1-x\n" * 3000)
    assert with_fixed_boundaries(flood) == flood
    assert without_returned_bodies(flood) == flood
