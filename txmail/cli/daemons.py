"""The long-running txmail processes: up, milter, authsync, capture, bounce-pipe."""

from __future__ import annotations

import sys

import click

from txmail import logs
from txmail.config import Settings


def setup_logging(settings: Settings, component: str, verbose: bool = False) -> None:
    """Standard error in log.format, as `component` (TXMAIL_COMPONENT, which `txmail up` sets
    for each child, wins); `txmail up` takes it from there (log.destination)."""
    logs.setup(settings.log.format, component, verbose)


def _settings(obj: object) -> Settings:
    return obj.settings  # type: ignore[attr-defined]


@click.command("up")
@click.option(
    "--dev",
    is_flag=True,
    help="Also run a local capture SMTP server as relayhost and create a demo account.",
)
@click.option(
    "--external-postfix",
    is_flag=True,
    help="Run every txmail daemon but not Postfix: the operator's Postfix, set up "
    "with `txmail postfix install`, talks to them.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="COMPONENT",
    help="Run only this component (repeat for more), e.g. one per container.",
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.pass_obj
def up(
    obj: object, dev: bool, external_postfix: bool, only: tuple[str, ...], verbose: bool
) -> None:
    """Start and supervise the whole node in the foreground until SIGINT/SIGTERM."""
    from txmail.bounce_pipe.server import check_start
    from txmail.stack import supervisor

    settings = _settings(obj)
    setup_logging(settings, "up", verbose)
    sys.exit(
        supervisor.up(
            settings,
            obj.config_path,  # type: ignore[attr-defined]
            dev,
            external_postfix,
            only,
            checks=(check_start,),
        )
    )


@click.command("milter")
@click.pass_obj
def milter(obj: object) -> None:
    """Run the txmail milter on its UNIX socket (normally started by `txmail up`)."""
    from txmail.milter import server

    setup_logging(_settings(obj), "milter")
    server.serve(_settings(obj))


@click.command("authsync")
@click.pass_obj
def authsync(obj: object) -> None:
    """Keep Dovecot's passwd-file in sync with the accounts in Redis."""
    from txmail.authsync import server as authsync_server

    setup_logging(_settings(obj), "authsync")
    authsync_server.serve(_settings(obj))


@click.command("capture")
@click.pass_obj
def capture(obj: object) -> None:
    """Run the --dev capture SMTP server that stores every delivered message."""
    from txmail.stack import capture as capture_mod

    setup_logging(_settings(obj), "capture")
    settings = _settings(obj)
    capture_mod.serve(
        settings.path(settings.dev.capture_dir), "127.0.0.1", settings.dev.capture_port
    )


@click.command("socketmap")
@click.pass_obj
def socketmap(obj: object) -> None:
    """Tell Postfix the return-path domains from Redis (normally started by `txmail up`)."""
    from txmail.socketmap import server as socketmap_server

    setup_logging(_settings(obj), "socketmap")
    socketmap_server.serve(_settings(obj))


COMMANDS = [up, milter, authsync, capture, socketmap]
