"""The journald source against a real systemd-journald.

This machine runs no journald (no systemd as pid 1), so the test starts a private one:
`systemd-journald NAMESPACE` creates its own sockets in /run/systemd/journal.NAMESPACE/ and
writes /var/log/journal/MACHINE-ID.NAMESPACE/; `journalctl --namespace=NAMESPACE` reads it.
Lines are sent to its dev-log socket as Postfix's syslog(3) sends them. The journal is then
rotated and vacuumed under the follower's saved cursor, as `journalctl --vacuum-files` does on
a busy node. Everything it made is removed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail import store
from txmail.events import stream_events
from txmail.maillog.journal import JournalFollower
from txmail.maillog.lines import parse_line
from txmail.store.messages import MessageRecord, Messages
from txmail_testing.harness import TXMAIL, RedisServer, wait_for

JOURNALD = Path("/lib/systemd/systemd-journald")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not JOURNALD.exists() or shutil.which("journalctl") is None or os.geteuid() != 0,
        reason="needs systemd-journald, journalctl and root",
    ),
]


class Journal:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.run = Path(f"/run/systemd/journal.{namespace}")
        machine = Path("/etc/machine-id").read_text().strip()
        self.files = Path(f"/var/log/journal/{machine}.{namespace}")
        self.process = subprocess.Popen(
            [str(JOURNALD), namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not (self.run / "dev-log").exists():
            assert time.monotonic() < deadline, "the private journald did not start"
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def syslog(self, line: str, priority: int = 22) -> None:  # 22: mail.info
        self.sock.sendto(f"<{priority}>Dec  7 10:00:00 {line}".encode(), str(self.run / "dev-log"))

    def journalctl(self, *args: str) -> str:
        result = subprocess.run(
            ["journalctl", f"--namespace={self.namespace}", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def count(self) -> int:
        return len(self.journalctl("-o", "json", "SYSLOG_FACILITY=2").splitlines())

    def stop(self) -> None:
        self.sock.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.files, ignore_errors=True)
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture
def journal() -> Iterator[Journal]:
    made = Journal(f"txmailtest{os.getpid()}")
    try:
        yield made
    finally:
        made.stop()


def status(qid: str, rcpt: str) -> str:
    return (
        f"postfix/smtp[4242]: {qid}: to=<{rcpt}>, relay=mx.example.net[192.0.2.1]:25, "
        "delay=0.2, delays=0.1/0/0.05/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
    )


def wait_count(journal: Journal, n: int) -> None:
    deadline = time.monotonic() + 10
    while journal.count() < n:
        assert time.monotonic() < deadline, f"journald did not store {n} entries"
        time.sleep(0.05)


def read(f: JournalFollower, count: int, seconds: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        got += f.read_lines()
        time.sleep(0.05)
    return got


def test_follow_resume_and_vacuum_on_a_real_journald(
    journal: Journal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    position = tmp_path / "maillog.offset"
    journal.syslog(status("4jAAAAAAAAzJ001", "one@example.net"))
    journal.syslog("systemd[1]: not mail", priority=30)  # daemon facility: not selected
    journal.syslog(status("4jAAAAAAAAzJ002", "two@example.net"))
    wait_count(journal, 2)

    f = JournalFollower(position, journal.namespace)
    try:
        lines = read(f, 2)
        assert [parse_line(line).recipient for line in lines] == [  # type: ignore[union-attr]
            "one@example.net",
            "two@example.net",
        ]
        f.commit()
        # Followed live: a line logged now arrives without a restart.
        journal.syslog(status("4jAAAAAAAAzJ003", "three@example.net"))
        assert [parse_line(x).recipient for x in read(f, 1)] == ["three@example.net"]  # type: ignore[union-attr]
        f.rewind()  # not committed: read again from the saved cursor (not the entry at it)
        assert [parse_line(x).recipient for x in read(f, 1)] == ["three@example.net"]  # type: ignore[union-attr]
        f.commit()
    finally:
        f.close()
    saved = json.loads(position.read_text())["cursor"]

    # While the follower is down: rotate, log two more, vacuum the file the cursor is in.
    journal.journalctl("--rotate")
    journal.syslog(status("4jAAAAAAAAzJ004", "four@example.net"))
    journal.syslog(status("4jAAAAAAAAzJ005", "five@example.net"))
    wait_count(journal, 5)
    journal.journalctl("--vacuum-files=1")
    assert journal.count() == 2  # only four and five are left

    # journalctl's own --after-cursor would skip "four" (the oldest entry left): the reason
    # the follower starts at --cursor and compares.
    after = journal.journalctl("-o", "json", f"--after-cursor={saved}", "SYSLOG_FACILITY=2")
    assert "four@example.net" not in after

    again = JournalFollower(position, journal.namespace)
    try:
        with caplog.at_level(logging.WARNING, logger="txmail.maillog"):
            lines = read(again, 2)
        assert [parse_line(x).recipient for x in lines] == [  # type: ignore[union-attr]
            "four@example.net",
            "five@example.net",
        ]
        assert caplog.text.count("the journal no longer holds the entry") == 1
        again.commit()
    finally:
        again.close()


def test_txmail_maillog_records_events_from_the_journal(
    journal: Journal, tmp_path: Path, redis_server: RedisServer
) -> None:
    """`txmail maillog` with maillog.source = "journald": a status line Postfix logs to the
    journal becomes the message's delivery event, as from a file."""
    prefix = f"j{os.getpid()}:"
    config = tmp_path / "txmail.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n\n'
        f'[maillog]\nsource = "journald"\njournal_namespace = "{journal.namespace}"\n'
    )
    from txmail import config as config_mod
    from txmail.histograms import node_name

    settings = config_mod.load(config)
    client = store.connect(settings)
    keys = store.Keys(prefix)
    Messages(client, keys, 3600).record(
        MessageRecord(
            queue_id="4jJOURNALzJ0001",
            account="jacct",
            envelope_sender="app@j.example",
            recipients=["one@example.net"],
        )
    )
    with (tmp_path / "maillog.log").open("w") as err:
        follower = subprocess.Popen(
            [*TXMAIL, "--config", str(config), "maillog"], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        journal.syslog(status("4jJOURNALzJ0001", "one@example.net"))
        wait_for(
            lambda: [e.kind for _, e in stream_events(client, keys, "jacct")] == ["delivery"],
            20,
            what="the delivery event from the journal",
        )
        # the cursor lives in Redis, written with the event (maillog_batch.lua)
        position = client.get(keys.maillog_position(node_name(settings)))
        assert json.loads(position or "{}")["cursor"]
        assert not (tmp_path / "run/maillog.offset").exists()
    finally:
        follower.terminate()
        follower.wait(timeout=20)
        client.close()
    assert "following the journal (namespace " in (tmp_path / "maillog.log").read_text()
