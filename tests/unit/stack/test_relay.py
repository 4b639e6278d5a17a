"""How `txmail up` passes its components' lines on (stack/relay.py): named on standard error,
always JSON with log.format = "json", into files that are reopened when moved away."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from txmail.stack.relay import LogFile, Routing, StderrSink


def sink_file(tmp_path: Path) -> tuple[StderrSink, Path]:
    path = tmp_path / "stderr"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return StderrSink(fd), path


def test_text_lines_on_stderr_are_led_by_the_component(tmp_path: Path) -> None:
    routing = Routing("text", "stderr", tmp_path)
    assert routing.shaped("milter", "2026-12-07T20:13:03.123Z INFO x: y") == (
        "milter: 2026-12-07T20:13:03.123Z INFO x: y"
    )
    assert Routing("text", "files", tmp_path).shaped("milter", "a line") == "a line"


def test_json_lines_pass_and_anything_else_becomes_json(tmp_path: Path) -> None:
    routing = Routing("json", "stderr", tmp_path)
    own = json.dumps({"component": "milter", "message": "m"})
    assert routing.shaped("milter", own) == own
    for foreign in ("1:M 07 Dec 2026 Ready to accept connections", "{not json", "[1, 2]"):
        fields = json.loads(routing.shaped("redis", foreign))
        assert (fields["component"], fields["message"]) == ("redis", foreign)


def test_a_childs_pipe_reaches_stderr_line_by_line(tmp_path: Path) -> None:
    sink, out = sink_file(tmp_path)
    routing = Routing("text", "stderr", tmp_path, sink)
    read_end, write_end = os.pipe()
    routing.follow("dovecot", os.fdopen(read_end, "rb"))
    with os.fdopen(write_end, "wb") as child:
        child.write(b"auth: Info: started\nhalf a ")
        child.flush()
        child.write(b"line\nno newline at the end")
    routing.drain()
    os.close(sink.fd)
    assert out.read_text().splitlines() == [
        "dovecot: auth: Info: started",
        "dovecot: half a line",
        "dovecot: no newline at the end",
    ]


def test_a_moved_log_file_is_reopened_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "log/milter.log"
    log = LogFile(path)
    log.write_line("one")
    path.rename(tmp_path / "log/milter.log.1")  # logrotate's default: move, then create
    log.write_line("two")
    path.unlink()  # or no file at all
    log.write_line("three")
    log.close()
    assert (tmp_path / "log/milter.log.1").read_text() == "one\n"
    assert path.read_text() == "three\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_a_log_file_created_by_logrotate_is_used(tmp_path: Path) -> None:
    path = tmp_path / "milter.log"
    log = LogFile(path)
    log.write_line("one")
    path.rename(tmp_path / "milter.log.1")
    path.write_text("")  # `create 0640 root root`
    log.write_line("two")
    log.close()
    assert path.read_text() == "two\n"


def test_the_supervisors_own_lines_are_named_up(tmp_path: Path) -> None:
    for log_format in ("text", "json"):
        (tmp_path / log_format).mkdir()
        sink, out = sink_file(tmp_path / log_format)
        routing = Routing(log_format, "stderr", tmp_path, sink)
        root = logging.getLogger()
        before = root.handlers[:]
        routing.take_over_logging()
        try:
            logging.getLogger("txmail.up").warning("milter exited; restarting")
        finally:
            for handler in root.handlers[:]:
                if handler not in before:
                    root.removeHandler(handler)
        os.close(sink.fd)
        line = out.read_text().strip()
        if log_format == "text":
            assert line.startswith("up: ") and line.endswith("milter exited; restarting")
        else:
            fields = json.loads(line)
            assert (fields["component"], fields["level"]) == ("up", "warning")


def test_on_the_journal_each_line_leads_with_its_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, out = sink_file(tmp_path)
    stat = os.fstat(sink.fd)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    text = Routing("text", "stderr", tmp_path, sink)
    assert text.shaped("milter", "2026-12-07T20:13:03.123Z WARNING x: y") == (
        "<4>milter: 2026-12-07T20:13:03.123Z WARNING x: y"
    )
    assert text.shaped("redis", "1:M * Ready") == "redis: 1:M * Ready"  # no level: info
    as_json = Routing("json", "stderr", tmp_path, sink)
    assert as_json.shaped("policyd", '{"level": "error"}') == '<3>{"level": "error"}'
    # Not the journal (another file, or files): no prefix.
    assert not Routing("text", "files", tmp_path, sink).level_prefix
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")
    assert not Routing("text", "stderr", tmp_path, sink).level_prefix
    os.close(sink.fd)
    assert out.read_text() == ""


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_postfix_s_log_is_followed_across_rotation(tmp_path: Path) -> None:
    sink, out = sink_file(tmp_path)
    maillog = tmp_path / "postfix.log"
    maillog.write_text("Dec 07 20:00:00 mta txmail/master[1]: shown before: not passed on\n")
    routing = Routing("json", "stderr", tmp_path, sink)
    thread = routing.tail_file("postfix", maillog, grace=0.1)

    def shown() -> list[dict[str, str]]:
        return [json.loads(line) for line in out.read_text().splitlines()]

    def append(path: Path, text: str) -> None:
        with path.open("a") as f:
            f.write(text)

    assert thread.is_alive()
    append(maillog, "Dec 07 20:21:05 mta txmail/smtp[4242]: 4jjtlj52NHzKD4d: to=<a@b.example>")
    append(maillog, ", status=sent\n")
    wait_until(lambda: len(shown()) == 1)
    maillog.rename(tmp_path / "postfix.log.1")  # postfix logrotate: move, then reload
    maillog.write_text("Dec 07 20:22:00 mta txmail/master[1]: reload\n")
    append(
        tmp_path / "postfix.log.1", "Dec 07 20:21:59 mta txmail/qmgr[7]: 4jjtlj52NHzKD4d: removed\n"
    )
    wait_until(lambda: len(shown()) == 3)
    routing.drain()
    os.close(sink.fd)
    first, late, new = shown()
    assert first["message"].endswith("to=<a@b.example>, status=sent")
    assert (first["component"], first["queue_id"]) == ("postfix", "4jjtlj52NHzKD4d")
    assert late["message"].endswith("4jjtlj52NHzKD4d: removed")  # the old file's last line first
    assert new["message"].endswith("master[1]: reload") and "queue_id" not in new
