"""The journald source, on recorded `journalctl -o json` output.

tests/data/journal/postfix.json was recorded from a private systemd-journald (namespace
txrec) fed syslog datagrams in Postfix's format, one with a byte that is not UTF-8. A fake
journalctl (a script written here, passed as the `journalctl` argument) prints those entries
from the one named by --cursor, or, when that cursor is not among them (vacuumed), from the
first entry after it by sequence number, as sd_journal_seek_cursor() does; then it waits as
--follow does. tests/e2e/test_journal.py runs the same follower on a real journald.
"""

from __future__ import annotations

import json
import logging
import stat
import sys
import time
from pathlib import Path

import pytest
import redis

from txmail.events import Recorder, stream_events
from txmail.maillog.journal import JournalFollower, command, entry_line
from txmail.maillog.lines import parse_line
from txmail.maillog.server import StatusRecorder, handle_lines
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages

RECORDED = Path(__file__).resolve().parents[2] / "data/journal/postfix.json"
ENTRIES = [json.loads(line) for line in RECORDED.read_text().splitlines()]

FAKE = """#!{python}
import json, sys, time
from pathlib import Path
Path({calls!r}).open("a").write(json.dumps(sys.argv[1:]) + "\\n")
entries = [json.loads(l) for l in Path({entries!r}).read_text().splitlines()]
cursor = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--cursor=")), None)
if cursor == "garbage":
    print("Failed to seek to cursor: Invalid argument", file=sys.stderr)
    sys.exit(1)
def seqnum(c):
    return int(dict(p.split("=", 1) for p in c.split(";"))["i"], 16)
if cursor:
    entries = [e for e in entries if seqnum(e["__CURSOR"]) >= seqnum(cursor)]
for e in entries:
    print(json.dumps(e), flush=True)
time.sleep(60)
"""

FOLLOWERS: list[JournalFollower] = []


@pytest.fixture(autouse=True)
def stop_followers():
    yield
    while FOLLOWERS:
        FOLLOWERS.pop().close()


def fake_journalctl(tmp_path: Path, entries: list[dict]) -> tuple[str, Path]:
    data = tmp_path / "entries.json"
    data.write_text("".join(json.dumps(e) + "\n" for e in entries))
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "journalctl"
    script.write_text(FAKE.format(python=sys.executable, calls=str(calls), entries=str(data)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), calls


def follower(tmp_path: Path, journalctl: str, namespace: str = "") -> JournalFollower:
    made = JournalFollower(
        tmp_path / "maillog.offset", namespace, ["SYSLOG_FACILITY=2"], journalctl
    )
    FOLLOWERS.append(made)
    return made


def read_until(f: JournalFollower, count: int, seconds: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        got += f.read_lines()
        time.sleep(0.02)
    return got


def test_entry_line_is_what_syslog_would_write() -> None:
    line = entry_line(ENTRIES[3])
    assert line is not None
    assert line.startswith("postfix/smtp[15387]: 4jXCvV4QlNzJHcB: to=<a1@dest.test>,")
    status = parse_line(line)
    assert status is not None
    assert (status.queue_id, status.recipient, status.status) == (
        "4jXCvV4QlNzJHcB",
        "a1@dest.test",
        "sent",
    )


def test_a_message_that_is_not_utf8_is_kept() -> None:
    """journalctl gives such a MESSAGE as an array of bytes."""
    assert isinstance(ENTRIES[-1]["MESSAGE"], list)
    status = parse_line(entry_line(ENTRIES[-1]) or "")
    assert status is not None
    assert status.status == "deferred"
    assert "Mailbox busy \ufffdt\ufffd" in status.text


def test_entries_without_message_or_identifier() -> None:
    assert entry_line({"__CURSOR": "x"}) is None
    assert entry_line({"MESSAGE": "hi", "_COMM": "smtp", "_PID": "9"}) == "smtp[9]: hi"


def test_command_line() -> None:
    assert command("journalctl", "", ["SYSLOG_FACILITY=2"], None) == [
        "journalctl",
        "--follow",
        "--no-tail",
        "--output=json",
        "--no-pager",
        "--quiet",
        "SYSLOG_FACILITY=2",
    ]
    assert command("jc", "", ["A=1"], None, since_days=30)[-2:] == ["--since=-30d", "A=1"]
    cmd = command(
        "jc", "mail", ["SYSLOG_IDENTIFIER=postfix/smtp", "_COMM=smtp"], "s=1;i=2", since_days=30
    )
    assert cmd[-5:] == [
        "--namespace=mail",
        "--cursor=s=1;i=2",
        "SYSLOG_IDENTIFIER=postfix/smtp",
        "+",
        "_COMM=smtp",
    ]


def test_reads_every_entry_then_resumes_after_the_committed_one(tmp_path: Path) -> None:
    journalctl, calls = fake_journalctl(tmp_path, ENTRIES)
    f = follower(tmp_path, journalctl)
    lines = read_until(f, len(ENTRIES))
    assert len(lines) == len(ENTRIES)
    assert [s.status for s in map(parse_line, lines) if s] == ["sent", "bounced", "deferred"]
    f.commit()
    assert json.loads((tmp_path / "maillog.offset").read_text()) == {
        "cursor": ENTRIES[-1]["__CURSOR"]
    }
    f.close()
    again = follower(tmp_path, journalctl)
    assert read_until(again, 1, seconds=1.0) == []  # the saved entry itself is dropped
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    assert f"--cursor={ENTRIES[-1]['__CURSOR']}" in argv[-1]


def test_lines_not_committed_are_read_again(tmp_path: Path) -> None:
    journalctl, _ = fake_journalctl(tmp_path, ENTRIES)
    f = follower(tmp_path, journalctl)
    first = read_until(f, 3)[:3]
    f.cursor = ENTRIES[2]["__CURSOR"]  # as if exactly three entries had been returned
    f.commit()
    f.rewind()  # Redis was down for what came after
    assert read_until(f, len(ENTRIES) - 3) == [entry_line(e) for e in ENTRIES[3:]]
    assert first == [entry_line(e) for e in ENTRIES[:3]]


def test_a_vacuumed_cursor_is_reported_once_and_reading_resumes_at_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The saved entry was vacuumed: the fake holds only the entries after it."""
    journalctl, _ = fake_journalctl(tmp_path, ENTRIES[4:])
    (tmp_path / "maillog.offset").write_text(json.dumps({"cursor": ENTRIES[2]["__CURSOR"]}))
    f = follower(tmp_path, journalctl)
    with caplog.at_level(logging.WARNING, logger="txmail.maillog"):
        lines = read_until(f, len(ENTRIES) - 4)
        assert lines == [entry_line(e) for e in ENTRIES[4:]]  # the oldest left is not skipped
        f.rewind()  # read again from the same lost cursor: not reported twice
        assert read_until(f, len(ENTRIES) - 4) == lines
    reports = [r for r in caplog.records if "no longer holds" in r.getMessage()]
    assert len(reports) == 1
    assert "2026-12-07T" in reports[0].getMessage()


def test_a_refused_cursor_restarts_from_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journalctl, calls = fake_journalctl(tmp_path, ENTRIES)
    (tmp_path / "maillog.offset").write_text(json.dumps({"cursor": "garbage"}))
    now = [0.0]
    f = JournalFollower(
        tmp_path / "maillog.offset", "", ["SYSLOG_FACILITY=2"], journalctl, lambda: now[0]
    )
    FOLLOWERS.append(f)
    with caplog.at_level(logging.WARNING, logger="txmail.maillog"):
        # read_lines notices the exit itself (and drops the process), so wait for its report,
        # not for the process: polling the process raced with that and spun to the deadline
        deadline = time.monotonic() + 30
        while "refused the saved cursor" not in caplog.text:
            assert f.read_lines() == []
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert f.process is None
    now[0] += 5  # after the restart delay
    assert len(read_until(f, len(ENTRIES))) == len(ENTRIES)
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    assert not any(a.startswith("--cursor") for a in argv[-1])


def test_journalctl_missing_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = follower(tmp_path, str(tmp_path / "no-such-journalctl"))
    with caplog.at_level(logging.ERROR, logger="txmail.maillog"):
        assert f.read_lines() == []
    assert "cannot run" in caplog.text


def test_journal_entries_give_the_same_events_as_file_lines(
    client: redis.Redis, keys: Keys
) -> None:
    """The recorded entries through the recorder: delivery, bounce and soft_bounce events,
    exactly as the same lines read from a file would give."""
    messages = Messages(client, keys, 3600)
    for queue_id, recipients in (
        ("4jXCvV4QlNzJHcB", ["a1@dest.test", "reject-a2@dest.test"]),
        ("4jXCt135YKzJK3j", ["defer-added@dest.test"]),
    ):
        messages.record(
            MessageRecord(
                queue_id=queue_id,
                account="acme",
                envelope_sender="app@acme.test",
                recipients=recipients,
            )
        )
    statuses = StatusRecorder(client, keys, messages, Recorder(client, keys))
    handle_lines([line for line in map(entry_line, ENTRIES) if line], statuses)
    events = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.recipient, e.message_id) for e in events] == [
        ("delivery", "a1@dest.test", "4jXCvV4QlNzJHcB"),
        ("bounce", "reject-a2@dest.test", "4jXCvV4QlNzJHcB"),
        ("soft_bounce", "defer-added@dest.test", "4jXCt135YKzJK3j"),
    ]
    assert events[1].details["reason"] == "userunknown"
