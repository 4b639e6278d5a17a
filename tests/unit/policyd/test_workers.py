"""`txmail policyd` with several workers, as a real process: the workers share the socket, one
that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.harness import RedisServer, wait_for

REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=\n"
    b"recipient=someone@example.net\n\n"
)


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(child) for child in text.split()}


def ask(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.settimeout(5)
        peer.connect(str(path))
        peer.sendall(REQUEST)
        answer = b""
        while not answer.endswith(b"\n\n"):
            data = peer.recv(4096)
            if not data:
                break
            answer += data
        return answer


@pytest.fixture
def policyd(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    config = tmp_path / "txmail.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n[policyd]\nworkers = 2\n'
    )
    path = tmp_path / "run/policyd/policyd.sock"
    log = (tmp_path / "policyd.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "txmail", "--config", str(config), "policyd"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for(lambda: len(children(proc.pid)) == 2 and path.exists(), 20, what="2 workers")
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for child in children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_workers_share_the_socket_and_a_dead_one_is_replaced(
    policyd: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, path = policyd
    wait_for(lambda: ask(path) == b"action=DUNNO\n\n", 10, what="an answer")
    assert all(ask(path) == b"action=DUNNO\n\n" for _ in range(20))
    first = children(proc.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(proc.pid) - {victim}) == 2, 20, what="a new worker")
    assert victim not in children(proc.pid)
    assert all(ask(path) == b"action=DUNNO\n\n" for _ in range(20))
    workers = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        10,
        what="the workers to stop",
    )
    assert not path.exists()
