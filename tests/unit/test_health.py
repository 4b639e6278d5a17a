"""txmail/health.py: each probe against a fake peer that answers (healthy) or not."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from txmail import health
from txmail_testing.harness import RedisServer


@contextmanager
def fake_unix(path: Path, reply: Callable[[bytes], bytes], want: int = 1) -> Iterator[list[bytes]]:
    """A UNIX socket at `path` that reads what arrives (at least `want` bytes, unless the peer
    closes), answers reply(data) and records what it read."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[bytes] = []
    thread = threading.Thread(target=_serve, args=(server, reply, want, seen), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(5)
        server.close()


@contextmanager
def fake_tcp(reply: Callable[[bytes], bytes], want: int = 1) -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_serve, args=(server, reply, want, []), daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        thread.join(5)
        server.close()


def _serve(server: socket.socket, reply: Callable[[bytes], bytes], want: int, seen: list) -> None:
    server.settimeout(5)
    conn, _ = server.accept()
    with conn:
        conn.settimeout(5)
        data = b""
        while len(data) < want:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        seen.append(data)
        answer = reply(data)
        if answer:
            conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)
        try:
            conn.recv(4096)  # what the probe says last (QUIT)
        except OSError:
            pass


def optneg() -> bytes:
    body = b"O" + struct.pack(">III", 6, 0x1FF, 0)
    return struct.pack(">I", len(body)) + body


def test_milter_negotiates(tmp_path: Path) -> None:
    with fake_unix(tmp_path / "m.sock", lambda d: optneg(), want=17) as seen:
        health.milter(tmp_path / "m.sock")
    assert seen[0][4:5] == b"O" and struct.unpack(">I", seen[0][5:9]) == (6,)


def test_milter_that_says_something_else_is_unhealthy(tmp_path: Path) -> None:
    with (
        fake_unix(tmp_path / "m.sock", lambda d: b"\x00\x00\x00\x01t", want=17),
        pytest.raises(health.Unhealthy, match="no option negotiation"),
    ):
        health.milter(tmp_path / "m.sock")


def test_a_missing_socket_says_so(tmp_path: Path) -> None:
    with pytest.raises(health.Unhealthy, match=r"the milter: no socket at .*is it running"):
        health.milter(tmp_path / "absent.sock")


def test_a_silent_peer_times_out_with_a_sentence(tmp_path: Path) -> None:
    with (
        fake_unix(tmp_path / "p.sock", lambda d: b"", want=10**6),
        pytest.raises(health.Unhealthy, match="the policy service: no answer within 0.5 s"),
    ):
        health.policyd(tmp_path / "p.sock", timeout=0.5)


def test_policyd_answers_an_action(tmp_path: Path) -> None:
    with fake_unix(
        tmp_path / "p.sock", lambda d: b"action=DUNNO\n\n" if d.endswith(b"\n\n") else b"", 10
    ) as seen:
        health.policyd(tmp_path / "p.sock")
    assert seen[0].startswith(b"request=smtpd_access_policy\n")


def test_socketmap_netstring(tmp_path: Path) -> None:
    with fake_unix(tmp_path / "s.sock", lambda d: health.netstring(b"OK b.example"), 5) as seen:
        health.socketmap(tmp_path / "s.sock", "b.example")
    assert seen[0] == b"15:relay b.example,"
    with (
        fake_unix(tmp_path / "t.sock", lambda d: health.netstring(b"TEMP Redis is away"), 5),
        pytest.raises(health.Unhealthy, match="answered 'TEMP Redis is away'"),
    ):
        health.socketmap(tmp_path / "t.sock", "b.example")


def test_bounce_recorder_connects_and_sends_nothing(tmp_path: Path) -> None:
    with fake_unix(tmp_path / "b.sock", lambda d: b"", want=1) as seen:
        health.bounce_recorder(tmp_path / "b.sock")
    assert seen == [b""]


def test_dovecot_version_handshake(tmp_path: Path) -> None:
    hello = b"VERSION\t1\t2\nMECH\tPLAIN\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n"
    with fake_unix(tmp_path / "a", lambda d: hello, want=5) as seen:
        health.dovecot_auth(tmp_path / "a")
    assert seen[0].startswith(b"VERSION\t1\t2\nCPID\t")
    with (
        fake_unix(tmp_path / "x", lambda d: b"HELLO\n", want=5),
        pytest.raises(health.Unhealthy, match="no auth protocol VERSION 1"),
    ):
        health.dovecot_auth(tmp_path / "x")


def test_http_healthz_and_any_status() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
    with fake_tcp(lambda d: ok, want=10) as port:
        health.http("127.0.0.1", port, "/healthz", "the tracker", b"ok\n")
    with (
        fake_tcp(lambda d: b"HTTP/1.1 500 Oops\r\n\r\n", want=10) as port,
        pytest.raises(health.Unhealthy, match="the tracker: GET /healthz answered 'HTTP/1.1 500"),
    ):
        health.http("127.0.0.1", port, "/healthz", "the tracker", b"ok\n")
    with fake_tcp(lambda d: b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", want=10) as port:
        health.http("127.0.0.1", port, "/", "the login policy service")


def test_nothing_listening_on_a_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(health.Unhealthy, match=f"Postfix: cannot connect to 127.0.0.1:{port}"):
        health.smtp_banner("127.0.0.1", port, "Postfix")


def test_smtp_banner() -> None:
    with fake_tcp(lambda d: b"", want=0) as port:
        with pytest.raises(health.Unhealthy, match="no 220 greeting"):
            health.smtp_banner("127.0.0.1", port, "Postfix")
    server = socket.create_server(("127.0.0.1", 0))

    def greet() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"220 mta.example.test ESMTP\r\n")
            conn.recv(100)

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    health.smtp_banner("127.0.0.1", server.getsockname()[1], "Postfix")
    thread.join(5)
    server.close()


def test_redis_ping_and_password() -> None:
    server = RedisServer(password="secret").start()
    try:
        health.redis_ping(f"redis://:secret@127.0.0.1:{server.port}/0", "shown")
        with pytest.raises(health.Unhealthy, match="refused the password|did not answer"):
            health.redis_ping(f"redis://:wrong@127.0.0.1:{server.port}/0", "shown")
    finally:
        server.close()
    with pytest.raises(health.Unhealthy, match="Redis at shown did not answer PING"):
        health.redis_ping(f"redis://127.0.0.1:{server.port}/0", "shown", timeout=0.5)


def test_unknown_component_names_the_known_ones(tmp_path: Path) -> None:
    from txmail.config import Settings

    said = health.check(Settings(state_dir=str(tmp_path)), "mysql")
    assert said is not None and "no component named 'mysql'" in said and "milter" in said


def test_every_component_of_up_has_a_probe(tmp_path: Path) -> None:
    from txmail.config import RedisSettings, Settings, SpamSettings
    from txmail.stack.supervisor import build

    settings = Settings(
        state_dir=str(tmp_path),
        redis=RedisSettings(url="redis://127.0.0.1:1/0"),
        spam=SpamSettings(enabled=True),
    )
    names = {c.name for c in build(settings, tmp_path / "txmail.toml", dev=True)}
    assert names <= set(health.probes(settings))
