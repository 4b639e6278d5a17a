"""`txmail policyd` (the policy daemon) and `txmail stats` (usage against each limit; with
--tag, the messages and events of one tag per UTC day, as GET /v1/stats?tag= gives them)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from txmail import store
from txmail.accounts.records import Account, Accounts
from txmail.accounts.usage import Usage
from txmail.config import Settings
from txmail.errors import UsageError
from txmail.reports.accounts import account_usage, warmup_line
from txmail.stats import COUNTED, Counts, check_tag, last_days, read_counts, since_days


def _settings(obj: object) -> Settings:
    return obj.settings  # type: ignore[attr-defined]


@click.command("policyd")
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.pass_obj
def policyd(obj: object, verbose: bool) -> None:
    """Run the policy daemon on its UNIX socket (normally started by `txmail up`)."""
    from txmail.cli.daemons import setup_logging
    from txmail.policyd import server

    setup_logging(_settings(obj), "policyd", verbose)
    server.serve(_settings(obj))


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
@click.option(
    "--tag",
    metavar="TAG",
    help="Instead: accepted messages and events of messages carrying TAG, per UTC day and "
    'kind ("(other, folded)": the tags past an account\'s events.tags_per_day of a day).',
)
@click.option(
    "--since",
    metavar="YYYY-MM-DD",
    help="With --tag: the first UTC day shown (default: 6 days ago, so 7 days).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def stats(obj: object, name: str | None, tag: str | None, since: str | None, as_json: bool) -> None:
    """Show each account's current usage against each of its sending limits, or with --tag
    the counts of one tag."""
    settings = _settings(obj)
    if since is not None and tag is None:
        raise UsageError("--since goes with --tag: the usage against limits is always now's")
    client = store.connect(settings)
    accounts = Accounts(client, store.Keys(settings.redis.prefix))
    if tag is not None:
        _tag_stats(settings, client, accounts, name, check_tag(tag), since, as_json)
        return
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


def _tag_stats(
    settings: Settings,
    client: store.Client,
    accounts: Accounts,
    name: str | None,
    tag: str,
    since: str | None,
    as_json: bool,
) -> None:
    """`txmail stats --tag`: each account's counts of `tag` (only the accounts that have
    some, unless one is named), never summed across accounts."""
    now = time.time()
    days = (
        since_days(since, now, settings.events.counter_days)
        if since is not None
        else last_days(7, now)
    )
    names = [accounts.get(name).name] if name else accounts.names()
    keys = store.Keys(settings.redis.prefix)
    found = [(n, read_counts(client, keys, n, days, tag)) for n in sorted(names)]
    if not name:
        found = [(n, counts) for n, counts in found if counts.totals]
    first = f"{days[0][:4]}-{days[0][4:6]}-{days[0][6:]}"
    if as_json:
        rows = [{"account": n, "since": first, **counts.as_json()} for n, counts in found]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo(f"No account has messages or events tagged {tag!r} since {first} (UTC).")
    for account_name, counts in found:
        click.echo(f"{account_name}: tag {tag!r} since {first} (UTC)")
        for line in tag_lines(counts):
            click.echo(line)


def tag_lines(counts: Counts) -> list[str]:
    """A table of `counts`: a row per day with counts, the kinds seen as columns, a total."""
    totals = counts.totals
    kinds = [k for k in COUNTED if totals.get(k)]
    if not kinds:
        return ["  nothing counted"]
    widths = [max(len(k), len(str(totals[k]))) for k in kinds]

    def row(first: str, cells: list[str]) -> str:
        return f"  {first:<10}  " + "  ".join(
            c.rjust(w) for c, w in zip(cells, widths, strict=True)
        )

    def numbers(values: dict[str, int]) -> list[str]:
        return [str(values.get(k, 0)) for k in kinds]

    lines = [row("date", kinds)]
    for day, values in counts.days:
        if values:
            lines.append(row(f"{day[:4]}-{day[4:6]}-{day[6:]}", numbers(values)))
    lines.append(row("total", numbers(totals)))
    return lines


COMMANDS = [policyd, stats]
