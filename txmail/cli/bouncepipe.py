"""`txmail bounce-pipe` (Postfix's pipe(8) transport), `txmail bounces serve` (the recorder the
pipe hands its mail to, with its unprivileged parser workers) and `txmail bounces unparsed`.

`bounce-pipe` only hands the mail to `bounces serve`, and exits 0 or 75 only, whatever happens
(run() in txmail/bounce_pipe/__main__.py, the one hand-off, which master.cf's entry point uses
too); it never goes through the CLI's usual error mapping, which would exit 1 or 2 and make
Postfix discard the bounce. `bounces unparsed` lists, shows and exports
the returned mail the pipe kept.
"""

from __future__ import annotations

import json
import sys
import time

import click

from txmail.cli.bounces import bounces
from txmail.errors import NotFound


@click.command("bounce-pipe", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="-- SENDER RECIPIENT")
@click.pass_obj
def bounce_pipe(obj: object, args: tuple[str, ...]) -> None:
    """Hand one returned mail on stdin for RECIPIENT to `bounces serve` (Postfix's pipe(8) runs
    it; exits 0 or 75)."""
    from txmail.bounce_pipe.__main__ import run

    sys.exit(run(lambda: obj.settings, list(args)))  # type: ignore[attr-defined]


@bounces.command("serve")
@click.pass_obj
def serve(obj: object) -> None:
    """Record the returned mail each bounce pipe hands over, parsed by unprivileged workers
    (run as root; normally started by `txmail up`)."""
    from txmail.bounce_pipe import server
    from txmail.cli.daemons import setup_logging

    setup_logging(obj.settings, "bounce-pipe")  # type: ignore[attr-defined]
    server.serve(obj.settings)  # type: ignore[attr-defined]


@bounces.command("unparsed")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@click.option("--show", "entry_id", metavar="ID", help="Print one kept mail as received.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def unparsed(obj: object, limit: int, entry_id: str | None, as_json: bool) -> None:
    """List the returned mail the bounce pipe could not read or match (kept, never dropped)."""
    from txmail import store
    from txmail.store import unparsed as unparsed_store

    settings = obj.settings  # type: ignore[attr-defined]
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    if entry_id:
        found = unparsed_store.get(client, keys, entry_id)
        if found is None:
            raise NotFound(f"no kept bounce with id {entry_id}")
        sys.stdout.buffer.write(found.raw)
        return
    for kept in unparsed_store.newest(client, keys, limit):
        if as_json:
            click.echo(json.dumps(kept.summary()))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(kept.received_at))
        click.echo(
            f"{kept.entry_id}  {when}Z  {kept.queue_id or '-':<16} "
            f"to=<{kept.recipient}> size={kept.size}  {kept.reason}"
        )


COMMANDS = [bounce_pipe]
