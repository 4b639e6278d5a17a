"""`txmail doctor`: one line per thing on this node that would stop a feature from working."""

from __future__ import annotations

import sys

import click

from txmail.stack import doctor as doctor_mod


@click.command("doctor")
@click.option("--offline", is_flag=True, help="Do not look up the domains' DNS records.")
@click.pass_obj
def doctor(obj: object, offline: bool) -> None:
    """Check keys, the log the maillog follower reads, the sockets Postfix must reach, Redis,
    the daemons and the domains' DNS records; print each problem with its fix. Exits 1 if
    there is any, 0 with "all good" otherwise."""
    settings = obj.settings  # type: ignore[attr-defined]
    problems = doctor_mod.diagnose(settings, offline)
    for problem in problems:
        click.echo(problem.line())
    if problems:
        sys.exit(1)
    click.echo("all good")


COMMANDS = [doctor]
