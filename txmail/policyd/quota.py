"""`txmail stats` and `txmail accounts show`: an account's usage against its limits, read back.

usage() reads an account's counters (accounts.usage's buckets, the holds in flight, the warm-up
state and the outcome buckets of the reputation window) in one pipeline and sets them beside
the account's limits (accounts.limits) and its reputation judgements (decide.judge).

It stays in policyd only until the reputation judgement has its home in the core
(accounts.reputation); then it joins the rest of accounts.usage.

Fails: StoreUnavailable when Redis is down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from txmail.accounts.limits import LIMITS, Windows, clock_time, warmup_day, warmup_quotas
from txmail.accounts.settings import AccountSettings
from txmail.accounts.usage import usage_keys
from txmail.policyd import decide
from txmail.store import Client, Keys, guard


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


def usage(
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
    outcomes = decide.Outcomes(*totals)
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
            for j in decide.judge(outcomes, settings)
        ],
    }
    return Usage(
        account=account,
        limits=limits,
        in_flight=_counts(rows[3]),
        warmup=warmup,
        reputation=reputation,
    )
