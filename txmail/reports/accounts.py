"""An account's usage against its limits, warm-up and reputation, as `txmail stats`, `txmail
accounts show` and the console's accounts page show them (read with policyd's clock).

Reads: the account's usage, holds, warm-up and outcome counters (txmail/accounts/usage.py).
Fails: StoreUnavailable when Redis is down.
"""

from __future__ import annotations

from txmail import store
from txmail.accounts.records import Account
from txmail.accounts.usage import Usage, clock, read_usage
from txmail.config import Settings


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
