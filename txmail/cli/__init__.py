"""txmail command line: thin click commands over the packages.

Every command takes --config FILE (or $TXMAIL_CONFIG, else ./txmail.toml). Errors are one line on
stderr, never a traceback: configuration and usage errors exit 2, a missing or conflicting
account or domain exits 1, Redis trouble exits 75 (EX_TEMPFAIL: try again later). A module of
txmail that cannot be loaded (a broken install or edit) stops every command with exit 70 and
one line naming its file and the cause.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from txmail import config as config_mod
from txmail.errors import (
    ConfigError,
    Conflict,
    NotFound,
    TemporaryFailure,
    TxmailError,
    UsageError,
)

EXIT_CODES: list[tuple[type[TxmailError], int]] = [
    (ConfigError, 2),
    (UsageError, 2),
    (NotFound, 1),
    (Conflict, 1),
    (TemporaryFailure, 75),
]
_SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds the txmail package


def _cannot_load(exc: ImportError | SyntaxError) -> str:
    """One line for a txmail module that cannot be loaded: the txmail file and line the
    failure comes from (what the traceback would show) and the cause."""
    if isinstance(exc, SyntaxError) and exc.filename:
        place: tuple[str, int | None] | None = (exc.filename, exc.lineno)
        cause = exc.msg
    else:
        ours = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if Path(frame.filename).resolve().is_relative_to(_SOURCE_ROOT / "txmail")
        ]
        place = (ours[-1].filename, ours[-1].lineno) if ours else None
        cause = str(exc)
    where = ""
    if place is not None:
        path = Path(place[0]).resolve()
        shown = path.relative_to(_SOURCE_ROOT) if path.is_relative_to(_SOURCE_ROOT) else path
        where = f"{shown} line {place[1]}: "
    return f"txmail: internal error: cannot load {where}{exc.__class__.__name__}: {cause}"


class Context:
    """What commands share: the config path, loaded on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_mod.find_config_file(config_path)
        self._settings: config_mod.Settings | None = None

    @property
    def settings(self) -> config_mod.Settings:
        if self._settings is None:
            self._settings = config_mod.load(self.config_path)
        return self._settings


class TxmailGroup(click.Group):
    """A click group that turns TxmailError into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TxmailError as exc:
            code = next((c for cls, c in EXIT_CODES if isinstance(exc, cls)), 1)
            click.echo(f"txmail: error: {exc}", err=True)
            sys.exit(code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except (ImportError, SyntaxError) as exc:  # a command's own imports (txmail milter)
            logging.getLogger("txmail").debug("cannot load", exc_info=True)
            click.echo(_cannot_load(exc), err=True)
            sys.exit(70)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks
            logging.getLogger("txmail").debug("internal error", exc_info=True)
            click.echo(f"txmail: internal error: {exc.__class__.__name__}: {exc}", err=True)
            sys.exit(70)


@click.group(cls=TxmailGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="TXMAIL_CONFIG",
    help="Configuration file (default: $TXMAIL_CONFIG, else ./txmail.toml).",
)
@click.version_option(package_name="txmail")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """txmail: a transactional outbound mail relay built on Postfix."""
    ctx.obj = Context(config_path)


# Modules that define one click command or group each, as `COMMANDS = [...]`. Add yours here.
COMMAND_MODULES = [
    "txmail.cli.init",
    "txmail.cli.settings",
    "txmail.cli.accounts",
    "txmail.cli.daemons",
    "txmail.cli.policyd",
    "txmail.cli.postfix",
    "txmail.cli.domains",
    "txmail.cli.tracker",
    "txmail.cli.authpolicy",
    "txmail.cli.suppressions",
    "txmail.cli.bounces",
    "txmail.cli.bouncepipe",
    "txmail.cli.events",
    "txmail.cli.messages",
    "txmail.cli.webhooks",
    "txmail.cli.secrets",
    "txmail.cli.doctor",
    "txmail.cli.migrate",
    "txmail.cli.backup",
]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except (ImportError, SyntaxError) as exc:  # before click runs: TxmailGroup cannot
            click.echo(_cannot_load(exc), err=True)
            sys.exit(70)
        for command in module.COMMANDS:
            main.add_command(command)


_register()
