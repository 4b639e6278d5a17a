"""The processes of one txmail node and how to start, probe and stop each of them.

A Component knows three things: how to start its process, whether it is still alive, and
whether it accepts connections yet. The supervisor (supervisor.py) does the rest.

Postfix is special: `postfix start` daemonises, so its liveness is the master pid in
spool/pid/master.pid, and it is stopped with `postfix stop` (POSTFIX-NOTES §2).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from txmail.stack.relay import Routing


def can_connect_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def can_connect_unix(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def open_log(path: Path) -> BinaryIO:
    """`path` for appending, mode 0640 whether it is new or not: logs name recipients and
    login names, for root (and the file's group) only."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.fchmod(fd, 0o640)
    return os.fdopen(fd, "ab")


def drop_to(user: str | None, group: str | None) -> Callable[[], None] | None:
    """A preexec function that switches to `user` (and its group) or to `group` only."""
    if user is None and group is None:
        return None
    uid = pwd.getpwnam(user).pw_uid if user else None
    gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid  # type: ignore[arg-type]

    def switch() -> None:
        os.setsid()
        os.setgroups([gid])
        os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    return switch


class Component:
    name = "component"
    restarts = 0

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def ready(self) -> bool:
        return self.alive()

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def exit_status(self) -> str:
        return "exited"

    def where_logged(self) -> str:
        """Where its lines are, for a message that asks the operator to look."""
        return str(getattr(self, "log_path", "its log"))


class ProcessComponent(Component):
    """A foreground child process. Its output goes through `routing` (relay.py: the
    supervisor's standard error or STATE/log/NAME.log, named; TXMAIL_COMPONENT tells a txmail
    child its name); without one, straight into STATE/log/NAME.log."""

    routing: Routing | None = None

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
        user: str | None = None,
        group: str | None = None,
        umask: int | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._ready = ready
        self.env = env
        self.user, self.group, self.umask = user, group, umask
        self.proc: subprocess.Popen[bytes] | None = None

    def where_logged(self) -> str:
        return self.routing.where(self.name) if self.routing else str(self.log_path)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.env
        if self.routing is not None:
            read_end, write_end = os.pipe()
            log: BinaryIO = os.fdopen(write_end, "wb")
            env = dict(os.environ if env is None else env, TXMAIL_COMPONENT=self.name)
        else:
            read_end, log = -1, open_log(self.log_path)
        switch = drop_to(self.user, self.group)
        umask = self.umask

        def preexec() -> None:
            if switch is not None:
                switch()
            else:
                os.setsid()
            if umask is not None:
                os.umask(umask)

        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=preexec,
                close_fds=True,
            )
        except BaseException:
            if read_end >= 0:
                os.close(read_end)
            raise
        finally:
            log.close()
        if self.routing is not None:
            self.routing.follow(self.name, os.fdopen(read_end, "rb"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and self._ready()

    def exit_status(self) -> str:
        if self.proc is None or self.proc.returncode is None:
            return "not running"
        code = self.proc.returncode
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class PostfixComponent(Component):
    """The Postfix instance in STATE/postfix, started with `postfix -c DIR start`."""

    name = "postfix"

    def __init__(
        self, config_dir: Path, queue_dir: Path, listeners: list[tuple[str, int]], log_path: Path
    ) -> None:
        self.config_dir = config_dir
        self.pid_file = queue_dir / "pid/master.pid"
        self.listeners = listeners
        self.log_path = log_path

    def master_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _postfix(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.config_dir), action],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def start(self) -> None:
        self.stop()  # a master left over from a crashed supervisor would hold the ports
        result = self._postfix("start")
        if result.returncode != 0:
            raise RuntimeError(
                f"postfix start failed: {(result.stderr or result.stdout).strip()}"
                f" (see {self.log_path})"
            )
        deadline = time.monotonic() + 10
        while self.master_pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def alive(self) -> bool:
        pid = self.master_pid()
        return pid is not None and pid_alive(pid)

    def ready(self) -> bool:
        return self.alive() and all(can_connect_tcp(h, p) for h, p in self.listeners)

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.master_pid()
        if pid is None or not pid_alive(pid):
            return
        self._postfix("stop")
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
