"""Reasons read from structure first, how well they hold per MTA family, and their confidence.

The leave-one-family-out run is bench/bounce_parser.py --cv (read in place from
../shared/corpus/bounces); its bounds are the figures measured when it was written, so a
change that makes the parser generalise worse fails here. The other tests use messages
written from the MTAs' documented formats.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from txmail.bounce_pipe.parse import parse_report
from txmail.events import SuppressionPolicy, make_event
from txmail.outcomes.findings import Finding
from txmail.outcomes.reasons import classify_with_source, table_reason, tables_switched_off

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT.parent / "shared/corpus/bounces"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "bench_bounce_parser", ROOT / "bench/bounce_parser.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_leave_one_family_out_table_holds_its_measured_bounds() -> None:
    assert (CORPUS / "expected.jsonl").is_file(), f"bounce corpus not found at {CORPUS}"
    result = _bench().cross_validate(CORPUS)
    print()
    print(result.table())
    plain, lofo = result.plain, result.lofo
    # Figures before this work: F1 0.988, kind 0.988, hard/soft 0.988, reason 0.937 (LOFO 0.889).
    assert plain.f1 >= 0.9885 and plain.kind >= 0.9884 and plain.hard_soft >= 0.9879
    # The reason target is 0.93 overall; LOFO was 0.889 before reasons were read from
    # structure first and is 0.92 with it.
    assert plain.reason >= 0.93
    assert lofo.reason >= 0.92
    assert plain.not_bounce_events == 0 and lofo.not_bounce_events == 0
    # --misses: one row per recipient whose LOFO reason differs from Sisimai's.
    assert len(lofo.misses) == lofo.compared - lofo.reason_ok
    assert all(expected != given for _, _, _, expected, given, _ in lofo.misses)
    assert {row.family for row in result.families} >= {"lhost-postfix", "lhost-exim", "lhost-fml"}


def _classify(diagnostic: str, status: str | None = None, command: str | None = None):  # type: ignore[no-untyped-def]
    return classify_with_source(
        Finding(recipient="a@example.net", diagnostic=diagnostic, status=status, command=command)
    )


@pytest.mark.parametrize(
    ("status", "command", "diagnostic", "expected"),
    [
        # A specific status code names the reason by itself.
        ("5.1.1", "RCPT", "550 5.1.1 nope", ("userunknown", "status")),
        ("5.2.2", None, "552 5.2.2 over", ("mailboxfull", "status")),
        ("5.1.6", None, "550 5.1.6 gone", ("hasmoved", "status")),
        # X.7.1 is broad: spam wording makes it spamdetected, not securityerror ...
        (
            "5.7.1",
            "DATA",
            "554 5.7.1 Message rejected: this looks like SPAM to us",
            ("spamdetected", "phrase"),
        ),
        (
            "5.7.1",
            "DATA",
            "550 5.7.1 Rejected by SpamAssassin, score 12.1",
            ("spamdetected", "phrase"),
        ),
        # ... but an IP listed for spam is a block of the sender, not of the message.
        (
            "5.7.1",
            "RCPT",
            "554 5.7.1 Service unavailable; client host blocked using bl.example",
            ("blocked", "phrase"),
        ),
        # With nothing but the class, 5.7.x stays a guess.
        ("5.7.1", None, "550 5.7.1 go away", ("securityerror", "guess")),
        # The rate wording wins over the stage (qmail: "sender was rejected" = refused at MAIL).
        (None, "MAIL", "421 Too many connections from your host", ("toomanyconn", "phrase")),
        # qmail-remote's own words: the connection failed, the queue lifetime only followed.
        (
            "4.4.1",
            None,
            "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1) I'm not going to "
            "try again; this message has been in the queue too long.",
            ("networkerror", "phrase"),
        ),
        # A diagnostic that only repeats the address says nothing.
        (None, None, "undeliverable to a@example.net", ("undefined", "guess")),
        (None, None, "something nobody recognises", ("onhold", "guess")),
        # The stage read with the wording: unknown user at RCPT is the address, after DATA a filter.
        (None, "RCPT", "550 Unknown user", ("userunknown", "phrase")),
        (None, "DATA", "550 Unknown user", ("filtered", "phrase")),
        # Stages as Exim (pipelining), Postfix and qmail print them.
        (
            None,
            None,
            "SMTP error from remote mail server after pipelined RCPT TO:<a@example.net>: "
            "550 Unknown user",
            ("userunknown", "phrase"),
        ),
        (
            None,
            None,
            "lost connection with mx.example.net while sending RCPT TO",
            ("networkerror", "phrase"),
        ),
        (None, None, "Connected to 192.0.2.1 but my name was rejected.", ("blocked", "guess")),
        # A local program failed: its exit code's gloss is no recipient refusal.
        (
            None,
            None,
            "Child process of address_pipe transport returned 67 (could mean user unknown) "
            "from command: /usr/bin/procmail",
            ("mailererror", "phrase"),
        ),
        # A filter that names spam found spam.
        (None, "DATA", "550 Message filtered: spam content", ("spamdetected", "phrase")),
    ],
)
def test_structure_first(
    status: str | None, command: str | None, diagnostic: str, expected: tuple[str, str]
) -> None:
    assert _classify(diagnostic, status, command) == expected


def test_a_local_program_is_read_by_its_wording_before_the_code() -> None:
    found = Finding(
        recipient="a@example.net",
        diagnostic="Command died with status 67: /usr/bin/procmail",
        status="5.1.1",
        diagnostic_type="X-Postfix",
    )
    assert classify_with_source(found) == ("mailererror", "phrase")
    found.diagnostic_type = "smtp"
    found.diagnostic = "550 5.1.1 no"
    assert classify_with_source(found) == ("userunknown", "status")


def test_a_switched_off_table_says_nothing() -> None:
    from txmail.bounce_pipe.detectors import qmail

    text = "Sorry, no mailbox here by that name. (#5.1.1)"
    assert table_reason(qmail._QMAIL_REASONS, text) == "userunknown"
    with tables_switched_off(["qmail"]):
        assert table_reason(qmail._QMAIL_REASONS, text) is None
    assert table_reason(qmail._QMAIL_REASONS, text) == "userunknown"


JAMES = (
    b"From: postmaster@james.example.org\nTo: sender@example.com\nSubject: [BOUNCE]\n"
    b"Message-ID: <1234.5678.JavaMail.root@james.example.org>\nMIME-Version: 1.0\n"
    b"Content-Type: text/plain\n\n"
    b"Hi. This is the James mail server at james.example.org.\n"
    b"I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
    b"Error message below:\n550 - Requested action not taken: no such user here\n\n"
    b"Message details:\n  Subject: hello\n  Sent date: Mon Dec 07 10:00:00 UTC 2026\n"
    b"  MAIL FROM: sender@example.com\n  RCPT TO: gone@remote.example\n"
    b"  From: sender@example.com\n  To: gone@remote.example\n  Size (in bytes): 512\n"
)


def test_apache_james_report() -> None:
    report = parse_report(JAMES)
    assert report.detector == "lists" and report.events[0].detector == "james"
    assert [(e.recipient, e.kind, e.reason) for e in report.events] == [
        ("gone@remote.example", "bounce", "userunknown")
    ]
    assert report.events[0].reason_source == "phrase"


def test_fml_refusal_names_the_list() -> None:
    report = parse_report((CORPUS / "soe-lhost-fml-02.eml").read_bytes())
    assert report.detector == "lists" and report.events[0].detector == "fml"
    assert [(e.recipient, e.reason) for e in report.events] == [
        ("neko-nyaan@example.org", "rejected")
    ]


def test_fml_list_mail_that_is_no_refusal_yields_nothing() -> None:
    raw = (
        b"From: list-admin@example.org\nTo: a@example.com\nSubject: welcome\n"
        b"X-MLServer: fml [fml 4.0.3 release]\n\nWelcome to <list@example.org>.\n"
    )
    assert parse_report(raw).events == []


SMS = (
    b"From: MAILER-DAEMON@sms.example.net\nTo: sender@example.com\n"
    b"Subject: Undeliverable message\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
    b"Your message could not be delivered to 15551234567: the number is not a valid mobile "
    b"subscriber.\n\n--b\nContent-Type: message/rfc822\n\n"
    b"From: sender@example.com\nTo: 5551234567@sms.example.net\nSubject: code\n\nyour code\n--b--\n"
)


def test_sms_gateway_names_a_number() -> None:
    report = parse_report(SMS)
    assert [e.recipient for e in report.events] == ["5551234567@sms.example.net"]
    assert report.events[0].kind == "bounce"


def test_a_number_in_ordinary_mail_is_no_bounce() -> None:
    raw = SMS.replace(b"MAILER-DAEMON@sms.example.net", b"friend@example.net").replace(
        b"Undeliverable message", b"my new number"
    )
    assert parse_report(raw).events == []


@pytest.mark.parametrize(
    ("source", "guesses", "suppressed"),
    [
        ("status", False, True),
        ("phrase", False, True),
        ("guess", False, False),
        ("guess", True, True),
        (None, False, True),  # recorded before sources were kept: as before
    ],
)
def test_suppression_acts_on_guesses_only_when_allowed(
    source: str | None, guesses: bool, suppressed: bool
) -> None:
    details = {"reason": "userunknown"}
    if source:
        details["reason_source"] = source
    event = make_event("bounce", "acme", "Q1", "gone@example.net", details)
    assert SuppressionPolicy(guesses=guesses).suppresses(event) is suppressed
