"""`txmail webhooks`: the dispatcher, each account's endpoint, dead letters and replays."""

from __future__ import annotations

import json
import time

import click

from txmail import store
from txmail import webhook_endpoints as endpoints
from txmail.accounts.records import Accounts
from txmail.errors import NotFound
from txmail.events import iso_timestamp
from txmail.tokens import webhooks as signing


def _store(obj: object) -> tuple[store.Client, store.Keys]:
    settings = obj.settings  # type: ignore[attr-defined]
    return store.connect(settings), store.Keys(settings.redis.prefix)


def _accounts(obj: object, account: str | None) -> list[str]:
    client, keys = _store(obj)
    names = Accounts(client, keys).names()
    if account is None:
        return names
    if account not in names:
        raise NotFound(f"no account named {account!r}")
    return [account]


@click.group("webhooks")
def webhooks() -> None:
    """Post every account's events to its webhook URL; inspect and replay dead letters."""


@webhooks.command("run")
@click.pass_obj
def run(obj: object) -> None:
    """Run the dispatcher in the foreground (normally started by `txmail up`)."""
    from txmail.cli.daemons import setup_logging
    from txmail.webhooks import server

    setup_logging(obj.settings, "webhooks")  # type: ignore[attr-defined]
    server.serve(obj.settings)  # type: ignore[attr-defined]


@webhooks.command("url")
@click.argument("account")
@click.argument("url", required=False, default="")
@click.pass_obj
def url(obj: object, account: str, url: str) -> None:
    """Set (or with no URL, remove) where ACCOUNT's events are posted."""
    client, keys = _store(obj)
    Accounts(client, keys).set_webhook_url(account, url)
    click.echo(f"{account}: webhook url {url or '(none)'}")


@webhooks.command("secret")
@click.argument("account")
@click.pass_obj
def secret(obj: object, account: str) -> None:
    """Print ACCOUNT's signing secret (whsec_...), for its receiver to verify posts."""
    _accounts(obj, account)
    click.echo(signing.secret_text(_account_secrets(obj, account, time.time())[0]))


def _account_secrets(obj: object, account: str, now: float) -> tuple[bytes, ...]:
    """What ACCOUNT's posts are signed with now, the current secret first."""
    client, keys = _store(obj)
    return endpoints.account_secrets(obj.settings, client, keys, account, now)  # type: ignore[attr-defined]


@webhooks.command("rotate-secret")
@click.argument("account")
@click.option(
    "--overlap",
    type=click.FloatRange(min=0),
    default=86400.0,
    show_default=True,
    help="Seconds during which posts carry the old signature beside the new one.",
)
@click.pass_obj
def rotate_secret(obj: object, account: str, overlap: float) -> None:
    """Give ACCOUNT a new signing secret and print it; for OVERLAP seconds every post carries
    a signature with the old secret too, so receivers can switch without losing posts."""
    _accounts(obj, account)
    client, keys = _store(obj)
    fresh = endpoints.rotate_secret(obj.settings, client, keys, account, overlap)  # type: ignore[attr-defined]
    click.echo(signing.secret_text(fresh))
    click.echo(
        f"{account}: posts carry signatures with the old and the new secret for "
        f"{overlap:.0f} s, then only the new one",
        err=True,
    )


@webhooks.command("test")
@click.argument("account")
@click.pass_obj
def test(obj: object, account: str) -> None:
    """Post one signed test event to ACCOUNT's webhook URL now and print the answer."""
    client, keys = _store(obj)
    answer = endpoints.post_test_event(
        obj.settings,  # type: ignore[attr-defined]
        client,
        keys,
        account,
        "a test event sent by `txmail webhooks test`",
    )
    if answer.status is None:
        click.echo(f"{account}: {answer.url}: {answer.error}")
        raise SystemExit(1)
    click.echo(f"{account}: {answer.url} answered {answer.status} to event {answer.event_id}")
    if not answer.ok:
        raise SystemExit(1)


@webhooks.command("enable")
@click.argument("account")
@click.pass_obj
def enable(obj: object, account: str) -> None:
    """Turn ACCOUNT's endpoint back on after a 410 Gone disabled it."""
    client, keys = _store(obj)
    _accounts(obj, account)
    client.hdel(keys.webhook(account), "disabled", "disabled_by")
    click.echo(f"{account}: webhook endpoint enabled")


@webhooks.command("status")
@click.option("--account", help="Only this account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(obj: object, account: str | None, as_json: bool) -> None:
    """Show each endpoint: URL, enabled, retry state, events waiting, dead letters."""
    client, keys = _store(obj)
    rows = [
        endpoints.endpoint_state(client, keys, name).public() for name in _accounts(obj, account)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['account']}: {row['url'] or '(no url)'} "
            f"{'DISABLED ' if row['disabled'] else ''}waiting={row['waiting']} "
            f"dead={row['dead_letters']} failed_attempts={row['attempts']}"
        )


@webhooks.command("dead-letters")
@click.option("--account", help="Only this account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def dead_letters_command(obj: object, account: str | None, as_json: bool) -> None:
    """List the events that could not be delivered (oldest first)."""
    client, keys = _store(obj)
    for name in _accounts(obj, account):
        for letter in endpoints.dead_letters(client, keys, name):
            if as_json:
                click.echo(json.dumps(letter.public()))
                continue
            event = letter.event
            click.echo(
                f"{name} {event.id} {event.kind} {event.message_id} "
                f"to=<{event.recipient}> failed {iso_timestamp(letter.failed_at)}: "
                f"{letter.error}"
            )


@webhooks.command("replay")
@click.option("--account", help="Only this account.")
@click.option(
    "--event",
    "event_ids",
    multiple=True,
    metavar="ID",
    help="Only this event id (repeat for more).",
)
@click.pass_obj
def replay_command(obj: object, account: str | None, event_ids: tuple[str, ...]) -> None:
    """Send dead letters again (same event ids) and turn their endpoints back on."""
    client, keys = _store(obj)
    total = 0
    for name in _accounts(obj, account):
        moved = endpoints.replay(client, keys, name, set(event_ids) if event_ids else None)
        if moved:
            click.echo(f"{name}: {moved} event(s) queued again")
        total += moved
    if not total:
        click.echo("no dead letters to replay")


COMMANDS = [webhooks]
