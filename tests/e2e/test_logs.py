"""Logs where operators look, on a real node (`txmail up`): every component's lines on the
supervisor's standard error with its name, JSON lines that parse, the queue id and account of
a message on the lines about it; files rotated by the shipped logrotate snippet with nothing
lost; and the lines in a real (private) journald as systemd's StandardError=journal puts them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_journal import JOURNALD, Journal
from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e

SNIPPET = Path(__file__).resolve().parents[2] / "contrib/logrotate/txmail"
COMPONENTS = {
    "up",
    "redis",
    "authsync",
    "authpolicy",
    "dovecot",
    "milter",
    "socketmap",
    "policyd",
    "bounce-pipe",
    "maillog",
    "webhooks",
    "tracker",
}


def json_lines(node: Stack) -> list[dict[str, Any]]:
    """Every line of `txmail up`'s standard error (up.out holds its standard output too: the
    ready line), each of which must be a JSON object."""
    lines = []
    for line in node.output().splitlines():
        if line.startswith("txmail ready:"):
            continue
        fields = json.loads(line)  # a line that is not JSON fails here
        assert isinstance(fields, dict), line
        lines.append(fields)
    return lines


def about(lines: list[dict[str, Any]], component: str, queue_id: str) -> list[dict[str, Any]]:
    return [x for x in lines if x["component"] == component and x.get("queue_id") == queue_id]


def send_one(node: Stack, account: str, password: str, to: str) -> str:
    sender = f"app@{account}.example"
    return node.send((account, password), sender, [to], simple_message(sender, to))


def test_json_lines_on_stderr_name_every_component_and_the_message(
    make_stack: Callable[..., Stack], sink: Sink
) -> None:
    node = make_stack(name="jsonlogs").configure("log", format="json").start()
    password = node.add_account("jlog", "jlog.example")
    queue_id = send_one(node, "jlog", password, "logs-reader@example.net")
    wait_for(
        lambda: about(json_lines(node), "maillog", queue_id),
        30,
        what="the maillog follower's line about the delivery",
    )
    lines = json_lines(node)
    for fields in lines:
        assert {"time", "level", "component", "message"} <= fields.keys(), fields
        assert fields["time"].endswith("Z")
    assert COMPONENTS | {"postfix"} <= {x["component"] for x in lines}

    (accepted,) = [x for x in about(lines, "milter", queue_id) if ": accept:" in x["message"]]
    assert accepted["account"] == "jlog"
    assert accepted["logger"] == "txmail.milter"
    (delivered,) = about(lines, "maillog", queue_id)
    assert delivered["account"] == "jlog"
    assert delivered["message"].startswith(f"{queue_id}: event delivery ")
    assert "to=<logs-reader@example.net>" in delivered["message"]
    # Postfix's own lines (its maillog_file, followed) with the queue id they begin with.
    wait_for(
        lambda: any(
            "status=sent" in x["message"] for x in about(json_lines(node), "postfix", queue_id)
        ),
        30,
        what="Postfix's status=sent line",
    )
    # shown with -s: the README's example lines
    for shown in (accepted, *about(json_lines(node), "postfix", queue_id), delivered):
        print(json.dumps(shown))
    assert password not in node.output()


def run_logrotate(node: Stack, tmp_path: Path) -> None:
    """`logrotate -f` on the shipped snippet, its paths set to this node's state directory,
    with a state file of its own."""
    config = tmp_path / "logrotate.conf"
    config.write_text(SNIPPET.read_text().replace("/var/lib/txmail", str(node.state)))
    config.chmod(0o644)
    result = subprocess.run(
        ["logrotate", "-f", "-v", "-s", str(tmp_path / "logrotate.state"), str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate")
def test_files_moved_away_and_rotated_lose_nothing(
    make_stack: Callable[..., Stack], sink: Sink, tmp_path: Path
) -> None:
    node = make_stack(name="filelogs").configure("log", destination="files").start()
    log_dir = node.state / "log"
    milter, maillog = log_dir / "milter.log", log_dir / "maillog.log"
    password = node.add_account("flog", "flog.example")
    assert "milter:" not in node.output()  # files: the components' lines are not on stderr

    def delivered(queue_id: str, path: Path) -> Callable[[], bool]:
        return lambda: path.exists() and f"{queue_id}: event delivery" in path.read_text()

    first = send_one(node, "flog", password, "logs-one@example.net")
    wait_for(delivered(first, maillog), 30, what="the first delivery in maillog.log")

    # An operator (or a logrotate without create) moves the file away: a new one appears.
    milter.rename(log_dir / "milter.moved")
    second = send_one(node, "flog", password, "logs-two@example.net")
    wait_for(delivered(second, maillog), 30, what="the second delivery")
    assert f"{second}: accept:" in milter.read_text()

    # logrotate -f with the shipped snippet: every *.log, Postfix's maillog_file among them.
    run_logrotate(node, tmp_path)
    assert (log_dir / "milter.log.1").exists() and (log_dir / "postfix.log.1").exists()
    # Postfix's lines go into the new postfix.log once postlogd reopened it after the reload;
    # until then into postfix.log.1, which the maillog follower reads to its end.
    later: list[str] = []
    while not later or later[-1] not in (log_dir / "postfix.log").read_text():
        assert len(later) < 10, "Postfix never wrote into the new postfix.log"
        later.append(send_one(node, "flog", password, f"logs-later{len(later)}@example.net"))
        wait_for(delivered(later[-1], maillog), 30, what="a delivery after rotation")
        wait_for(
            lambda: f"{later[-1]}: removed" in postfix_text(log_dir),
            30,
            what="Postfix's last line about it",
        )
    sent = [first, second, *later]

    # Every line is in exactly one generation of its file, none missing, none twice.
    generations = {
        "milter": [log_dir / "milter.moved", log_dir / "milter.log.1", milter],
        "maillog": [log_dir / "maillog.log.1", maillog],
        "postfix": [log_dir / "postfix.log.1", log_dir / "postfix.log"],
    }
    wanted = {
        "milter": ": accept: account=flog",
        "maillog": ": event delivery",
        "postfix": ": removed",
    }
    for name, files in generations.items():
        texts = [p.read_text() if p.exists() else "" for p in files]
        for queue_id in sent:
            holding = [
                p.name for p, t in zip(files, texts, strict=True) if queue_id + wanted[name] in t
            ]
            assert len(holding) == 1, (name, queue_id, holding)
            assert sum(t.count(queue_id + wanted[name]) for t in texts) == 1, (name, queue_id)
    assert f"{later[-1]}: " in milter.read_text() and f"{first}: " not in milter.read_text()
    for path in log_dir.glob("*.log"):
        assert oct(path.stat().st_mode & 0o777) == "0o640", path


def postfix_text(log_dir: Path) -> str:
    return "".join(
        p.read_text() for p in (log_dir / "postfix.log.1", log_dir / "postfix.log") if p.exists()
    )


def journal_stream(journal: Journal, identifier: str) -> socket.socket:
    """A connection to journald's stdout socket with the header systemd sends for a service's
    StandardError=journal (journald's stream protocol: identifier, unit, priority, level
    prefix, and forwarding to syslog, kmsg and console)."""
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.connect(str(journal.run / "stdout"))
    stream.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
    stream.shutdown(socket.SHUT_RD)
    return stream


@pytest.fixture
def journal() -> Any:
    if not JOURNALD.exists() or shutil.which("journalctl") is None or os.geteuid() != 0:
        pytest.skip("needs systemd-journald, journalctl and root")
    made = Journal(f"txmaillogs{os.getpid()}")
    try:
        yield made
    finally:
        made.stop()


def test_lines_reach_journald_named(
    make_stack: Callable[..., Stack],
    sink: Sink,
    journal: Journal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = journal_stream(journal, "txmail")
    stat = os.fstat(stream.fileno())  # systemd tells a service its journal stream this way
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    node = make_stack(name="journallogs")
    try:
        node.start(stderr=stream.fileno())
    except AssertionError as exc:
        shown = journal.journalctl("-t", "txmail", "-o", "cat", "-n", "40")
        raise AssertionError(f"{exc}\nthe journal's last lines:\n{shown}") from None
    finally:
        stream.close()  # txmail up holds its own copy
    password = node.add_account("jrnl", "jrnl.example")
    queue_id = send_one(node, "jrnl", password, "jrnl-reader@example.net")

    def entries() -> list[dict[str, Any]]:
        out = journal.journalctl("-o", "json", "-t", "txmail")
        return [json.loads(line) for line in out.splitlines()]

    def messages() -> list[str]:
        return [str(e.get("MESSAGE", "")) for e in entries()]

    wait_for(
        lambda: any(
            m.startswith("maillog: ") and f"{queue_id}: event delivery" in m for m in messages()
        ),
        30,
        what="the delivery line in the journal",
    )
    found = entries()
    assert {e["SYSLOG_IDENTIFIER"] for e in found} == {"txmail"}
    named = {str(e["MESSAGE"]).split(": ", 1)[0] for e in found}
    assert COMPONENTS <= named, named
    (accepted,) = [
        m for m in messages() if m.startswith("milter: ") and f"{queue_id}: accept:" in m
    ]
    assert accepted.endswith(f"queue_id={queue_id} account=jrnl")
    # One message's lines, as the README says to find them.
    grep = journal.journalctl("-t", "txmail", "-o", "cat", "-g", f"queue_id={queue_id}")
    assert [line.split(": ", 1)[0] for line in grep.splitlines()] == ["milter", "maillog"]

    # Levels reach journald's PRIORITY (the <N> prefix, stripped from the message).
    os.kill(node.pid_of("webhooks", "run"), signal.SIGKILL)

    def warnings() -> list[str]:
        return journal.journalctl("-t", "txmail", "-o", "cat", "-p", "warning").splitlines()

    wait_for(
        lambda: any("webhooks killed by signal 9; restarting" in w for w in warnings()),
        30,
        what="the supervisor's warning at priority 4",
    )
    assert all(w.startswith("up: ") and " WARNING " in w for w in warnings()), warnings()
    assert not any(m.startswith("<") for m in messages())
    print(journal.journalctl("-t", "txmail", "-o", "short-iso", "--no-pager"))
