"""The bounce pipe's hand-off to `txmail bounces serve`: the framing both ways, the server's
answers to good and bad requests, a pipe process that hands its mail over without loading
redis-py or the parser, and one that finds nobody listening and exits 75."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail.bounce_pipe import handoff
from txmail.bounce_pipe.server import Server

MAIL = b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\n\r\nbody\r\n"


def test_a_request_reads_back_as_sent() -> None:
    sent = handoff.request("app@acme.example", "bounces+x\udcff@mta.acme.example", MAIL)
    assert handoff.read_request(io.BytesIO(sent), 1000) == (
        "app@acme.example",
        "bounces+x\udcff@mta.acme.example",
        MAIL,
    )
    assert handoff.read_request(io.BytesIO(handoff.request("", "b@x.example", b"")), 10) == (
        "",
        "b@x.example",
        b"",
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.0\r\n\r\n",
        b"TXMAIL-BOUNCE/2 1 1 1\nabc",
        b"TXMAIL-BOUNCE/1 1 1\nab",
        b"TXMAIL-BOUNCE/1 1 1 -1\nab",
        b"TXMAIL-BOUNCE/1 1 1 5\nabcd",  # ends early
        b"TXMAIL-BOUNCE/1 1 1 2000\nab" + b"x" * 2000,  # over the mail limit
        b"TXMAIL-BOUNCE/1 5000 1 1\n" + b"x" * 5002,  # an address over its limit
        b"TXMAIL-BOUNCE/1 " + b"1" * 5000 + b"\n",  # a first line without end
    ],
)
def test_anything_else_is_a_bad_request(data: bytes) -> None:
    with pytest.raises(handoff.BadRequest):
        handoff.read_request(io.BytesIO(data), 1000)


def test_answers() -> None:
    assert handoff.parse_answer(handoff.answer(0, "done")) == (0, "done")
    code, why = handoff.parse_answer(handoff.answer(75, "ConnectionError:\nRedis\r\nis down"))
    assert (code, why) == (75, "ConnectionError: Redis is down")
    assert handoff.parse_answer(handoff.answer(75, "x" * 5000)) == (75, "x" * 1020)
    for garbage in (b"", b"1 done\n", b"hello\n", b"0done\n"):
        assert handoff.parse_answer(garbage)[0] == 75


def test_no_server_means_unavailable(tmp_path: Path) -> None:
    with pytest.raises(handoff.Unavailable):
        handoff.hand_off(str(tmp_path / "missing.sock"), "a@x.example", "b@x.example", MAIL)
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on any more
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()
    with pytest.raises(handoff.Unavailable):
        handoff.hand_off(str(stale), "a@x.example", "b@x.example", MAIL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[bytes, str, str]]]]:
    taken: list[tuple[bytes, str, str]] = []

    def take(raw: bytes, sender: str, recipient: str) -> tuple[int, str]:
        taken.append((raw, sender, recipient))
        if recipient.startswith("down"):
            return 75, "ConnectionError: Redis is down"
        if recipient.startswith("bug"):
            raise AssertionError("handle() never raises; the server must not die if it did")
        return 0, "done"

    path = tmp_path / "run/bounce/bounce.sock"
    running = Server(path, take, max_bytes=100_000)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, taken
    finally:
        running.shutdown()
        running.server_close()


def test_the_server_answers_with_what_it_did(
    server: tuple[Path, list[tuple[bytes, str, str]]],
) -> None:
    path, taken = server
    assert oct(path.parent.stat().st_mode & 0o777) == "0o750"  # root and the pipe's group
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    assert handoff.hand_off(str(path), "app@acme.example", "b+t@mta.acme.example", MAIL) == (
        0,
        "done",
    )
    assert taken == [(MAIL, "app@acme.example", "b+t@mta.acme.example")]
    assert handoff.hand_off(str(path), "", "down@x.example", MAIL) == (
        75,
        "ConnectionError: Redis is down",
    )


def test_bad_peers_get_75_and_the_server_goes_on(
    server: tuple[Path, list[tuple[bytes, str, str]]],
) -> None:
    path, taken = server
    for data in (b"hello\n", b"TXMAIL-BOUNCE/1 1 1 500000\nab", b"TXMAIL-BOUNCE/1 3 3 3\nab"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.settimeout(10)
            peer.connect(str(path))
            peer.sendall(data)
            peer.shutdown(socket.SHUT_WR)
            assert peer.makefile("rb").readline().startswith(b"75 ")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:  # a readiness check
        peer.connect(str(path))
    assert handoff.hand_off(str(path), "", "bug@x.example", MAIL)[0] == 75  # connection cut
    assert handoff.hand_off(str(path), "", "ok@x.example", MAIL) == (0, "done")
    assert [recipient for _, _, recipient in taken] == ["bug@x.example", "ok@x.example"]


def test_a_pipe_process_hands_over_without_loading_redis_or_the_parser(
    server: tuple[Path, list[tuple[bytes, str, str]]], tmp_path: Path
) -> None:
    path, taken = server
    config = tmp_path / "txmail.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[bounce_pipe]\nsocket = "{path}"\n')
    script = (
        "import sys; from txmail.bounce_pipe.__main__ import main; "
        "code = main(sys.argv[1:]); print(code, sorted(m for m in ('redis', "
        "'txmail.bounce_pipe.report', 'txmail.bounce_pipe.parse', 'email.parser') "
        "if m in sys.modules))"
    )
    for recipient, expected in (("b+t@mta.acme.example", "0 []"), ("down@x.example", "75 []")):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                "--config",
                str(config),
                "--",
                "app@acme.example",
                recipient,
            ],
            input=MAIL,
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.decode().strip() == expected, done.stderr
    assert b"try again later (exit 75): ConnectionError: Redis is down" in done.stderr
    assert [t[2] for t in taken] == ["b+t@mta.acme.example", "down@x.example"]
    assert taken[0][0] == MAIL


def test_a_pipe_process_with_nobody_listening_exits_75_and_parses_nothing(tmp_path: Path) -> None:
    """It can read no key any more: the mail waits in Postfix's queue until the recorder is
    back, rather than being parsed in the pipe process."""
    config = tmp_path / "txmail.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[bounce_pipe]\nsocket = "nobody.sock"\n')
    script = (
        "import sys; from txmail.bounce_pipe.__main__ import main; "
        "code = main(sys.argv[1:]); print(code, sorted(m for m in ('redis', "
        "'txmail.bounce_pipe.report', 'txmail.bounce_pipe.parse', 'email.parser') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "--config",
            str(config),
            "--",
            "app@acme.example",
            "b+t@mta.acme.example",
        ],
        input=MAIL,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.decode().strip() == "75 []", done.stderr
    assert b"try again later (exit 75): `txmail bounces serve` does not answer" in done.stderr
    for bad in (["--config", str(config), "--", "only-one@x.example"], []):  # still 0 or 75
        done = subprocess.run(
            [sys.executable, "-m", "txmail.bounce_pipe", *bad],
            input=MAIL,
            capture_output=True,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 75, done.stderr


def test_the_cli_command_hands_off_too(
    server: tuple[Path, list[tuple[bytes, str, str]]], tmp_path: Path
) -> None:
    """`txmail bounce-pipe` goes through the one hand-off of the pipe's entry point
    (__main__.run): the same answers, 0 or 75 whatever happens, no fallback."""
    from click.testing import CliRunner

    import txmail.bounce_pipe.__main__ as entry
    import txmail.bounce_pipe.report as recorder
    from txmail.cli import main as cli
    from txmail.config import Settings

    path, taken = server
    settings = Settings(state_dir=str(tmp_path / "nobody-listens"))
    assert entry.run(lambda: settings, ["", "b+t@mta.acme.example"], io.BytesIO(MAIL)) == 75
    assert entry.run(lambda: settings, ["only-one"], io.BytesIO(MAIL)) == 75

    def unreadable() -> Settings:
        raise OSError("no configuration")

    assert entry.run(unreadable, ["", "b+t@mta.acme.example"], io.BytesIO(MAIL)) == 75
    config = tmp_path / "txmail.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[bounce_pipe]\nsocket = "{path}"\n')
    runs: list[list[str]] = []
    real = entry.run

    def spy(load_settings: object, args: list[str], stdin: object = None) -> int:
        runs.append(args)
        return real(load_settings, args, stdin)  # type: ignore[arg-type]

    entry.run = spy  # type: ignore[assignment]
    try:
        done = CliRunner().invoke(
            cli,
            [
                "--config",
                str(config),
                "bounce-pipe",
                "--",
                "app@acme.example",
                "b+t@mta.acme.example",
            ],
            input=MAIL,
        )
    finally:
        entry.run = real  # type: ignore[assignment]
    assert done.exit_code == 0, done.output
    assert runs == [["app@acme.example", "b+t@mta.acme.example"]]
    assert taken[-1] == (MAIL, "app@acme.example", "b+t@mta.acme.example")
    assert not hasattr(recorder, "run")  # one hand-off, not two
