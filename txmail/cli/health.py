"""`txmail health COMPONENT`: does one running component answer (txmail/health.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("health")
@click.argument("components", nargs=-1, metavar="[COMPONENT]...")
@click.pass_obj
def health(obj: object, components: tuple[str, ...]) -> None:
    """Ask each COMPONENT (milter, policyd, socketmap, tracker, authpolicy, bounce-pipe,
    redis, dovecot, postfix, rspamd, authsync, maillog, webhooks, capture; none: every one
    `txmail up` runs for this configuration) whether it answers on its socket or port:
    prints "NAME: ok" for each and exits 0, or says what failed and exits 1. For container
    health checks and monitoring."""
    from txmail import health as health_mod

    settings = obj.settings  # type: ignore[attr-defined]
    if not components:
        from txmail.stack.supervisor import build

        config_file = Path(obj.config_path)  # type: ignore[attr-defined]
        node = build(settings, config_file, dev=False, external_postfix=settings.external_postfix)
        components = tuple(c.name for c in node)
    failures = 0
    for component in components:
        failed = health_mod.check(settings, component)
        if failed is None:
            click.echo(f"{component}: ok")
        else:
            failures += 1
            click.echo(f"txmail: {component} unhealthy: {failed}", err=True)
    if failures:
        sys.exit(1)


COMMANDS = [health]
