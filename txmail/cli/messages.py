"""`txmail messages show QUEUE_ID`: one message's record and its events, in order.

A tracked message with several recipients was split into per-recipient copies
(txmail/milter/copies.py): their events carry the client's queue id, so they are shown with it,
and the copies are listed (recipient -> the copy's own queue id). Asked for a copy's queue id, it
shows that copy and the events of its parent's id for the copy's recipient."""

from __future__ import annotations

import json
import time

import click

from txmail import store
from txmail.cli.events import format_event
from txmail.errors import NotFound
from txmail.events import Event
from txmail.store.messages import Messages

PAGE = 1000


def message_events(
    client: store.Client, keys: store.Keys, account: str, queue_id: str, since: float
) -> list[Event]:
    """The message's events in the order they were recorded, each once (a replayed dead
    letter appears in the stream twice)."""
    start = f"{max(int(since * 1000) - 60_000, 0)}-0"  # events follow acceptance
    found: dict[str, Event] = {}
    while True:
        with store.guard("reading events"):
            rows = store.decoded_entries(client.xrange(keys.events(account), min=start, count=PAGE))
        for _, fields in rows:
            raw = fields.get("event", "")
            if queue_id not in raw:
                continue
            try:
                event = Event.from_json(raw)
            except (ValueError, KeyError, TypeError):
                continue
            if event.message_id == queue_id:
                found.setdefault(event.id, event)
        if len(rows) < PAGE:
            return list(found.values())
        ms, seq = rows[-1][0].split("-")
        start = f"{ms}-{int(seq) + 1}"


@click.group("messages")
def messages() -> None:
    """Look up messages txmail accepted."""


@messages.command("show")
@click.argument("queue_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: object, queue_id: str, as_json: bool) -> None:
    """Print the record of QUEUE_ID (the id in `250 ... queued as`) and its events."""
    settings = obj.settings  # type: ignore[attr-defined]
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    record = Messages(client, keys, settings.milter.message_ttl_days * 86400).get(queue_id)
    if record is None:
        raise NotFound(
            f"no message {queue_id} (unknown, or older than "
            f"milter.message_ttl_days = {settings.milter.message_ttl_days})"
        )
    found = message_events(client, keys, record.account, record.message_id, record.accepted_at)
    if record.parent:
        found = [e for e in found if e.recipient.lower() in {r.lower() for r in record.recipients}]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "message": record.to_hash()
                    | {
                        "recipients": record.recipients,
                        "tags": record.tags,
                        "copies": record.copies,
                    },
                    "events": [json.loads(e.to_json()) for e in found],
                },
                indent=2,
            )
        )
        return
    accepted = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.accepted_at))
    click.echo(f"message {record.queue_id}")
    click.echo(f"  account:   {record.account}")
    click.echo(f"  accepted:  {accepted}")
    click.echo(f"  from:      <{record.envelope_sender}>")
    click.echo(f"  to:        {', '.join(f'<{r}>' for r in record.recipients)}")
    if record.parent:
        click.echo(f"  copy of:   {record.parent}{'   (the BCC copy)' if record.bcc else ''}")
    for recipient, copy_id in record.copies.items():
        click.echo(
            f"  copy:      <{recipient}> as {copy_id}"
            f"{'   (the BCC copy)' if recipient == record.bcc else ''}"
        )
    if record.return_path:
        click.echo(f"  return:    <{record.return_path}>")
    click.echo(f"  class:     {record.message_class}   tags: {', '.join(record.tags) or '-'}")
    click.echo(f"  size:      {record.size}")
    click.echo(f"events ({len(found)}):")
    for event in found:
        click.echo("  " + format_event(event))
        if event.details.get("diagnostic"):
            click.echo(f"      {event.details['diagnostic'][:200]}")


COMMANDS = [messages]
