"""`txmail authpolicy`: the per-login password-guessing limit Dovecot asks (txmail/authpolicy)."""

from __future__ import annotations

import click


@click.command("authpolicy")
@click.pass_obj
def authpolicy(obj: object) -> None:
    """Run the password-guessing limit Dovecot asks before each login (started by `txmail up`)."""
    from txmail.authpolicy import server
    from txmail.cli.daemons import setup_logging

    setup_logging(obj.settings, "authpolicy")  # type: ignore[attr-defined]
    server.serve(obj.settings)  # type: ignore[attr-defined]


COMMANDS = [authpolicy]
