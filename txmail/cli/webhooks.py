"""`txmail webhooks`: the dispatcher, each account's endpoint, dead letters and replays."""

from __future__ import annotations

import json
import time

import click

from txmail import store
from txmail.accounts.records import Accounts
from txmail.errors import NotFound, UsageError
from txmail.events import Event, iso_timestamp, random_event_id
from txmail.store import secrets
from txmail.webhooks import signing


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
    settings = obj.settings  # type: ignore[attr-defined]
    client, keys = _store(obj)
    return signing.account_secrets(
        secrets.webhook_keys(settings, client),
        account,
        secrets.read_webhook_secret(client, keys, account),
        now,
    )


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
    import secrets as random_source

    _accounts(obj, account)
    client, keys = _store(obj)
    now = time.time()
    old = _account_secrets(obj, account, now)[0]
    fresh = random_source.token_bytes(32)
    secrets.store_webhook_secret(client, keys, account, fresh, old, now + overlap)
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
    import requests

    settings = obj.settings  # type: ignore[attr-defined]
    client, keys = _store(obj)
    target = Accounts(client, keys).get(account).webhook_url
    if not target:
        raise UsageError(
            f"account {account} has no webhook URL (txmail webhooks url {account} URL)"
        )
    now = time.time()
    event = Event(
        id=random_event_id(now),
        kind="test",
        recipient="",
        message_id="",
        timestamp=iso_timestamp(now),
        account=account,
        tags=[],
        details={"note": "a test event sent by `txmail webhooks test`"},
    )
    body = ('{"events":[' + event.to_json() + "]}").encode()
    secret_bytes = _account_secrets(obj, account, now)
    headers = signing.headers(secret_bytes, "msg_test_" + event.id[4:], int(now), body)
    try:
        response = requests.post(
            target,
            data=body,
            headers=headers,
            timeout=settings.webhooks.timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        click.echo(f"{account}: {target}: no answer ({exc.__class__.__name__})")
        raise SystemExit(1) from None
    click.echo(f"{account}: {target} answered {response.status_code} to event {event.id}")
    if not 200 <= response.status_code < 300:
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
    from txmail.events import WEBHOOK_GROUP

    client, keys = _store(obj)
    rows = []
    for name in _accounts(obj, account):
        state = client.hgetall(keys.webhook(name))
        waiting = 0
        for group in (
            client.xinfo_groups(keys.events(name)) if client.exists(keys.events(name)) else []
        ):
            if group["name"] == WEBHOOK_GROUP:
                waiting = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        rows.append(
            {
                "account": name,
                "url": store.decoded_or_none(client.hget(keys.account(name), "webhook_url")) or "",
                "disabled": bool(state.get("disabled")),
                "failing_since": float(state["failing_since"])
                if state.get("failing_since")
                else None,
                "attempts": int(state.get("attempts") or 0),
                "waiting": waiting,
                "dead_letters": int(client.xlen(keys.dead_letters(name))),
            }
        )
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
    from txmail.webhooks.server import dead_letters

    client, keys = _store(obj)
    for name in _accounts(obj, account):
        for letter in dead_letters(client, keys, name):
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
    from txmail.webhooks.server import replay

    client, keys = _store(obj)
    total = 0
    for name in _accounts(obj, account):
        moved = replay(client, keys, name, set(event_ids) if event_ids else None)
        if moved:
            click.echo(f"{name}: {moved} event(s) queued again")
        total += moved
    if not total:
        click.echo("no dead letters to replay")


COMMANDS = [webhooks]
