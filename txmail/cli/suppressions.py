"""`txmail suppressions`: an account's bounce and unsubscribe lists (see txmail.store.suppressions).

The milter leaves suppressed recipients out of every message. Entries come from hard bounces
(the bounce pipe), unsubscribes, and the operator through these commands; export writes JSON
lines that import reads back, so lists can move between relays.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

import click

from txmail import store
from txmail.accounts.records import Accounts
from txmail.cli.confirm import confirm, yes_option
from txmail.config import Settings
from txmail.store.suppressions import LISTS, SuppressionEntry, Suppressions

LIST_CHOICE = click.Choice(LISTS)


def _suppressions(obj: object, account: str) -> Suppressions:
    settings: Settings = obj.settings  # type: ignore[attr-defined]
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    Accounts(client, keys).get(account)  # NotFound for a mistyped account name
    return Suppressions(client, keys)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _line(entry: SuppressionEntry) -> str:
    return (
        f"{entry.list:12} {entry.recipient:40} {_when(entry.created_at)} "
        f"expires={_when(entry.expires_at)} {entry.reason}"
    )


@click.group("suppressions")
def suppressions() -> None:
    """Manage the recipients an account no longer sends to."""


@suppressions.command("list")
@click.option("--account", required=True, help="The account whose lists to show.")
@click.option("--list", "list_name", type=LIST_CHOICE, default=None, help="Only this list.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Show at most this many entries, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(obj: object, account: str, list_name: str | None, limit: int, as_json: bool) -> None:
    """List suppressed recipients, newest first."""
    entries = _suppressions(obj, account).list(account, list_name, limit=limit)
    if as_json:
        click.echo(json.dumps([e.public() for e in entries], indent=2))
        return
    for entry in entries:
        click.echo(_line(entry))


@suppressions.command("add")
@click.argument("recipients", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--account", required=True, help="The account that must not send to them.")
@click.option(
    "--list",
    "list_name",
    type=LIST_CHOICE,
    required=True,
    help="Which list: bounce or unsubscribe.",
)
@click.option(
    "--reason",
    default="added by the operator",
    show_default=True,
    help="Why (shown by list and export).",
)
@click.option(
    "--expires-in",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="DAYS",
    help="Drop the entry after this many days (default: never).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def add(
    obj: object,
    recipients: tuple[str, ...],
    account: str,
    list_name: str,
    reason: str,
    expires_in: float | None,
    as_json: bool,
) -> None:
    """Suppress ADDRESS... for an account."""
    lists = _suppressions(obj, account)
    expires_at = time.time() + expires_in * 86400 if expires_in else None
    entries = [lists.add(account, list_name, r, reason, expires_at=expires_at) for r in recipients]
    if as_json:
        click.echo(json.dumps([e.public() for e in entries], indent=2))
        return
    for entry in entries:
        click.echo(f"suppressed {entry.recipient} on {entry.list} for {account}")


@suppressions.command("remove")
@click.argument("recipients", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--account", required=True, help="The account whose list to change.")
@click.option(
    "--list",
    "list_name",
    type=LIST_CHOICE,
    required=True,
    help="Which list: bounce or unsubscribe.",
)
@yes_option
@click.pass_obj
def remove(
    obj: object, recipients: tuple[str, ...], account: str, list_name: str, yes: bool
) -> None:
    """Take ADDRESS... off a list, so the account may send to them again (asks first, unless
    --yes)."""
    lists = _suppressions(obj, account)
    shown = recipients[0] if len(recipients) == 1 else f"{len(recipients)} addresses"
    confirm(yes, f"take {shown} off the {list_name} list of {account}")
    for recipient in recipients:
        removed = lists.remove(account, list_name, recipient)
        click.echo(f"{'removed' if removed else 'not on the list:'} {recipient}")


@suppressions.command("export")
@click.option("--account", required=True, help="The account whose lists to write.")
@click.option("--list", "list_name", type=LIST_CHOICE, default=None, help="Only this list.")
@click.pass_obj
def export(obj: object, account: str, list_name: str | None) -> None:
    """Write every entry as one JSON object a line (what import reads)."""
    for line in _suppressions(obj, account).export(account, list_name):
        click.echo(line)


@suppressions.command("import")
@click.argument("source", type=click.File("r"), default="-")
@click.option("--account", required=True, help="The account whose lists to fill.")
@click.option(
    "--list",
    "list_name",
    type=LIST_CHOICE,
    default=None,
    help="List for lines that are bare addresses (JSON lines name their own).",
)
@click.option(
    "--reason", default="imported", show_default=True, help="Reason for lines that give none."
)
@click.pass_obj
def import_(obj: object, source: IO[str], account: str, list_name: str | None, reason: str) -> None:
    """Read entries from SOURCE (a file or -): export's JSON lines or one address a line.
    Every line is checked before anything is written."""
    count = _suppressions(obj, account).import_lines(
        account, source or sys.stdin, default_list=list_name, reason=reason
    )
    click.echo(f"imported {count} entries for {account}")


COMMANDS = [suppressions]
