"""The node as a whole: Redis outages, clean shutdown, and what `txmail up` refuses to start."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from txmail_testing.harness import TXMAIL, RedisServer, Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e


def children(pid: int) -> set[int]:
    """`pid` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(parents.get(p, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_leaves_no_process_and_no_socket(make_stack: Callable[..., Stack]) -> None:
    node = make_stack(name="sigterm").start()
    assert node.proc is not None
    master_pid = int((node.state / "postfix/spool/pid/master.pid").read_text())
    pids = children(node.proc.pid) | children(master_pid)
    assert len(pids) >= 6  # supervisor, redis, authsync, dovecot, milter, postfix master, ...
    sockets = [p for p in (node.state / "run").rglob("*") if p.is_socket()]
    assert sockets
    assert node.stop() == 0
    wait_for(lambda: not any(alive(p) for p in pids), 15, what="every process to exit")
    assert not [p for p in (node.state / "run").rglob("*") if p.is_socket()]
    for port in (node.smtp, node.submission, node.submissions):
        with pytest.raises(OSError):
            smtplib.SMTP("127.0.0.1", port, timeout=2)


def test_redis_outage_gives_4xx_and_logins_keep_working(
    make_stack: Callable[..., Stack], sink: Sink
) -> None:
    redis_server = RedisServer().start()
    try:
        node = make_stack(name="outage", redis_url=redis_server.url).start()
        login = ("outage", node.add_account("outage", "outage.example"))
        first = "before-outage@example.net"
        node.send(login, "app@outage.example", [first], simple_message("app@outage.example", first))

        redis_server.stop()
        pending = "during-outage@example.net"
        message = simple_message("app@outage.example", pending)
        with node.client("submission", login) as smtp:  # the passwd-file still has the account
            code, text = smtp.mail("app@outage.example")
            assert 400 <= code < 500, (code, text)
            assert text.startswith(b"4.3.0")
            assert b"try again" in text

        redis_server.start()  # same port, same AOF: the accounts are back

        # The client retries, as clients do after a 4xx; the message now goes through.
        def retry() -> bool:
            try:
                node.send(login, "app@outage.example", [pending], message)
                return True
            except smtplib.SMTPException:
                time.sleep(0.5)
                return False

        wait_for(retry, 30, what="sending to work again after Redis came back")
        sink.wait(1)
        wait_for(
            lambda: sink.find(pending) and sink.find(first), 20, what="both messages at the sink"
        )
    finally:
        redis_server.close()


def run_up(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TXMAIL, "--config", str(config), "up"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def fresh_state(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(name="badconfig")


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda t: "smtpp = 25\n" + t, "unknown key 'smtpp'"),
        (lambda t: t.replace("[listen]\n", "[listen]\nbogus = 1\n"), "unknown key 'listen.bogus'"),
        (lambda t: t.replace("submission = ", "submission = 70000 #"), "listen.submission = 70000"),
        (lambda t: t.replace("submission = ", 'submission = "x" #'), "listen.submission must be"),
        (lambda t: t + "\n[redis\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(
    fresh_state: Stack, edit: Callable[[str], str], needle: str
) -> None:
    fresh_state.config.write_text(edit(fresh_state.config.read_text()))
    result = run_up(fresh_state.config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_certificate(fresh_state: Stack) -> None:
    (fresh_state.state / "tls/cert.pem").unlink()
    result = run_up(fresh_state.config)
    assert result.returncode == 2
    assert "tls.cert_file" in result.stderr and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_nodes_on_one_redis_cluster_share_accounts(
    make_stack: Callable[..., Stack], sink: Sink
) -> None:
    """Accounts added on one node log in on every node within seconds; both record messages
    in the one cluster."""
    from txmail_testing.harness import RedisCluster

    cluster = RedisCluster().start()
    try:
        nodes = [
            make_stack(name=f"node{i}", redis_url=cluster.url, cluster=True).start() for i in (1, 2)
        ]
        password = nodes[0].add_account("shared", "shared.example")
        nodes[1].wait_passwd("shared")
        for i, node in enumerate(nodes):
            rcpt = f"via-node{i}@example.net"
            node.send(
                ("shared", password),
                "app@shared.example",
                [rcpt],
                simple_message("app@shared.example", rcpt),
            )
            wait_for(lambda r=rcpt: sink.find(r), 20, what=f"delivery via node {i}")
        nodes[1].txmail("accounts", "remove", "--yes", "shared")
        nodes[0].wait_passwd("shared", present=False)
    finally:
        cluster.close()


def test_dev_mode_prints_a_swaks_command_that_works(make_stack: Callable[..., Stack]) -> None:
    node = make_stack(name="dev")
    # --dev without a relayhost: the capture server stands in for the internet.
    node.config.write_text(
        node.config.read_text().replace('relayhost = "[127.0.0.1]:', 'relayhost = "" # ')
    )
    node.start(dev=True)
    command = next(
        line.strip() for line in node.output().splitlines() if line.strip().startswith("swaks ")
    )
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    captured = node.state / "captured"
    wait_for(lambda: list(captured.glob("*.eml")), 20, what="the captured message")
    assert b"This is a test mailing" in next(captured.glob("*.eml")).read_bytes()


def test_a_component_that_dies_is_restarted(make_stack: Callable[..., Stack], sink: Sink) -> None:
    node = make_stack(name="restart").start()
    login = ("phoenix", node.add_account("phoenix", "phoenix.example"))

    def milter_pid() -> int | None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if str(node.config).encode() in argv and b"milter" in argv:
                    return int(entry.name)
        return None

    first = milter_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (milter_pid() or first) != first, 20, what="a new milter process")
    wait_for(
        lambda: "milter killed by signal 9; restarting" in node.output(),
        10,
        what="the restart to be logged",
    )

    def sends() -> bool:
        try:
            node.send(
                login,
                "app@phoenix.example",
                ["after-restart@example.net"],
                simple_message("app@phoenix.example", "after-restart@example.net"),
            )
            return True
        except smtplib.SMTPException:
            return False

    wait_for(sends, 20, interval=0.5, what="mail to flow after the restart")
