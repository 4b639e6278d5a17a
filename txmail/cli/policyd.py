"""`txmail policyd` (the policy daemon) and `txmail stats` (usage against each limit)."""

from __future__ import annotations

import json
from typing import Any

import click

from txmail import store
from txmail.accounts.records import Account, Accounts
from txmail.accounts.usage import Usage, clock, read_usage
from txmail.config import Settings


def _settings(obj: object) -> Settings:
    return obj.settings  # type: ignore[attr-defined]


@click.command("policyd")
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.pass_obj
def policyd(obj: object, verbose: bool) -> None:
    """Run the policy daemon on its UNIX socket (normally started by `txmail up`)."""
    from txmail.cli.daemons import setup_logging
    from txmail.policyd import server

    setup_logging(verbose)
    server.serve(_settings(obj))


def account_usage(settings: Settings, client: store.Client, account: Account) -> Usage:
    """The account's usage now, by policyd's clock."""
    return read_usage(
        client,
        store.Keys(settings.redis.prefix),
        account.name,
        account.settings,
        repr(account.created_at),
        clock(settings),
    )


def today(settings: Settings, client: store.Client, account: Account) -> dict[str, Any]:
    """What `txmail accounts show` adds: the warm-up day and today's usage."""
    usage = account_usage(settings, client, account)
    counted = {row["unit"]: row["used"] for row in usage.limits if row["window"] == "day"}
    text = (
        f"{counted['messages']} messages, {counted['recipients']} recipients, "
        f"{counted['bytes']} bytes"
    )
    return {
        "warmup": usage.warmup,
        "warmup_text": warmup_line(usage),
        "today": counted,
        "today_text": text,
    }


def warmup_line(usage: Usage) -> str:
    """`day 3 of warm-up, 120 of 200 recipients today`, or why there is no quota."""
    warmup = usage.warmup
    if warmup is None:
        return "off"
    if warmup["quota"] is None:
        return (
            f"done (day {warmup['day']}, after {warmup['days_in_schedule']} days); "
            f"{warmup['used']} recipients today"
        )
    return f"day {warmup['day']} of warm-up, {warmup['used']} of {warmup['quota']} recipients today"


def usage_lines(usage: Usage) -> list[str]:
    lines = []
    for row in usage.limits:
        limit = row["limit"] or "no limit"
        lines.append(
            f"  {row['unit']:10} per {row['window']:6} {row['used']:>12} of "
            f"{limit:<12} resets {row['resets']}"
        )
    held = usage.in_flight
    lines.append(
        f"  in flight: {held['messages']} messages, {held['recipients']} recipients "
        "passed at end of data, not yet counted"
    )
    lines.append(f"  warm-up: {warmup_line(usage)}")
    reputation = usage.reputation
    judged = (
        ""
        if reputation["judged"]
        else f" (judged from {reputation['min_recipients']} recipients on)"
    )
    lines.append(
        f"  reputation, last {reputation['window_days']} days: "
        f"{reputation['delivered']} delivered, {reputation['bounced']} hard bounces, "
        f"{reputation['complained']} complaints{judged}"
    )
    for check in reputation["checks"]:
        lines.append(
            f"    {check['metric']} rate {check['rate']}% of max {check['threshold']}%"
            f": {check['level']}"
        )
    return lines


@click.command("stats")
@click.option("--account", "name", metavar="NAME", help="Only this account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def stats(obj: object, name: str | None, as_json: bool) -> None:
    """Show each account's current usage against each of its sending limits."""
    settings = _settings(obj)
    client = store.connect(settings)
    accounts = Accounts(client, store.Keys(settings.redis.prefix))
    chosen = [accounts.get(name)] if name else accounts.all()
    rows: list[dict[str, Any]] = []
    for account in chosen:
        usage = account_usage(settings, client, account)
        if as_json:
            rows.append({"status": account.status, **usage.as_dict()})
            continue
        click.echo(f"{account.name} ({account.status})")
        for line in usage_lines(usage):
            click.echo(line)
    if as_json:
        click.echo(json.dumps(rows, indent=2))


COMMANDS = [policyd, stats]
