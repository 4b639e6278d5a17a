"""`txmail events tail` (watch the event streams) and `txmail maillog` (the log follower)."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from txmail import store
from txmail.accounts.records import Accounts
from txmail.errors import NotFound, UsageError
from txmail.events import KINDS, Event
from txmail.stats import check_tag


def format_event(event: Event) -> str:
    details = event.details
    extra = " ".join(f"{k}={details[k]}" for k in ("status", "reason") if details.get(k))
    untrusted = "" if event.trusted else " UNTRUSTED"
    return (
        f"{event.timestamp} {event.account} {event.message_id or '-'} {event.kind:<11} "
        f"to=<{event.recipient}> {extra}{untrusted} id={event.id}"
    ).rstrip()


@click.group("events")
def events() -> None:
    """Read the accounts' event streams."""


@events.command("tail")
@click.option("--account", help="Only this account (default: every account).")
@click.option(
    "--kind", type=click.Choice(KINDS), multiple=True, help="Only this kind (repeat for more)."
)
@click.option(
    "--tag",
    multiple=True,
    metavar="TAG",
    help="Only events of messages carrying this tag (repeat for any of several).",
)
@click.option(
    "-n",
    "--count",
    default=20,
    show_default=True,
    help="How many recent events to print first (per account).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they come.")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
@click.pass_obj
def tail(
    obj: object,
    account: str | None,
    kind: tuple[str, ...],
    tag: tuple[str, ...],
    count: int,
    follow: bool,
    as_json: bool,
) -> None:
    """Print the newest events, oldest first; with --follow, then every new one. With --kind
    or --tag the newest 5 x COUNT events of each account are looked at for the COUNT shown."""
    settings = obj.settings  # type: ignore[attr-defined]
    if count < 0:
        raise UsageError("--count must not be negative")
    tags = {check_tag(t) for t in tag}

    def wanted(event: Event) -> bool:
        return (not kind or event.kind in kind) and (not tags or not tags.isdisjoint(event.tags))

    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    names = Accounts(client, keys).names()
    if account is not None:
        if account not in names:
            raise NotFound(f"no account named {account!r}")
        names = [account]

    def show(raw: str) -> None:
        try:
            event = Event.from_json(raw)
        except (ValueError, KeyError, TypeError):
            return
        if not wanted(event):
            return
        click.echo(event.to_json() if as_json else format_event(event))

    last: dict[str, str] = {}
    recent: list[tuple[str, str]] = []
    for name in names:
        with store.guard("reading events"):
            rows = store.decoded_entries(
                client.xrevrange(keys.events(name), count=count * 5 if kind or tags else count)
            )
        last[name] = rows[0][0] if rows else "0-0"
        recent.extend((entry_id, fields.get("event", "")) for entry_id, fields in rows)
    shown = sorted(recent)
    if kind or tags:
        shown = [r for r in shown if _wanted_raw(r[1], wanted)]
    for _, raw in shown[-count:] if count else []:
        show(raw)
    while follow:
        with store.guard("reading events"):
            replies = store.decoded_streams(
                client.xread({keys.events(n): last[n] for n in names}, block=1000, count=500)
                if names
                else []
            )
        if not names:
            time.sleep(1)
            names = Accounts(client, keys).names() if account is None else names
            last.update({n: last.get(n, "0-0") for n in names})
            continue
        for stream, rows in replies or []:
            name = stream.split("{", 1)[1].split("}", 1)[0]
            for entry_id, fields in rows:
                last[name] = entry_id
                show(fields.get("event", ""))


def _wanted_raw(raw: str, wanted: Callable[[Event], bool]) -> bool:
    try:
        return wanted(Event.from_json(raw))
    except (ValueError, KeyError, TypeError):
        return False


@click.command("maillog")
@click.pass_obj
def maillog(obj: object) -> None:
    """Follow Postfix's maillog and record delivery and deferral events (run by `txmail up`)."""
    from txmail.cli.daemons import setup_logging
    from txmail.maillog.server import serve

    setup_logging(obj.settings, "maillog")  # type: ignore[attr-defined]
    serve(obj.settings)  # type: ignore[attr-defined]


COMMANDS = [events, maillog]
