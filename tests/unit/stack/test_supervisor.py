"""The socket folders `txmail up` creates and gives to Postfix's group: only txmail's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from txmail.config import Settings
from txmail.errors import ConfigError
from txmail.stack import supervisor


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=str(tmp_path / "state"))


def test_the_default_socket_folders_are_below_run(settings: Settings) -> None:
    run = settings.state_path / "run"
    assert supervisor.postfix_socket_dirs(settings) == [
        run / "milter",
        run / "socketmap",
        run / "policyd",
    ]


def test_installed_sockets_in_the_queue_directorys_txmail_folder(
    settings: Settings, tmp_path: Path
) -> None:
    queue = tmp_path / "spool"
    folder = queue / "txmail"
    installed = dataclasses.replace(
        settings,
        postfix=dataclasses.replace(
            settings.postfix, config_directory=str(tmp_path / "etc"), queue_directory=str(queue)
        ),
        milter=dataclasses.replace(settings.milter, socket=str(folder / "milter.sock")),
        policyd=dataclasses.replace(settings.policyd, socket=str(folder / "policyd.sock")),
        domains=dataclasses.replace(settings.domains, socketmap=str(folder / "socketmap.sock")),
    )
    assert installed.sasl_socket == folder / "auth"
    assert supervisor.postfix_socket_dirs(installed) == [folder]


def test_the_bounce_recorders_socket_folder_is_checked_too(settings: Settings) -> None:
    socket = Path("/var/spool/postfix/bounce.sock")
    with pytest.raises(ConfigError, match=r"^bounce_pipe\.socket = '/var/spool/postfix/"):
        supervisor.socket_folder(settings, "bounce_pipe.socket", socket)


@pytest.mark.parametrize(
    "socket",
    [
        "/var/spool/postfix/milter.sock",  # the queue directory itself
        "{queue}/milter.sock",
        "run/milter.sock",  # run/ itself holds every daemon's folder
        "run/../milter/milter.sock",
        "/etc/milter.sock",
    ],
)
def test_a_socket_folder_that_is_not_txmails_is_refused(
    settings: Settings, tmp_path: Path, socket: str
) -> None:
    queue = tmp_path / "spool"
    configured = dataclasses.replace(
        settings,
        postfix=dataclasses.replace(settings.postfix, queue_directory=str(queue)),
        milter=dataclasses.replace(settings.milter, socket=socket.format(queue=queue)),
    )
    with pytest.raises(
        ConfigError,
        match=r"^milter\.socket = .* is in .*, a folder txmail does not manage; put the "
        r"socket in a folder below .*/run or in .*/spool/txmail$",
    ):
        supervisor.postfix_socket_dirs(configured)
