"""`txmail health COMPONENT`: does one running component answer (txmail/stack/health.py)."""

from __future__ import annotations

import sys

import click


@click.command("health")
@click.argument("component")
@click.pass_obj
def health(obj: object, component: str) -> None:
    """Ask COMPONENT (milter, policyd, socketmap, tracker, authpolicy, bounce-pipe, redis,
    dovecot, postfix, rspamd, authsync, maillog, webhooks, capture) whether it answers on its
    socket or port: prints "ok" and exits 0, or says what failed and exits 1. For container
    health checks and monitoring."""
    from txmail.stack import health as health_mod

    failed = health_mod.check(obj.settings, component)  # type: ignore[attr-defined]
    if failed is None:
        click.echo(f"{component}: ok")
        return
    click.echo(f"txmail: {component} unhealthy: {failed}", err=True)
    sys.exit(1)


COMMANDS = [health]
