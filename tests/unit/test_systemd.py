"""The systemd unit `txmail postfix install` writes (Type=notify, restart, sandbox) passes
`systemd-analyze verify`, and `up`'s ready step sends READY=1 to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from txmail.config import PostfixSettings, Settings
from txmail.stack import install, sdnotify, supervisor


def unit_for(state: Path) -> str:
    settings = Settings(
        state_dir=str(state),
        postfix=PostfixSettings(queue_directory=str(state / "queue")),
    )
    return install.systemd_unit(settings, state / "txmail.toml")


def test_unit_is_notify_restarts_on_failure_and_is_sandboxed() -> None:
    lines = unit_for(Path("/var/lib/txmail")).splitlines()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "ReadWritePaths=/var/lib/txmail /var/lib/txmail/queue/txmail -/var/lib/dovecot",
    ):
        assert line in lines
    assert "ProtectHome=yes" in lines
    # A state directory under /home stays visible.
    assert "ProtectHome=yes" not in unit_for(Path("/home/ops/txmail")).splitlines()
    assert "PrivateTmp=yes" not in unit_for(Path("/tmp/txmail-test")).splitlines()


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian's systemd package; `make deps` installs it)",
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "queue/txmail").mkdir(parents=True)
    (state / "txmail.toml").write_text("")
    unit = unit_for(state)
    # The unit names the txmail script beside this interpreter: verify checks it is executable.
    assert f"ExecStart={Path(sys.executable).with_name('txmail')} " in unit
    assert Path(sys.executable).with_name("txmail").exists()
    path = tmp_path / "txmail.service"
    path.write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"),
    )
    said = [line for line in (result.stdout + result.stderr).splitlines() if "txmail" in line]
    assert result.returncode == 0 and not said, result.stdout + result.stderr


def test_ready_step_sends_ready_to_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(address))
        systemd.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        notifier = sdnotify.Notifier.from_environ()
        assert "NOTIFY_SOCKET" not in os.environ  # the components never inherit it
        supervisor.announce_ready("txmail ready: smtp 127.0.0.1:25", notifier)
        assert systemd.recv(4096).decode().splitlines() == [
            "READY=1",
            "STATUS=txmail ready: smtp 127.0.0.1:25",
        ]
        assert notifier.stopping()
        assert systemd.recv(4096) == b"STOPPING=1"
    assert capsys.readouterr().out == "txmail ready: smtp 127.0.0.1:25\n"


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"txmail-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.Notifier.from_environ().send("READY=1")
        assert systemd.recv(100) == b"READY=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.Notifier.from_environ().ready("txmail ready")
    assert not sdnotify.Notifier("/nonexistent/notify").ready("x")  # refused: not fatal
