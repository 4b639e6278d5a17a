"""`txmail migrate`: bring the data in Redis to this release's schema (see txmail.store.schema)."""

from __future__ import annotations

import click

from txmail import store
from txmail.store import schema


@click.command("migrate")
@click.pass_obj
def migrate(obj: object) -> None:
    """Apply the schema migrations from the version in Redis to this release's, in order.
    Take a backup first (txmail backup FILE). Refused for data of a newer schema."""
    settings = obj.settings  # type: ignore[attr-defined]
    client = store.connect(settings)
    try:
        found, applied = schema.migrate(client, store.Keys(settings.redis.prefix))
    finally:
        client.close()
    if not applied:
        click.echo(f"schema {found}, nothing to do")
        return
    for step in applied:
        click.echo(f"schema {step.version}: {step.description}")
    click.echo(f"schema {found} -> {applied[-1].version}, done")


COMMANDS = [migrate]
