"""What the recorder does when a parser worker fails, lies or hangs (issue 15, finding 8).

A returned mail the parser fails on (it raises, runs past its time, is killed by a limit,
answers garbage) would fail the same way on every retry: answered 75, Postfix would bring it
back until maximal_queue_lifetime and then discard it, silently. It is kept unparsed instead,
and answered 0; trouble that may pass (a DNS timeout, Redis down) is still 75. A slot whose
worker could not be replaced, or that stops reading, never breaks for good. A worker that
parsed other mail is not believed about a complaint.

The workers here are a scripted stand-in (FAKE) speaking worker.py's protocol, so each way of
failing can be had on demand; the real worker's side is in test_worker.py.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from txmail.accounts.records import Accounts
from txmail.bounce_pipe import server, unparsed, worker
from txmail.bounce_pipe.parse import BounceReport, parse_report
from txmail.bounce_pipe.report import handle, process
from txmail.bounce_pipe.server import NotTaken, ParserFailed, ParserPool, Worker
from txmail.config import Settings
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages
from txmail.tokens.bounce_address import bounce_address
from txmail_testing.harness import bounce_settings

FAKE = r"""
import base64, json, os, resource, sys, time
from txmail.bounce_pipe import worker as w
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
w.read_frame(stdin)
count = 0
while True:
    raw = w.read_frame(stdin)
    if raw is None:
        sys.exit(0)
    count += 1
    if raw == b"raise":
        answer = {"error": "KeyError: 'boundary'", "temporary": False}
    elif raw == b"dns":
        answer = {"error": "TemporaryFailure: DNS timed out", "temporary": True}
    elif raw == b"burn":  # as the real worker's per-mail soft RLIMIT_CPU ends it
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        while True:
            pass
    elif raw == b"hang":
        time.sleep(60)
    elif raw == b"exit":
        os._exit(3)
    elif raw == b"garbage":
        stdout.write(b"garbage\n")
        stdout.flush()
        continue
    else:
        report = {"postfix_queue_id": str(os.getpid()), "headers_only": ""}
        if raw.startswith(b"Subject: forge"):  # headers of its own in the RET=HDRS cut
            report["headers_only"] = base64.b64encode(b"Bcc: x@victim.example\r\n" + raw).decode()
        elif raw.startswith(b"Subject: cut"):
            head = raw[:raw.index(b"\r\n\r\n") + 4]
            report["headers_only"] = base64.b64encode(head + b"cut").decode()
        if raw.startswith(b"complaint"):
            report["events"] = [{"kind": "complaint", "recipient": "a@x.example",
                                 "status": None, "reason": "abuse", "diagnostic": ""}]
            if count > 1:  # exploited by an earlier mail: it lies from now on
                report["dkim_domains"] = ["arf.mail.yahoo.com"]
        answer = {"report": report}
    w.write_frame(stdout, json.dumps(answer).encode())
"""


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[ParserPool]:
    monkeypatch.setattr(worker, "command", lambda _python, _pipe: [sys.executable, "-c", FAKE])
    settings = Settings(state_dir="/tmp")
    running = ParserPool(
        dataclasses.replace(
            settings, bounce_pipe=dataclasses.replace(settings.bounce_pipe, parser_workers=1)
        ),
        None,
    )
    running.timeout = 5.0
    try:
        yield running
    finally:
        running.close()


def answered_by(report: BounceReport) -> int:
    return int(report.postfix_queue_id or 0)


@pytest.mark.parametrize(
    "mail,why",
    [
        (b"raise", "the parser raised on this mail: the parser failed: KeyError"),
        (b"burn", "was killed by SIGXCPU while it parsed this mail"),
        (b"garbage", "answered garbage"),
    ],
)
def test_a_mail_the_parser_fails_on_is_unreadable_and_the_next_is_parsed(
    pool: ParserPool, mail: bytes, why: str
) -> None:
    with pytest.raises(unparsed.Unreadable, match=why):
        pool.parse(mail)
    assert answered_by(pool.parse(b"next")) in pool.pids()


def test_a_mail_past_its_timeout_is_unreadable(pool: ParserPool) -> None:
    pool.timeout = 0.5
    before = pool.pids()
    with pytest.raises(unparsed.Unreadable, match="longer than its timeout"):
        pool.parse(b"hang")
    assert pool.pids() != before  # killed and replaced
    assert answered_by(pool.parse(b"next")) == pool.pids()[0]


@pytest.mark.parametrize(
    "mail,why",
    [
        (b"dns", "trouble that may pass: the parser failed: TemporaryFailure: DNS timed out"),
        (b"exit", "exited with status 3"),
    ],
)
def test_trouble_that_may_pass_is_a_temporary_failure(
    pool: ParserPool, mail: bytes, why: str
) -> None:
    with pytest.raises(ParserFailed, match=why):
        pool.parse(mail)
    assert answered_by(pool.parse(b"next")) in pool.pids()


# -- the recorder's answer (handle): kept and 0, or 75 ------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return bounce_settings(tmp_path, SECRET)  # type: ignore[no-any-return]


RECIPIENT = bounce_address("4jXCs06YbRzJJ2Y", "acme.example", SECRET, "mta.acme.example")


@pytest.mark.parametrize(
    "mail,why",
    [
        (b"raise", "the parser raised on this mail"),
        (b"burn", "killed by SIGXCPU"),
        (b"hang", "longer than its timeout"),
        (b"garbage", "answered garbage"),
    ],
)
def test_a_mail_the_parser_fails_on_is_kept_and_answered_0(
    pool: ParserPool, settings: Settings, client: redis.Redis, mail: bytes, why: str
) -> None:
    pool.timeout = 1.0 if mail == b"hang" else 5.0  # burning takes up to 2 s of CPU
    code, said = handle(settings, client, mail, "", RECIPIENT, pool.parse)
    assert (code, said.split(":")[0]) == (0, "kept unparsed"), said
    (kept,) = unparsed.newest(client, Keys(settings.redis.prefix))
    assert kept.raw == mail and why in kept.reason
    assert (kept.recipient, kept.queue_id) == (RECIPIENT, "4jXCs06YbRzJJ2Y")


@pytest.mark.parametrize("mail", [b"dns", b"exit"])
def test_trouble_that_may_pass_is_answered_75_and_nothing_kept(
    pool: ParserPool, settings: Settings, client: redis.Redis, mail: bytes
) -> None:
    code, _ = handle(settings, client, mail, "", RECIPIENT, pool.parse)
    assert code == 75
    assert unparsed.newest(client, Keys(settings.redis.prefix)) == []


def test_a_mail_the_parser_fails_on_waits_while_redis_is_down(
    pool: ParserPool, settings: Settings
) -> None:
    down = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_timeout=1)
    code, said = handle(settings, down, b"raise", "", RECIPIENT, pool.parse)
    assert code == 75, said  # it cannot be kept: Postfix keeps it


# -- a slot never breaks for good; a write is bounded -------------------------------------


def test_a_slot_whose_replacement_could_not_start_is_retried_cleanly(
    pool: ParserPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pool._start
    failures = [OSError(11, "Resource temporarily unavailable")] * 3

    def start() -> Worker:
        if failures:
            raise failures.pop()
        return real()

    monkeypatch.setattr(pool, "_start", start)
    pool.timeout = 0.5
    with pytest.raises(unparsed.Unreadable):
        pool.parse(b"hang")  # its worker killed; the first replacement fails to start
    assert pool.pids() == []
    with pytest.raises(ParserFailed, match="no parser worker could be started"):
        pool.parse(b"next")  # a temporary failure (75), not a closed worker
    with pytest.raises(ParserFailed, match="no parser worker could be started"):
        pool.parse(b"next")
    pool.timeout = 5.0
    assert answered_by(pool.parse(b"next")) == pool.pids()[0]  # the slot works again


def test_a_worker_that_stops_reading_cannot_hold_a_mail_forever() -> None:
    stuck = Worker([sys.executable, "-c", "import time; time.sleep(60)"], b"{}", None)
    raised: list[BaseException] = []

    def parse() -> None:
        try:
            stuck.parse(b"x" * (4 << 20), 1.0)  # far more than a pipe holds
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=parse, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(15)
    stuck.close(kill=True)  # ends a write that still blocks (before the fix)
    thread.join(5)
    assert time.monotonic() - started < 10
    assert len(raised) == 1 and isinstance(raised[0], NotTaken), raised
    assert not stuck.usable


def test_a_mail_no_worker_takes_is_a_temporary_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        worker,
        "command",
        lambda _python, _pipe: [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    settings = Settings(state_dir="/tmp")
    stuck = ParserPool(
        dataclasses.replace(
            settings, bounce_pipe=dataclasses.replace(settings.bounce_pipe, parser_workers=1)
        ),
        None,
    )
    stuck.timeout = 0.5
    try:
        with pytest.raises(ParserFailed, match="do not take the mail"):
            stuck.parse(b"x" * (4 << 20))
    finally:
        for each in list(stuck.workers):
            each.close(kill=True)


# -- complaints: believed only from a worker that parsed nothing before -------------------


def test_a_complaint_is_believed_only_from_a_worker_that_parsed_nothing_else(
    pool: ParserPool,
) -> None:
    first = answered_by(pool.parse(b"a bounce"))  # the worker has parsed a mail now
    report = pool.parse(b"complaint from anybody")
    # the worker that had parsed a mail before claimed a feedback loop's signature; a fresh
    # one parsed the mail again and did not
    assert report.dkim_domains == () and report.events[0].kind == "complaint"
    judge = answered_by(report)
    assert judge != first
    # both retired: neither parses another mail
    after = answered_by(pool.parse(b"a bounce"))
    assert after not in (first, judge)


def test_a_fresh_worker_that_reports_a_complaint_is_retired_after_it(pool: ParserPool) -> None:
    judge = answered_by(pool.parse(b"complaint"))
    assert pool.pids() != [judge]
    assert answered_by(pool.parse(b"a bounce")) != judge


def test_other_reports_keep_their_worker(pool: ParserPool) -> None:
    first = answered_by(pool.parse(b"a bounce"))
    assert answered_by(pool.parse(b"another")) == first


# -- RET=HDRS: the recorder forwards the worker's cut -------------------------------------


def returned(to: str, rcpt: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.dest.example\r\nTo: {to}\r\nSubject: failure\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.dest.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: User unknown\r\n\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: app@acme.example\r\nTo: {rcpt}\r\nSubject: secret\r\n\r\nthe body\r\n"
        "--b--\r\n"
    ).encode()


def test_the_recorder_forwards_the_workers_cut_and_never_cuts_itself(
    settings: Settings, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from txmail.bounce_pipe import forward

    keys = Keys(settings.redis.prefix)
    name = f"acc{uuid.uuid4().hex[:6]}"
    Accounts(client, keys).add(name, [f"{name}.example"], "pw-123456789")
    rcpt = "gone@dest.example"
    Messages(client, keys, 86400).record(
        MessageRecord(
            queue_id="4jXCs06YbRzJJ2Y",
            account=name,
            envelope_sender="app@acme.example",
            recipients=[rcpt],
            envelope_params=["RET=HDRS"],
        )
    )
    raw = returned(RECIPIENT, rcpt)
    sent: list[bytes] = []

    def forwarder(body: bytes, _to: str, _queue_id: str) -> None:
        sent.append(body)

    in_process = forward.headers_only(raw)
    assert b"the body" not in in_process
    by_worker = (forward.header_block(raw) or b"") + b"CUT BY THE WORKER"
    worker_report = dataclasses.replace(parse_report(raw), headers_only=by_worker)

    def never(_raw: bytes) -> bytes:
        raise AssertionError("the recorder took the returned mail apart")

    monkeypatch.setattr(forward, "headers_only", never)
    process(settings, client, raw, "", RECIPIENT, forwarder=forwarder, report=worker_report)
    process(
        settings,
        client,
        raw,
        "",
        RECIPIENT,
        forwarder=forwarder,
        report=dataclasses.replace(worker_report, headers_only=b""),
    )  # the mail itself
    # a cut that cannot be the mail's (headers of its own; longer than the mail) is ignored
    for forged in (b"Bcc: x@victim.example\r\n" + by_worker, by_worker + raw):
        process(
            settings,
            client,
            raw,
            "",
            RECIPIENT,
            forwarder=forwarder,
            report=dataclasses.replace(worker_report, headers_only=forged),
        )
    monkeypatch.undo()
    process(settings, client, raw, "", RECIPIENT, forwarder=forwarder)  # parsed in-process
    assert sent == [by_worker, raw, raw, raw, in_process]
    assert not server.judges_complaints(worker_report)


def test_a_cut_that_cannot_be_the_mails_is_ignored_and_its_worker_killed(pool: ParserPool) -> None:
    """A worker that puts headers of its own into the RET=HDRS cut (which the reinjection
    listener would relay without a milter) is not believed: the mail goes as it came."""
    honest = pool.parse(b"Subject: cut\r\n\r\na long returned message body")
    assert honest.headers_only == b"Subject: cut\r\n\r\ncut"
    liar = answered_by(pool.parse(b"a bounce"))
    report = pool.parse(b"Subject: forge\r\n\r\nbody")
    assert report.headers_only == b""  # the mail itself
    assert liar not in pool.pids()  # killed and replaced
    assert answered_by(pool.parse(b"next")) == pool.pids()[0]


# -- a worker's answer header is bounded ---------------------------------------------------

ANSWERS = r"""
import sys
from txmail.bounce_pipe import worker as w
w.read_frame(sys.stdin.buffer)
w.read_frame(sys.stdin.buffer)
out = sys.stdout.buffer
if sys.argv[1] == "digits":  # more digits than int() takes
    out.write(b"9" * 5000 + b"\n")
    out.flush()
else:  # a header that never ends
    while True:
        out.write(b"7" * 65536)
        out.flush()
"""


@pytest.mark.parametrize("kind", ["digits", "endless"])
def test_an_answer_header_past_20_bytes_is_garbage(kind: str) -> None:
    """Without a bound, root read a header that never ends until the timeout (its memory
    growing with it), and int() raised ValueError on one of 5,000 digits (75, a traceback)."""
    liar = Worker([sys.executable, "-c", ANSWERS, kind], b"{}", None)
    try:
        with pytest.raises(unparsed.Unreadable, match="answered garbage"):
            liar.parse(b"mail", 10.0)
        assert len(liar.buffer) <= 2 << 20
        assert not liar.usable
    finally:
        liar.close(kill=True)


# -- a mail the parser fails on is forwarded as it came, when the token and NOTIFY say so ----


def sent_message(
    settings: Settings,
    client: redis.Redis,
    sender: str = "app@acme.example",
    notify: str | None = None,
    ret: str | None = None,
    forward_auto_replies: bool = True,
) -> None:
    keys = Keys(settings.redis.prefix)
    name = f"acc{uuid.uuid4().hex[:6]}"
    Accounts(client, keys).add(
        name,
        [f"{name}.example"],
        "pw-123456789",
        settings={"forward_auto_replies": forward_auto_replies},
    )
    rcpt = "gone@dest.example"
    Messages(client, keys, 86400).record(
        MessageRecord(
            queue_id="4jXCs06YbRzJJ2Y",
            account=name,
            envelope_sender=sender,
            recipients=[rcpt],
            recipient_params={rcpt: [f"NOTIFY={notify}"]} if notify else {},
            envelope_params=[f"RET={ret}"] if ret else [],
        )
    )


@pytest.mark.parametrize("ret", [None, "FULL", "HDRS"])
def test_an_unreadable_mail_with_a_valid_token_is_forwarded_as_it_came(
    pool: ParserPool,
    settings: Settings,
    client: redis.Redis,
    ret: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="txmail.bounce_pipe")
    sent_message(settings, client, ret=ret)
    sent: list[tuple[bytes, str, str]] = []
    mail = b"raise"  # the parser raises on it
    code, said = handle(
        settings, client, mail, "", RECIPIENT, pool.parse, forwarder=lambda *args: sent.append(args)
    )
    assert code == 0, said
    assert sent == [(mail, "app@acme.example", "4jXCs06YbRzJJ2Y")]  # RET=HDRS: whole, too
    (kept,) = unparsed.newest(client, Keys(settings.redis.prefix))
    assert kept.raw == mail and kept.queue_id == "4jXCs06YbRzJJ2Y"
    forwarded = [r.getMessage() for r in caplog.records if "forwarded to" in r.getMessage()]
    assert len(forwarded) == 1 and forwarded[0].startswith("4jXCs06YbRzJJ2Y: ")
    assert ("cannot be cut without parsing" in forwarded[0]) == (ret == "HDRS")


@pytest.mark.parametrize(
    "case",
    ["NOTIFY=NEVER, override off", "MAIL FROM:<>", "forged token", "no token", "no record"],
)
def test_an_unreadable_mail_is_not_forwarded_unless_token_and_notify_say_so(
    pool: ParserPool, settings: Settings, client: redis.Redis, case: str
) -> None:
    recipient = RECIPIENT
    if case != "no record":
        sent_message(
            settings,
            client,
            sender="" if case == "MAIL FROM:<>" else "app@acme.example",
            notify="NEVER" if case.startswith("NOTIFY=NEVER") else None,
            forward_auto_replies=not case.endswith("override off"),
        )
    if case == "forged token":
        recipient = bounce_address("4jXCs06YbRzJJ2Y", "acme.example", b"x" * 32, "mta.acme.example")
    elif case == "no token":
        recipient = "bounces@mta.acme.example"
    sent: list[tuple[bytes, str, str]] = []
    code, said = handle(
        settings,
        client,
        b"raise",
        "",
        recipient,
        pool.parse,
        forwarder=lambda *args: sent.append(args),
    )
    assert (code, said.split(":")[0], sent) == (0, "kept unparsed", [])
    assert len(unparsed.newest(client, Keys(settings.redis.prefix))) == 1


def test_an_unreadable_mail_goes_to_the_envelope_address_under_never(
    pool: ParserPool, settings: Settings, client: redis.Redis
) -> None:
    # SMTPeter: NOTIFY=NEVER keeps DSNs back, not returned mail txmail cannot classify
    sent_message(settings, client, notify="NEVER")
    sent: list[tuple[bytes, str, str]] = []
    code, said = handle(
        settings, client, b"raise", "", RECIPIENT, pool.parse, forwarder=lambda *a: sent.append(a)
    )
    assert code == 0 and said.startswith("kept unparsed and forwarded to <app@acme.example>")
    assert sent == [(b"raise", "app@acme.example", "4jXCs06YbRzJJ2Y")]


def test_an_unreadable_mail_postfix_will_not_take_back_waits(
    pool: ParserPool, settings: Settings, client: redis.Redis
) -> None:
    from txmail.bounce_pipe.forward import ForwardFailed

    sent_message(settings, client)

    def refused(_raw: bytes, to: str, queue_id: str) -> None:
        raise ForwardFailed(f"{queue_id}: forwarding the bounce to <{to}> failed: 451")

    code, said = handle(settings, client, b"raise", "", RECIPIENT, pool.parse, forwarder=refused)
    assert code == 75 and "ForwardFailed" in said
