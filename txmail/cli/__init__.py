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
    """A click group that turns TxmailError into one line and an exit code, and loads each
    command's module only when that command is asked for (COMMAND_MODULES)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name)

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


# Each command and the modules that define it (the first has it in `COMMANDS = [...]`; the
# others add subcommands to its group). A module is imported only when one of its commands
# runs (or for --help), so `txmail bounces parse` does not pay for Redis, DNS and crypto
# libraries it never uses. Add yours here.
COMMAND_MODULES: dict[str, str | tuple[str, ...]] = {
    "init": "txmail.cli.init",
    "config": "txmail.cli.settings",
    "accounts": "txmail.cli.accounts",
    "up": "txmail.cli.daemons",
    "milter": "txmail.cli.daemons",
    "authsync": "txmail.cli.daemons",
    "capture": "txmail.cli.daemons",
    "socketmap": "txmail.cli.daemons",
    "policyd": "txmail.cli.policyd",
    "stats": "txmail.cli.policyd",
    "postfix": "txmail.cli.postfix",
    "domains": "txmail.cli.domains",
    "tracker": "txmail.cli.tracker",
    "authpolicy": "txmail.cli.authpolicy",
    "suppressions": "txmail.cli.suppressions",
    "bounces": ("txmail.cli.bounces", "txmail.cli.bouncepipe"),  # serve, unparsed
    "bounce-pipe": "txmail.cli.bouncepipe",
    "events": "txmail.cli.events",
    "maillog": "txmail.cli.events",
    "messages": "txmail.cli.messages",
    "webhooks": "txmail.cli.webhooks",
    "secrets": "txmail.cli.secrets",
    "doctor": "txmail.cli.doctor",
    "migrate": "txmail.cli.migrate",
    "backup": "txmail.cli.backup",
    "restore": "txmail.cli.backup",
    "health": "txmail.cli.health",
    "console": "txmail.cli.console",
}


def _load(name: str) -> click.Command | None:
    """The command `name`, its module imported now; None when there is no such command."""
    import importlib

    names = COMMAND_MODULES.get(name)
    if names is None:
        return None
    try:
        modules = [
            importlib.import_module(n) for n in ([names] if isinstance(names, str) else names)
        ]
    except (ImportError, SyntaxError) as exc:  # before or while click runs: exit 70, one line
        click.echo(_cannot_load(exc), err=True)
        sys.exit(70)
    return next((c for c in modules[0].COMMANDS if c.name == name), None)
