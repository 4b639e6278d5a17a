"""txmail command line: thin click commands over the packages.

Every command takes --config FILE (or $TXMAIL_CONFIG, else ./txmail.toml). Errors are one line on
stderr, never a traceback: configuration and usage errors exit 2, a missing or conflicting
account or domain exits 1, Redis trouble exits 75 (EX_TEMPFAIL: try again later).
"""

from __future__ import annotations

import logging
import sys
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
]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        for command in importlib.import_module(name).COMMANDS:
            main.add_command(command)


_register()
