"""accounts.usage: an account's counted usage in Redis, its keys, the clock it goes by.

Every atomic operation is one script in txmail/store/scripts/ (policy_check, policy_commit,
policy_release), got from txmail.store.scripts, so the same call runs on one Redis and on a
Redis Cluster: all keys of one call carry the account's hash tag.

A message is counted at end of message, after every rule has passed: the milter does it in
its own round trip, through message_accept.lua with commit_call()'s arguments. count_accepted()
runs policy_commit.lua, which counts the same way; no daemon calls it any more, and it is kept
because tests/unit/store/test_message_accept.py compares the two and the policyd tests count
with it. Counting turns the message's hold into counted usage, so a message refused later
(by the milter or by Postfix) never uses up quota. policyd checks against the same buckets
(check_keys) and gives back holds (release). read_usage() reads the counters back for `txmail
stats` and `txmail accounts show`, in one pipeline, beside the account's limits and its
reputation judgements.

Fails: StoreUnavailable when Redis is down (the milter then answers 451 4.3.0).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from txmail.accounts import settings as account_settings
from txmail.accounts.limits import LIMITS, Windows, clock_time, warmup_day, warmup_quotas
from txmail.accounts.reputation import Outcomes, judge
from txmail.accounts.settings import AccountSettings
from txmail.config import Settings
from txmail.store import Client, Keys, guard, scripts

# Buckets outlive their window a little, so a count landing at the boundary is never lost.
BUCKET_TTL = {"m": 120, "h": 3600 + 300, "d": 86400 + 3600}


def usage_keys(keys: Keys, account: str, windows: Windows) -> list[str]:
    return [
        keys.usage(account, "m", windows.minute),
        keys.usage(account, "h", windows.hour),
        keys.usage(account, "d", windows.day),
    ]


def check_keys(keys: Keys, account: str, windows: Windows) -> list[str]:
    """KEYS of policy_check.lua."""
    return [
        *usage_keys(keys, account, windows),
        keys.holds(account),
        keys.holds_expiry(account),
        keys.warmup(account),
    ]


def clock(settings: Settings) -> float:
    """The time policyd and the count go by (the real clock plus policyd.clock_offset)."""
    return time.time() + settings.policyd.clock_offset


def commit_call(
    settings: Settings, keys: Keys, account: str, queue_id: str, recipients: int, size: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of policy_commit.lua for one accepted message (the milter passes them to
    message_accept.lua, which counts the same way: store.messages.Counting)."""
    windows = Windows.at(clock(settings))
    default_warmup = "1" if account_settings.spec("warmup").default else "0"
    return (
        [
            *usage_keys(keys, account, windows),
            keys.holds(account),
            keys.holds_expiry(account),
            keys.warmup(account),
            keys.account(account),
        ],
        [
            queue_id,
            windows.day,
            recipients,
            size,
            BUCKET_TTL["m"],
            BUCKET_TTL["h"],
            BUCKET_TTL["d"],
            default_warmup,
        ],
    )


def count_accepted(
    settings: Settings,
    client: Client,
    keys: Keys,
    account: str,
    queue_id: str,
    recipients: int,
    size: int,
) -> list[int]:
    """Count one accepted message; returns [messages, recipients, bytes, from_hold]."""
    call_keys, args = commit_call(settings, keys, account, queue_id, recipients, size)
    with guard(f"{queue_id}: counting the message against the sending limits"):
        counted = scripts.get(client, "policy_commit")(keys=call_keys, args=args)
    return [int(v) for v in counted]


def release(client: Client, keys: Keys, account: str, queue_id: str) -> bool:
    """Give back the hold of a message that was not counted; True if there was one."""
    with guard(f"{queue_id}: giving back a hold"):
        return bool(
            scripts.get(client, "policy_release")(
                keys=[keys.holds(account), keys.holds_expiry(account)], args=[queue_id]
            )
        )


@dataclass
class Usage:
    """An account's counted usage against each of its limits at one moment."""

    account: str
    limits: list[dict[str, Any]]  # unit, window, used, limit, resets
    in_flight: dict[str, int]  # messages, recipients, bytes held between end of data and count
    warmup: dict[str, Any] | None  # day, quota, used today; None when not warming up
    reputation: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(row: list[Any]) -> dict[str, int]:
    return {unit: int(row[i] or 0) for i, unit in enumerate(("messages", "recipients", "bytes"))}


def read_usage(
    client: Client, keys: Keys, account: str, settings: AccountSettings, created_at: str, now: float
) -> Usage:
    """Read the account's counters (one pipeline, one slot)."""
    windows = Windows.at(now)
    window_days = settings.reputation_window_days
    with guard(f"reading the usage of {account}"):
        pipe = client.pipeline(transaction=False)
        for key in usage_keys(keys, account, windows):
            pipe.hmget(key, "m", "r", "b")
        pipe.hmget(keys.holds(account), "*m", "*r", "*b")
        pipe.hmget(keys.warmup(account), "days", "last", "created")
        for back in range(window_days):
            pipe.hmget(
                keys.outcomes(account, windows.day - back), "delivered", "bounced", "complained"
            )
        rows = pipe.execute()
    counted = {"minute": _counts(rows[0]), "hour": _counts(rows[1]), "day": _counts(rows[2])}
    limits = []
    for unit, window, name in LIMITS:
        limits.append(
            {
                "unit": unit,
                "window": window,
                "used": counted[window][unit],
                "limit": int(getattr(settings, name)),
                "resets": clock_time(windows.reset(window)),
            }
        )
    warmup = None
    quotas = warmup_quotas(settings)
    if quotas:
        days, last, created = rows[4]
        if created != created_at:
            days, last = 0, None
        day = warmup_day(int(days or 0), int(last) if last else None, windows.day)
        warmup = {
            "day": day,
            "quota": quotas[day - 1] if day <= len(quotas) else None,
            "used": counted["day"]["recipients"],
            "days_in_schedule": len(quotas),
        }
    totals = [sum(int(row[i] or 0) for row in rows[5:]) for i in range(3)]
    outcomes = Outcomes(*totals)
    reputation = {
        "window_days": window_days,
        "delivered": outcomes.delivered,
        "bounced": outcomes.bounced,
        "complained": outcomes.complained,
        "judged": outcomes.total >= settings.reputation_min_recipients,
        "min_recipients": settings.reputation_min_recipients,
        "checks": [
            {
                "metric": j.metric,
                "rate": round(j.rate, 3),
                "threshold": j.threshold,
                "level": j.level,
            }
            for j in judge(outcomes, settings)
        ],
    }
    return Usage(
        account=account,
        limits=limits,
        in_flight=_counts(rows[3]),
        warmup=warmup,
        reputation=reputation,
    )
