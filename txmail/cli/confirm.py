"""Confirmation for commands that delete: `--yes`, or a question when a person is at a terminal.

A command that deletes (an account, a login, a domain and its keys, a suppression, an API key,
a revoked HMAC key, data a restore overwrites) takes `--yes`. Without it, the command asks
on the terminal (click.confirm; anything but y stops it, exit 1); when standard input is not
a terminal (a script, cron, a pipe) nobody can answer, so it refuses with a sentence that
says to add --yes (exit 2) and deletes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from txmail.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


def yes_option(fn: F) -> F:
    """The `--yes` / `-y` flag, passed to the command as `yes`."""
    return click.option(
        "--yes",
        "-y",
        "yes",
        is_flag=True,
        help="Delete without asking (needed when standard input is not a terminal).",
    )(fn)


def interactive() -> bool:
    """True when a person can answer a question: standard input is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def confirm(yes: bool, what: str) -> None:
    """Go on when `yes`, or when the person at the terminal answers y to "WHAT?"; stop
    otherwise. `what` names what is deleted, e.g. "remove account acme and its logins"."""
    if yes:
        return
    if not interactive():
        raise UsageError(
            f"this would {what}, and standard input is not a terminal to ask on: "
            "add --yes to confirm"
        )
    click.confirm(f"{what[:1].upper()}{what[1:]}?", abort=True, err=True)
