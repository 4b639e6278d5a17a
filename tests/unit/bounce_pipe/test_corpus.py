"""The bounce parser against the public bounce corpus, and on hostile input.

The corpus lives beside the repository (../shared/corpus/bounces) and is read
in place. Scores follow the corpus README, computed by txmail_testing/corpus_scores.py,
the same scoring bench/bounce_parser.py reports.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmail.bounce_pipe.parse import parse_message, parse_report
from txmail.outcomes.findings import BounceEvent
from txmail.outcomes.reasons import REASONS
from txmail_testing.corpus_scores import corpus_rows, score

CORPUS = Path(__file__).resolve().parents[3].parent / "shared/corpus/bounces"


def _corpus_present(fn):  # type: ignore[no-untyped-def]
    """The corpus must be there (../shared beside the checkout, as in CI): a missing corpus is a
    failure, never a silent skip that would hide a broken quality check."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert (CORPUS / "expected.jsonl").is_file(), f"bounce corpus not found at {CORPUS}"
        return fn(*args, **kwargs)

    return wrapper


needs_corpus = _corpus_present

KINDS = {"delivery", "bounce", "soft_bounce", "complaint", "auto_reply"}


@pytest.fixture(scope="module")
def corpus() -> Iterator[tuple[list[dict], dict[str, list[BounceEvent]]]]:
    rows = corpus_rows(CORPUS)
    results = {row["file"]: parse_message((CORPUS / row["file"]).read_bytes()) for row in rows}
    yield rows, results


@needs_corpus
def test_corpus_scores_reach_the_thresholds(
    corpus: tuple[list[dict], dict[str, list[BounceEvent]]],
) -> None:
    rows, results = corpus
    scores = score(rows, results)  # the scoring bench/bounce_parser.py reports
    detail = scores.summary()
    assert scores.f1 >= 0.97, detail
    assert scores.kind >= 0.95, detail
    assert scores.hard_soft >= 0.97, detail
    assert scores.reason >= 0.85, detail
    assert scores.not_bounce_events == 0, detail


@needs_corpus
def test_ordinary_mail_yields_no_event(
    corpus: tuple[list[dict], dict[str, list[BounceEvent]]],
) -> None:
    rows, results = corpus
    noisy = {
        r["file"]: results[r["file"]]
        for r in rows
        if r["category"] == "not_bounce" and results[r["file"]]
    }
    assert noisy == {}


@needs_corpus
def test_every_event_is_well_formed(
    corpus: tuple[list[dict], dict[str, list[BounceEvent]]],
) -> None:
    _, results = corpus
    for name, events in results.items():
        recipients = [e.recipient for e in events]
        assert len(recipients) == len(set(recipients)), name
        for event in events:
            assert event.kind in KINDS and event.reason in REASONS, (name, event)
            assert event.recipient == event.recipient.lower() and "@" in event.recipient, (
                name,
                event,
            )
            assert len(event.diagnostic) <= 1000, name
            assert event.status is None or event.status[0] in "245", (name, event)


# ---------------------------------------------------------------------------
# One table per detector family: real samples, what each must say.

FAMILIES = [
    # (file, detector, recipient, kind, reason)
    ("soe-lhost-postfix-13.eml", "rfc3464", "noraneko@example.jp", "bounce", "mailboxfull"),
    ("soe-lhost-postfix-09.eml", "rfc3464", "kijitora@example.ne.jp", "soft_bounce", "toomanyconn"),
    ("soe-lhost-sendmail-07.eml", "rfc3464", "kijitora@example.org", "bounce", "norelaying"),
    ("soe-lhost-office365-01.eml", "exchange", "kijitora@example.com", "bounce", "userunknown"),
    ("flufl-dsn_01.eml", "rfc3464", "userx@example.com", "bounce", "mailboxfull"),
    ("soe-arf-17.eml", "arf", "sabatora@example.net", "complaint", "feedback"),
    ("soe-arf-22.eml", "arf", "kijitora@example.com", "complaint", "feedback"),
    ("soe-rfc3834-02.eml", "rfc3834", "nekonyaan@example.org", "auto_reply", "vacation"),
    ("soe-lhost-exim-02.eml", "exim", "sabatora@example.jp", "bounce", "userunknown"),
    ("soe-lhost-exim-36.eml", "exim", "kijitora@example.edu", "bounce", "rejected"),
    ("soe-lhost-mailru-06.eml", "exim", "nyan@haineko.org", "bounce", "hostunknown"),
    ("flufl-simple_03.eml", "exim", "userx@example.za", "soft_bounce", "expired"),
    ("soe-lhost-qmail-13.eml", "qmail", "nekochan@cx.libsisimai.com", "bounce", "hostunknown"),
    (
        "soe-lhost-qmail-14.eml",
        "qmail",
        "pseudo-local-part-of-google-gmail@gmail.com",
        "bounce",
        "authfailure",
    ),
    ("flufl-yahoo_06.eml", "qmail", "usera@example.com", "bounce", "suspend"),
    ("soe-lhost-gmail-01.eml", "gmail", "userunknown@example.jp", "bounce", "userunknown"),
    ("soe-lhost-gmail-06.eml", "gmail", "kijitora@example.jp", "soft_bounce", "mailboxfull"),
    ("soe-lhost-googlegroups-07.eml", "gmail", "libsisimai@googlegroups.com", "bounce", "rejected"),
    (
        "soe-lhost-dragonfly-14.eml",
        "dragonfly",
        "mesgtoobig@libsisimai.net",
        "bounce",
        "mesgtoobig",
    ),
    ("soe-lhost-exchange2003-01.eml", "exchange", "kijitora@example.jp", "bounce", "userunknown"),
    (
        "soe-lhost-amazonses-09.eml",
        "amazonses",
        "bounce@simulator.amazonses.com",
        "bounce",
        "userunknown",
    ),
    (
        "soe-lhost-amazonses-12.eml",
        "amazonses",
        "success@simulator.amazonses.com",
        "delivery",
        "delivered",
    ),
    (
        "soe-lhost-kddi-01.eml",
        "japan",
        "kijitora@x0000000000000.dion.ne.jp",
        "bounce",
        "mailboxfull",
    ),
    (
        "soe-lhost-ezweb-03.eml",
        "japan",
        "this-local-part-does-not-exist-on-the-site@ezweb.ne.jp",
        "bounce",
        "suspend",
    ),
    ("soe-lhost-postfix-34.eml", "postfix", "kijitora@example.com", "bounce", "networkerror"),
    ("soe-lhost-v5sendmail-06.eml", "sendmail", "kijitora@example.edu", "bounce", "norelaying"),
    ("soe-lhost-v5sendmail-03.eml", "sendmail", "kijitora@example.org", "bounce", "userunknown"),
    ("soe-lhost-imailserver-01.eml", "simple", "kijitora@example.com", "bounce", "userunknown"),
    ("soe-lhost-opensmtpd-02.eml", "simple", "mailboxfull@example.jp", "bounce", "mailboxfull"),
]


@needs_corpus
@pytest.mark.parametrize(("name", "detector", "recipient", "kind", "reason"), FAMILIES)
def test_detector_family(name: str, detector: str, recipient: str, kind: str, reason: str) -> None:
    report = parse_report((CORPUS / name).read_bytes())
    assert report.detector == detector
    events = {e.recipient: e for e in report.events}
    assert recipient in events, sorted(events)
    assert (events[recipient].kind, events[recipient].reason) == (kind, reason)


CLASSIFIER = [
    # (status, command, diagnostic, reason): what providers print, read alone.
    (
        "5.1.1",
        "RCPT",
        "550 5.1.1 The email account that you tried to reach does not exist",
        "userunknown",
    ),
    (None, "RCPT", "550 Unknown user kijitora@example.jp", "userunknown"),
    (None, "DATA", "550 Unknown user kijitora@example.jp", "filtered"),
    ("5.2.2", None, "552 5.2.2 The recipient's inbox is out of storage space", "mailboxfull"),
    ("5.0.0", None, "550 Mailbox full", "mailboxfull"),
    ("5.7.1", None, "550 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org", "blocked"),
    (
        "5.7.26",
        None,
        "550 5.7.26 Unauthenticated email is not accepted due to DMARC policy",
        "authfailure",
    ),
    ("5.7.1", "MAIL", "550 5.7.1 Access denied", "rejected"),
    ("5.7.1", None, "554 5.7.1 Relay access denied", "norelaying"),
    ("5.3.4", None, "552 5.3.4 Message too big for system", "mesgtoobig"),
    ("4.4.1", None, "connect to mx.example.org[192.0.2.1]:25: Connection timed out", "expired"),
    ("5.4.6", None, "554 5.4.6 Hop count exceeded - possible mail loop", "networkerror"),
    ("2.1.5", None, "250 2.1.5 Ok", "delivered"),
    (None, None, "", "undefined"),
    (None, None, "something nobody recognises", "onhold"),
]


@pytest.mark.parametrize(("status", "command", "diagnostic", "reason"), CLASSIFIER)
def test_classifier(status: str | None, command: str | None, diagnostic: str, reason: str) -> None:
    from txmail.outcomes.findings import Finding
    from txmail.outcomes.reasons import classify

    found = Finding(
        recipient="a@example.net", diagnostic=diagnostic, status=status, command=command
    )
    assert classify(found) == reason


@needs_corpus
@pytest.mark.parametrize("twin", ["lhost-exim-01", "lhost-qmail-01", "rhost-google-01", "arf-01"])
def test_line_endings_do_not_change_the_result(twin: str) -> None:
    results = [
        [e.summary() for e in parse_message((CORPUS / f"soe-{prefix}{twin}.eml").read_bytes())]
        for prefix in ("", "crlf-", "cr-")
    ]
    assert results[0] and results[0] == results[1] == results[2]


@needs_corpus
def test_report_links_the_bounce_to_the_sent_message() -> None:
    report = parse_report((CORPUS / "soe-lhost-postfix-02.eml").read_bytes())
    assert report.postfix_queue_id == "7874F1FB8E"
    assert report.original_headers["from"] == "kijitora@example.jp"
    arf = parse_report((CORPUS / "soe-arf-17.eml").read_bytes())
    assert arf.original_message_id == "<EEEEEEEE-0000-0000-0000-EEEEEEEE2222@example.net>"
    exim = parse_report((CORPUS / "soe-lhost-exim-02.eml").read_bytes())
    assert exim.original_message_id == "<E1X58pB-0004bW-2s@marutamachi.example.org>"


def test_report_keeps_x_headers_and_envelope_id() -> None:
    raw = (
        b"From: MAILER-DAEMON@relay.example\nTo: bounces+abc@relay.example\n"
        b"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nsorry\n\n"
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; relay.example\n"
        b"Original-Envelope-Id: env-42\nX-Postfix-Queue-ID: 4jXCs06YbRz\n\n"
        b"Final-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: User unknown\n\n"
        b"--b\nContent-Type: text/rfc822-headers\n\n"
        b"Message-ID: <m1@app.example>\nX-Txmail-Id: 4jXCs06YbRz\nFrom: app@example.com\n\n--b--\n"
    )
    report = parse_report(raw)
    assert [(e.recipient, e.kind, e.status, e.reason) for e in report.events] == [
        ("gone@example.net", "bounce", "5.1.1", "userunknown")
    ]
    assert report.original_envelope_id == "env-42"
    assert report.postfix_queue_id == "4jXCs06YbRz"
    assert report.original_message_id == "<m1@app.example>"
    assert report.original_headers["x-txmail-id"] == "4jXCs06YbRz"


# ---------------------------------------------------------------------------
# Robustness: hostile or broken input never raises and never hangs.

BROKEN = [
    b"Subject: =?\xff\xa5?B?w6k=?=\nFrom: MAILER-DAEMON@x.example\n\nbody\n",
    b"Subject: =?utf-8?B?w6k?=\nFrom: =?utf-8?B?!!!?=\n\nbody\n",
    b"",
    b"\n\n\n",
    b"\x00\xff\xfe" * 50,
    b"From: x\n\n",
    b"Content-Type: multipart/report; boundary=\n\n--\n--\n",
    b"Content-Type: multipart/mixed\n\nno boundary at all\n",
    b"Content-Type: multipart/mixed; boundary=a\n\n--a\n"
    b"Content-Type: multipart/mixed; boundary=a\n\n--a\n--a--\n",
    b"Content-Type: text/plain; charset=x-no-such-charset\n"
    b"\nFinal-Recipient: rfc822; a@b.example\n",
    b"Content-Type: text/plain; charset=uft-8\nSubject: =?uft-8?B?/w==?=\n\n\xff\xfe",
    b"Subject: caf\xe9 \xff\nFrom: MAILER-DAEMON@x.example\n"
    b"To: y@z.example\n\n<a@b.example>:\nUser unknown\n",
    b"From: MAILER-DAEMON@x\rSubject: failure notice\r"
    b"\r<a@b.example>:\rno mailbox here by that name\r",
    b"Content-Type: message/delivery-status\n"
    b"Content-Transfer-Encoding: base64\n\n!!!not base64!!!\n",
    b"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n"
    b"\nContent-Type: message/rfc822\n\n",
    b"Subject: =?utf-8?q?broken?= =?x?y?z?=\nFrom: =?iso-2022-jp?B?GyRC?=\n\nbody\n",
]


ORDINARY = [
    b"From: Dana <dana@example.com>\nTo: eve@example.com\nSubject: Vacation photos\n\n"
    b"Here they are, also sent to frank@example.net.\n",
    b"From: CI <no-reply@ci.example.com>\nTo: dev@example.com\nSubject: Build failed on main\n\n"
    b"The build failed with a fatal error. Ask alice@example.org, she was rejected too.\n",
    b"From: Bob <bob@example.com>\nTo: alice@example.com\nSubject: Re: the sofa\n\n"
    b"Could not deliver to carol@example.net: user unknown at the depot.\n",
    b"From: shop@example.com\nTo: alice@example.com\nSubject: Your order\n"
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n"
    b"Final-Recipient: none\n--x--\n",
]


@pytest.mark.parametrize("raw", ORDINARY)
def test_ordinary_mail_that_mentions_failures_yields_no_event(raw: bytes) -> None:
    assert parse_message(raw) == []


@pytest.mark.parametrize("raw", BROKEN)
def test_broken_input_gives_a_report(raw: bytes) -> None:
    report = parse_report(raw)
    assert isinstance(report.events, list)


def test_deeply_nested_message_rfc822_is_bounded() -> None:
    raw = b"From: MAILER-DAEMON@x.example\n" + b"Content-Type: message/rfc822\n\n" * 3000 + b"x\n"
    assert parse_report(raw).events == []


def test_deeply_nested_multipart_is_bounded() -> None:
    depth = 3000
    head = b"".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n".encode()
        for i in range(depth)
    )
    raw = b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b0\n\n" + head
    assert parse_report(raw).events == []


def test_huge_input_is_cut() -> None:
    raw = (
        b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n<a@b.example>:\nUser unknown\n"
        + b"x" * (6 * 1024 * 1024)
    )
    assert [e.recipient for e in parse_message(raw)] == ["a@b.example"]


@needs_corpus
def test_child_reusing_its_parents_boundary() -> None:
    assert parse_message((CORPUS / "pyemail-msg_39.eml").read_bytes()) == []


@needs_corpus
def test_corpus_files_damaged_at_random_still_parse() -> None:
    chooser = random.Random(20240429)
    names = sorted(p.name for p in CORPUS.glob("*.eml"))
    for name in chooser.sample(names, 40):
        data = bytearray((CORPUS / name).read_bytes())
        for _ in range(20):
            data[chooser.randrange(len(data))] = chooser.randrange(256)
        parse_report(bytes(data[: chooser.randrange(1, len(data) + 1)]))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(raw: bytes) -> None:
    parse_report(raw)


_LINES = st.sampled_from(
    [
        "From: MAILER-DAEMON@mx.example",
        "Subject: Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=zz",
        "Content-Type: message/delivery-status",
        "Content-Type: message/rfc822",
        "Content-Type: text/plain; charset=iso-2022-jp",
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: quoted-printable",
        "--zz",
        "--zz--",
        "",
        "Final-Recipient: rfc822; a@b.example",
        "Status: 5.1.1",
        "Action: failed",
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown",
        "<c@d.example>:",
        "  e@f.example",
        ">>> RCPT To:<a@b.example>",
        "<<< 550 no such user",
        "=?utf-8?b?w6k=?=",
        "\xe9\x00\udcff",
    ]
)


@FUZZ
@given(st.lists(_LINES, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_structured_junk_never_raises(lines: list[str], newline: str) -> None:
    raw = newline.join(lines).encode("utf-8", "surrogateescape")
    for event in parse_message(raw):
        assert event.kind in KINDS


# ---------------------------------------------------------------------------
# The command line


@needs_corpus
def test_cli_prints_one_line_per_file_in_order() -> None:
    from txmail.cli.bounces import bounces

    names = ["soe-lhost-exim-02.eml", "pyemail-msg_01.eml", "soe-arf-01.eml"]
    paths = [str(CORPUS / n) for n in names]
    result = CliRunner().invoke(bounces, ["parse", *paths])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["file"] for line in lines] == paths
    assert [len(line["events"]) for line in lines] == [2, 0, 1]
    assert set(lines[0]["events"][0]) == {"kind", "recipient", "status", "reason", "diagnostic"}


def test_cli_unreadable_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from txmail.cli.bounces import bounces

    missing = tmp_path / "nope.eml"
    good = tmp_path / "ok.eml"
    good.write_bytes(b"From: someone@example.com\nSubject: hello\n\nhi\n")
    result = CliRunner().invoke(bounces, ["parse", str(missing), str(good)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and "cannot read" in errors[0] and "Traceback" not in result.output
    assert json.loads(result.output.splitlines()[-1]) == {"file": str(good), "events": []}


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from txmail.bounce_pipe.parse import main

    message = tmp_path / "b.eml"
    message.write_bytes(
        b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n<a@b.example>:\nUser unknown\n"
    )
    assert main([str(message)]) == 0
    assert json.loads(capsys.readouterr().out)["events"][0]["recipient"] == "a@b.example"
    assert main([os.fspath(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
