"""Attack: a bug in the parser of returned mail, exploited by a bounce from the internet.

Issue 15, finding 8. Whatever runs the parser's code must reach nothing worth having: the
parser workers of `txmail bounces serve` run as the unprivileged settings.user (group nogroup),
bounded, and that user can neither read the HMAC keys nor reach Redis (which runs as a user of
its own, on a socket only). Logs that name recipients and login names are 0640. A returned
mail is still recorded end to end.

Finding 11: a venv whose Python the unprivileged user cannot run is named, in one sentence
with the fix, before anything starts (it was `internal error: PermissionError`).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.test_events import Account, receiver  # noqa: F401 - the fixture
from txmail import config
from txmail.bounce_pipe import server as bounce_server
from txmail.errors import ConfigError
from txmail.stack import supervisor
from txmail_testing.harness import Sink, Stack, state_dir
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import socket, sys
for path in sys.argv[2:]:
    try:
        if path.endswith(".sock"):
            socket.socket(socket.AF_UNIX).connect(path)
        else:
            open(path, "rb").read(1)
        print("OPENED", path)
    except PermissionError:
        pass
"""


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def workers_of(server: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int(status(int(entry.name))["PPid"])
        except (OSError, KeyError, ValueError):
            continue
        if parent == server and b"txmail.bounce_pipe.worker" in argv:
            found.append(int(entry.name))
    return sorted(found)


def as_user(uid: int, gid: int, *paths: str) -> list[str]:
    """The paths a process of uid/gid (no other group) could open or connect to."""
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            PROBE,
            "-",
            *paths,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    return [line.split(" ", 1)[1] for line in probe.stdout.splitlines()]


def test_the_parsers_of_returned_mail_run_unprivileged_and_bounded(stack: Stack) -> None:
    settings = config.load(stack.config)
    user = pwd.getpwnam(settings.user)
    server = stack.pid_of("bounces", "serve")
    assert status(server)["Uid"].split()[0] == "0"  # the recorder holds the key and Redis
    workers = workers_of(server)
    assert len(workers) == settings.bounce_pipe.parser_workers
    for pid in workers:
        ids = status(pid)
        assert ids["Uid"].split() == [str(user.pw_uid)] * 4, pid
        assert ids["Gid"].split() == [str(grp.getgrnam("nogroup").gr_gid)] * 4, pid
        assert ids["Groups"] == ""
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert f"Max address space         {settings.bounce_pipe.parser_memory_mb << 20}" in (
            limits
        )
        assert "Max processes             0                    0" in limits
        # no key and no Redis connection among its open files: pipes and the log only
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            assert "secrets" not in target and "redis" not in target, target


def test_the_unprivileged_user_reaches_no_key_and_no_redis(stack: Stack) -> None:
    settings = config.load(stack.config)
    user = pwd.getpwnam(settings.user)
    keys = [
        str(settings.path(getattr(settings.secrets, name)))
        for name in ("bounce_key_file", "webhook_key_file", "tracking_key_file")
    ]
    redis_sock = str(stack.state / "run/redis/redis.sock")
    logs = [str(p) for p in (stack.state / "log").iterdir()]
    assert Path(redis_sock).is_socket() and all(Path(k).is_file() for k in keys)
    nogroup = grp.getgrnam("nogroup").gr_gid
    # as Postfix's pipe process runs (uid and group txmail), and as a parser worker does
    assert as_user(user.pw_uid, user.pw_gid, *keys, redis_sock, *logs) == []
    assert (
        as_user(
            user.pw_uid,
            nogroup,
            *keys,
            redis_sock,
            *logs,
            str(settings.path(settings.bounce_pipe.socket)),
        )
        == []
    )
    # ... while the pipe still reaches the recorder
    assert as_user(user.pw_uid, user.pw_gid, str(settings.path(settings.bounce_pipe.socket))) == [
        str(settings.path(settings.bounce_pipe.socket))
    ]
    # Redis runs as a user of its own and listens on no TCP port
    assert pwd.getpwuid(int(status(_redis_pid(stack))["Uid"].split()[0])).pw_name == (
        supervisor.redis_user(settings)
    )
    assert "\nport 0\n" in (stack.state / "redis/redis.conf").read_text()
    assert stat.S_IMODE((stack.state / "redis").stat().st_mode) == 0o700


def _redis_pid(stack: Stack) -> int:
    """The node's redis-server: the one holding files of STATE/redis open (its AOF)."""
    data = str(stack.state / "redis")
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            if any(os.readlink(fd).startswith(data) for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no redis-server has {data} open")


def test_logs_that_name_recipients_are_0640(stack: Stack) -> None:
    settings = config.load(stack.config)
    files = sorted(p for p in (stack.state / "log").iterdir() if p.is_file())
    assert settings.path(settings.postfix.maillog) in files
    # The components' own files exist with log.destination = "files" only (their mode is
    # checked in tests/e2e/test_logs.py); Postfix's maillog_file always.
    assert "postfix.log" in {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((stack.state / "log").stat().st_mode) & 0o007 == 0


def test_a_returned_mail_is_still_recorded_end_to_end(
    stack: Stack,
    sink: Sink,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    account = Account(stack, receiver)
    rcpt = f"gone-{account.name}@dest.example"
    queue_id = account.send([rcpt])
    account.wait("delivery", rcpt, queue_id)
    original = sink.find(rcpt)[-1]
    Sink.deliver(stack.smtp, "", original.sender, Sink.dsn(original, rcpt))
    event = account.wait("bounce", rcpt, queue_id)
    assert event["details"]["reason"] == "userunknown"
    assert [e["recipient"] for e in account.suppressed()] == [rcpt]


def unreachable_python(tmp_path: Path) -> Path:
    """A copy of this Python in a folder only root may enter (pyenv under /root)."""
    closed = tmp_path / "root-only"
    closed.mkdir(mode=0o700)
    python = closed / "python3"
    shutil.copy2(os.path.realpath(sys.executable), python)
    return python


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_an_interpreter_the_user_cannot_run_is_named_with_its_fix(tmp_path: Path) -> None:
    python = unreachable_python(tmp_path)
    with pytest.raises(ConfigError) as caught:
        bounce_server.check_interpreter("nobody", str(python))
    text = str(caught.value)
    assert "\n" not in text and text.count(". ") == 0  # one sentence
    assert f"the user nobody cannot run the Python interpreter {python}" in text
    assert "/usr/bin/python3 -m venv" in text
    bounce_server.check_interpreter("nobody", sys.executable)  # this one it can


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_txmail_up_says_so_before_starting_anything(tmp_path: Path) -> None:
    python = unreachable_python(tmp_path)
    state = state_dir("bad-python")
    try:
        subprocess.run(
            [sys.executable, "-m", "txmail", "init", "--state-dir", str(state)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        site = [p for p in sys.path if p.endswith("site-packages")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *site]))
        done = subprocess.run(
            [str(python), "-m", "txmail", "--config", str(state / "txmail.toml"), "up"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"cannot run the Python interpreter {python}" in done.stderr
        assert "internal error" not in done.stderr
        assert not (state / "run/redis/redis.sock").exists()
        assert not (state / "log/redis.log").exists()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def open_folder(group: int, mode: int) -> Path:
    """A folder under /tmp (whose parents every user may enter) of root:`group`."""
    folder = Path(tempfile.mkdtemp(prefix="txmail-python-", dir="/tmp"))
    os.chown(folder, 0, group)
    folder.chmod(mode)
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_an_interpreter_only_the_users_own_group_can_run_is_refused() -> None:
    """The workers run with group nogroup, not the user's group: a Python in a folder only
    that group may enter passes a check made with the user's group, and every worker fails."""
    user = pwd.getpwnam("daemon")  # a user whose group is not nogroup
    assert user.pw_gid != grp.getgrnam("nogroup").gr_gid
    folder = open_folder(user.pw_gid, 0o750)
    try:
        python = folder / "python3"
        python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        python.chmod(0o755)
        with pytest.raises(ConfigError) as caught:
            bounce_server.check_interpreter("daemon", str(python))
        text = str(caught.value)
        assert "\n" not in text and text.count(". ") == 0  # one sentence
        assert f"the user daemon cannot run the Python interpreter {python}" in text
        folder.chmod(0o755)  # every group may enter: the workers start
        bounce_server.check_interpreter("daemon", str(python))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_the_check_starts_a_worker_with_its_limits() -> None:
    """A worker's address space is bounded before it loads the parser: a limit too small to
    load it is found by `txmail up`, not by the first returned mail."""
    tiny = config.BouncePipeSettings(parser_memory_mb=16)
    with pytest.raises(ConfigError, match="a bounce parser started with it as that user"):
        bounce_server.check_interpreter("nobody", sys.executable, tiny)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_an_interpreter_that_hangs_is_named_not_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = open_folder(0, 0o755)
    try:
        python = folder / "python3"
        python.write_text("#!/bin/sh\nexec sleep 30\n")
        python.chmod(0o755)
        monkeypatch.setattr(bounce_server, "INTERPRETER_TIMEOUT", 1.0)
        with pytest.raises(ConfigError) as caught:
            bounce_server.check_interpreter("nobody", str(python))
        text = str(caught.value)
        assert "\n" not in text and text.count(". ") == 0
        assert f"with {python} had not loaded txmail after 1 seconds" in text
    finally:
        shutil.rmtree(folder, ignore_errors=True)
