"""`txmail console`: the web console's operator tokens."""

from __future__ import annotations

import time

import click

from txmail import store
from txmail.errors import UsageError
from txmail.store import secrets
from txmail.tokens.console import ConsoleSigner

MAX_HOURS = 24 * 7


@click.group("console")
def console_group() -> None:
    """The web console at /console/ on the tracker (listen.http)."""


@console_group.command("token")
@click.option(
    "--hours",
    type=float,
    default=None,
    help="Hours the token may be used to log in (default: console.token_hours; at most 168).",
)
@click.pass_obj
def token(obj: object, hours: float | None) -> None:
    """Print a signed operator token for the console's login page, once: whoever holds it
    can log in as the operator and see every account until it expires. The session it opens
    lasts console.session_hours. `txmail secrets rotate console --revoke` makes every token
    and session invalid at once."""
    settings = obj.settings  # type: ignore[attr-defined]
    hours = settings.console.token_hours if hours is None else hours
    if not 0 < hours <= MAX_HOURS:
        raise UsageError(f"--hours must be more than 0 and at most {MAX_HOURS}")
    client = store.connect(settings)
    signer = ConsoleSigner(lambda: (secrets.current(settings, client, "console_key_file"),))
    expires = time.time() + hours * 3600
    click.echo(signer.sign_operator(expires))
    when = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(expires))
    click.echo(f"(an operator token, valid until {when}: keep it secret)", err=True)


COMMANDS = [console_group]
