"""The parser workers of `txmail bounces serve`: the report crosses the process boundary
whole (fields added later included), each worker is bounded (CPU, address space, no child
process, a wall-clock timeout after which it is killed and replaced), and a parser error costs
one mail, not the worker."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from txmail.bounce_pipe import forward, unparsed, worker
from txmail.bounce_pipe.parse import BounceReport, parse_report
from txmail.bounce_pipe.server import ParserPool
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.outcomes.findings import BounceEvent

CORPUS = Path(__file__).resolve().parents[4] / "shared/corpus/bounces"


@dataclass
class Later:
    """A report as somebody may extend it: nested dataclasses, tuples, dicts, optionals."""

    events: list[BounceEvent] = field(default_factory=list)
    domains: tuple[str, ...] = ()
    first: BounceEvent | None = None
    by_name: dict[str, BounceEvent] = field(default_factory=dict)
    count: int = 0


def test_a_report_round_trips_whatever_its_fields() -> None:
    event = BounceEvent(
        "bounce",
        "a@x.example",
        "5.1.1",
        "userunknown",
        "550 5.1.1 no",
        remote_mta="mx.x.example",
        detector="rfc3464",
    )
    cut = bytes(range(256)) + b"\r\nSubject: caf\xe9\r\n"  # every byte, 8-bit ones included
    report = BounceReport(
        events=[event],
        postfix_queue_id="4jXCs06YbRzJJ2Y",
        original_headers={"subject": "hi"},
        dkim_domains=("isp.example",),
        headers_only=cut,
    )
    payload = json.dumps({"report": dataclasses.asdict(report)}, default=worker._json).encode()
    assert worker.read_answer(payload) == (report, False)
    assert len(payload) < 2 * len(cut) + 1000  # base64, not a list of numbers or \u escapes
    same = dataclasses.replace(report, headers_only=b"")
    assert worker.read_answer(
        json.dumps({"report": dataclasses.asdict(same)}, default=worker._json).encode()
    ) == (same, False)
    later = Later([event], ("a.example", "b.example"), event, {"x": event}, 3)
    assert worker.from_fields(Later, json.loads(json.dumps(dataclasses.asdict(later)))) == later
    # a field the sender has and the receiver lacks is ignored; one it lacks keeps its default
    assert worker.from_fields(Later, {"count": 2, "gone": 1}) == Later(count=2)


def test_error_answers_say_whether_the_trouble_may_pass() -> None:
    with pytest.raises(worker.ErrorAnswer, match="the parser failed: KeyError") as caught:
        worker.read_answer(b'{"error": "KeyError: x", "temporary": false}')
    assert not caught.value.temporary and not caught.value.retiring
    with pytest.raises(worker.ErrorAnswer) as caught:
        worker.read_answer(
            b'{"error": "TemporaryFailure: DNS", "temporary": true, "retiring": true}'
        )
    assert caught.value.temporary and caught.value.retiring
    for garbage in (
        b"nope",
        b"[1]",
        b'{"x": 1}',
        b'{"report": {"events": [{"kind": 1}]}}',
        b'{"report": {"headers_only": "not base64!"}}',
    ):
        with pytest.raises(worker.FrameError):
            worker.read_answer(garbage)


def test_frames() -> None:
    stream = io.BytesIO()
    worker.write_frame(stream, b"abc")
    worker.write_frame(stream, b"")
    stream.seek(0)
    assert [worker.read_frame(stream), worker.read_frame(stream), worker.read_frame(stream)] == [
        b"abc",
        b"",
        None,
    ]
    for bad in (b"x\nabc", b"5\nab", b"99999999999\n"):
        with pytest.raises(worker.FrameError):
            worker.read_frame(io.BytesIO(bad))


@pytest.fixture
def pool() -> Iterator[ParserPool]:
    settings = Settings(state_dir="/tmp")
    user = "nobody" if os.geteuid() == 0 else None
    running = ParserPool(
        dataclasses.replace(
            settings, bounce_pipe=dataclasses.replace(settings.bounce_pipe, parser_workers=2)
        ),
        user,
    )
    try:
        yield running
    finally:
        running.close()


def proc_status(pid: int, *names: str) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k in names}


def as_worker_reports(raw: bytes) -> BounceReport:
    """parse_report(raw) with the RET=HDRS form the worker adds (b"": the mail itself)."""
    cut = forward.headers_only(raw)
    return dataclasses.replace(parse_report(raw), headers_only=b"" if cut == raw else cut)


def test_workers_parse_as_the_process_itself_would(pool: ParserPool) -> None:
    samples = sorted(CORPUS.glob("*.eml"))[:20]
    assert samples
    for sample in samples:
        raw = sample.read_bytes()
        assert pool.parse(raw) == as_worker_reports(raw), sample.name


def test_the_worker_cuts_returned_messages_to_their_headers(pool: ParserPool) -> None:
    """RET=HDRS: the recorder (root) never takes hostile mail apart; the worker does."""
    cut_some = 0
    for sample in sorted(CORPUS.glob("*.eml")):
        raw = sample.read_bytes()
        cut = forward.headers_only(raw)
        report = pool.parse(raw)
        assert report.headers_only == (b"" if cut == raw else cut), sample.name
        assert forward.headers_only_of(raw, report.headers_only) == cut
        cut_some += cut != raw
        if cut_some >= 3:
            break
    assert cut_some == 3
    plain = b"From: x@y.example\r\n\r\nno returned message\r\n"
    assert pool.parse(plain).headers_only == b""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workers_run_unprivileged_and_bounded(pool: ParserPool) -> None:
    pool.parse(b"From: x@y.example\r\n\r\nhello\r\n")  # loaded, and limits set
    for pid in pool.pids():
        ids = proc_status(pid, "Uid", "Gid", "Groups")
        assert ids["Uid"].split() == ["65534"] * 4  # nobody
        assert ids["Gid"].split() == ["65534"] * 4 and ids["Groups"] == ""  # nogroup, no other
        limits = {
            ln[:26].strip(): ln[26:].split()[:2]
            for ln in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
        }
        assert limits["Max address space"] == [str(512 * 1024 * 1024)] * 2
        assert limits["Max processes"] == ["0", "0"]
        assert limits["Max core file size"] == ["0", "0"]
        assert limits["Max cpu time"][1] == "600" and int(limits["Max cpu time"][0]) <= 600


def test_a_mail_past_its_time_kills_the_worker_and_another_takes_its_place(
    pool: ParserPool,
) -> None:
    raw = (CORPUS / "flufl-bounce_02.eml").read_bytes()
    before = pool.pids()
    pool.timeout = 0.000001
    with pytest.raises(unparsed.Unreadable, match="longer than its timeout"):
        pool.parse(raw)
    pool.timeout = 30.0
    after = pool.pids()
    assert len(after) == 2 and len(set(before) & set(after)) == 1
    gone = (set(before) - set(after)).pop()
    assert not Path(f"/proc/{gone}").exists() or "Z" in Path(f"/proc/{gone}/stat").read_text()
    assert pool.parse(raw) == as_worker_reports(raw)


def test_a_worker_that_died_between_mails_is_replaced_without_losing_the_mail(
    pool: ParserPool,
) -> None:
    raw = (CORPUS / "flufl-bounce_02.eml").read_bytes()
    for each in list(pool.workers):
        each.proc.kill()
        each.proc.wait()
    assert pool.parse(raw) == as_worker_reports(raw)  # the dead one replaced, the mail taken


def test_a_parser_error_costs_one_mail_not_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's loop, in this process: a parser that raises on one mail answers an error
    for it, not temporary (the server keeps the mail unparsed); trouble that may pass (a DNS
    lookup that timed out) is answered temporary (the server answers 75); the worker goes on
    with the next mail either way."""
    from txmail.bounce_pipe import report as main

    def read_report(_settings: Settings, raw: bytes) -> BounceReport:
        if raw == b"bug":
            raise RecursionError("deep")
        if raw == b"dns":
            raise TemporaryFailure("the DNS lookup of a DKIM key timed out")
        return BounceReport(postfix_queue_id=raw.decode())

    monkeypatch.setattr(main, "read_report", read_report)
    stdin, stdout = io.BytesIO(), io.BytesIO()
    settings = Settings(state_dir="/tmp")
    for frame in (json.dumps(dataclasses.asdict(settings)).encode(), b"bug", b"dns", b"Q1"):
        worker.write_frame(stdin, frame)
    stdin.seek(0)
    assert worker.serve(stdin, stdout, 10) == 0
    stdout.seek(0)
    with pytest.raises(worker.ErrorAnswer, match="RecursionError: deep") as caught:
        worker.read_answer(worker.read_frame(stdout) or b"")
    assert not caught.value.temporary
    with pytest.raises(worker.ErrorAnswer, match="TemporaryFailure: the DNS") as caught:
        worker.read_answer(worker.read_frame(stdout) or b"")
    assert caught.value.temporary
    assert worker.read_answer(worker.read_frame(stdout) or b"") == (
        BounceReport(postfix_queue_id="Q1", headers_only=b""),
        False,
    )


def test_a_cut_the_stdlib_cannot_make_costs_the_cut_not_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_raw: bytes) -> bytes:
        raise LookupError("unknown encoding")

    monkeypatch.setattr(forward, "headers_only", broken)
    assert worker._headers_only(b"From: x@y.example\r\n\r\nbody\r\n") == b""


def test_a_report_json_cannot_carry_is_an_error_about_the_mail() -> None:
    """Not an exit of the worker, which the server takes for trouble that may pass (75)."""
    payload = worker._encode({"report": {"events": object()}, "retiring": True})
    with pytest.raises(worker.ErrorAnswer, match="could not be sent") as caught:
        worker.read_answer(payload)
    assert not caught.value.temporary and caught.value.retiring


def test_every_cut_the_worker_makes_is_one_the_recorder_believes() -> None:
    """The recorder forwards a worker's RET=HDRS cut only when it starts with the mail's header
    block byte for byte and is not longer than the mail (forward.cut_is_plausible): an
    honest worker's cuts always are, or RET=HDRS would cut nothing."""
    cut_some = 0
    for sample in sorted(CORPUS.glob("*.eml")):
        raw = sample.read_bytes()
        cut = worker._headers_only(raw)
        if cut:
            cut_some += 1
            assert forward.cut_is_plausible(raw, cut), sample.name
            assert forward.headers_only_of(raw, cut) == cut
    assert cut_some >= 150


def test_a_worker_sees_few_mails_in_its_life() -> None:
    """A worker a mail exploited parses the mails after it until it retires: at most 99."""
    assert worker.MAX_MAILS <= 100
