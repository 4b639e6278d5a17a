"""Daily series of one account for the console's overview: what it sent and what became of it.

SYNOPSIS
    read_series(client, keys, account, now, days=30, tag=None) -> list[Day]
    read_overview(client, keys, account, now, days=30, tag=None) -> Overview

DESCRIPTION
    Nothing here counts anything: every number is read from counters that exist already.

      * per UTC day, from the daily counts hash (txmail/stats.py read_counts, PREFIX
        {ACCOUNT}:counts:YYYYMMDD): accepted (the milter's count of messages it accepted),
        delivery, bounce (hard), soft_bounce, complaint, open, click, blocked, overall or of
        one tag (tag:TAG:KIND fields);
      * per UTC day, the bounce and complaint rates as the reputation guard sees them
        (txmail/accounts/reputation.py, PREFIX {ACCOUNT}:outcomes:d:N, trusted outcomes
        only, kept 31 days): bounced / (delivered + bounced) and complained / (delivered +
        bounced), in percent. With a tag the guard's buckets do not apply (they are not kept
        per tag), so the rates are the tag's own bounce / (delivery + bounce) and complaint /
        (delivery + bounce) from its event counts; Overview.rates_source says which;
      * the account's suspension thresholds (max_bounce_rate, max_complaint_rate, percent),
        its reputation window and judgements, warm-up day and today's quota, and usage
        against every limit: accounts.usage.read_usage, as `txmail stats` shows them.

    A day without a number reads 0; a rate of a day without outcomes is None, not 0, so
    that such a day is not shown as a clean one (the chart leaves a gap, the table says "-").

    Reads: `days` HGETALLs (or HMGETs with a tag) and `days` HMGETs of outcome buckets, in
    two pipelines, plus read_usage's one pipeline. days is capped at stats.MAX_ANSWER_DAYS.

FAILURE
    StoreUnavailable when Redis is down; UsageError for a tag that no message could carry
    (stats.check_tag).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from txmail.accounts.records import Account
from txmail.accounts.reputation import BUCKET_TTL
from txmail.accounts.usage import Usage, read_usage
from txmail.stats import MAX_ANSWER_DAYS, check_tag, last_days, read_counts
from txmail.store import Client, Keys, guard

SHOWN = ("accepted", "delivery", "bounce", "soft_bounce", "complaint", "open", "click", "blocked")
DEFAULT_DAYS = 30
# The reputation guard's daily outcomes expire after this many days: older days have no rate.
RATES_KEPT_DAYS = int(BUCKET_TTL // 86400)


@dataclass
class Day:
    """One UTC day of one account (or of one of its tags)."""

    date: str  # YYYY-MM-DD
    counts: dict[str, int]  # every kind of SHOWN, 0 when none
    bounce_rate: float | None  # percent; None: no outcome that day
    complaint_rate: float | None


@dataclass
class Overview:
    account: str
    tag: str | None
    days: list[Day]
    rates_source: str  # "reputation" (the guard's trusted outcomes) or "tag" (its events)
    max_bounce_rate: float
    max_complaint_rate: float
    usage: Usage
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def dates(self) -> list[str]:
        return [day.date for day in self.days]

    def values(self, kind: str) -> list[int]:
        return [day.counts[kind] for day in self.days]

    def rates(self, which: str) -> list[float | None]:
        """`which` is "bounce" or "complaint"; None for a day without outcomes."""
        return [getattr(day, f"{which}_rate") for day in self.days]

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "tag": self.tag,
            "days": [
                {
                    "date": d.date,
                    "counts": d.counts,
                    "bounce_rate": d.bounce_rate,
                    "complaint_rate": d.complaint_rate,
                }
                for d in self.days
            ],
            "rates_source": self.rates_source,
            "max_bounce_rate": self.max_bounce_rate,
            "max_complaint_rate": self.max_complaint_rate,
            "usage": self.usage.as_dict(),
            "totals": self.totals,
        }


def _iso(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def _rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


def _day_number(day: str) -> int:
    """YYYYMMDD as the number of days since 1970 (the outcome buckets' numbering)."""
    date = datetime.date(int(day[:4]), int(day[4:6]), int(day[6:]))
    return (date - datetime.date(1970, 1, 1)).days


def _outcomes(client: Client, keys: Keys, account: str, days: list[str]) -> list[list[int]]:
    """[delivered, bounced, complained] of each day from the reputation guard's buckets."""
    with guard(f"reading the outcomes of {account}"):
        pipe = client.pipeline(transaction=False)
        for day in days:
            pipe.hmget(
                keys.outcomes(account, _day_number(day)), "delivered", "bounced", "complained"
            )
        rows = pipe.execute() if days else []
    return [[int(value or 0) for value in row] for row in rows]


def read_series(
    client: Client,
    keys: Keys,
    account: str,
    now: float,
    days: int = DEFAULT_DAYS,
    tag: str | None = None,
) -> list[Day]:
    """The last `days` UTC days of `account` up to today's, oldest first (see the module)."""
    tag = check_tag(tag) if tag is not None else None
    wanted = last_days(max(1, min(days, MAX_ANSWER_DAYS)), now)
    counts = read_counts(client, keys, account, wanted, tag)
    outcomes = None if tag is not None else _outcomes(client, keys, account, wanted)
    found = []
    for index, (day, kinds) in enumerate(counts.days):
        shown = {kind: int(kinds.get(kind, 0)) for kind in SHOWN}
        if outcomes is None:
            delivered, bounced, complained = shown["delivery"], shown["bounce"], shown["complaint"]
        else:
            delivered, bounced, complained = outcomes[index]
        base = delivered + bounced
        found.append(Day(_iso(day), shown, _rate(bounced, base), _rate(complained, base)))
    return found


def read_overview(
    client: Client,
    keys: Keys,
    account: Account,
    now: float,
    days: int = DEFAULT_DAYS,
    tag: str | None = None,
) -> Overview:
    """Everything the overview page draws for `account` (an Account record, for its settings
    and the creation time the warm-up state is checked against)."""
    series = read_series(client, keys, account.name, now, days, tag)
    usage = read_usage(client, keys, account.name, account.settings, repr(account.created_at), now)
    totals = {kind: sum(day.counts[kind] for day in series) for kind in SHOWN}
    return Overview(
        account=account.name,
        tag=check_tag(tag) if tag is not None else None,
        days=series,
        rates_source="reputation" if tag is None else "tag",
        max_bounce_rate=float(account.settings.max_bounce_rate),
        max_complaint_rate=float(account.settings.max_complaint_rate),
        usage=usage,
        totals=totals,
    )


@dataclass
class TagRow:
    tag: str
    counts: dict[str, int]  # over the days asked, every kind of SHOWN
    accepted_ever: int | None  # messages accepted with the tag since the account began


def read_tags(
    client: Client, keys: Keys, account: str, now: float, days: int = DEFAULT_DAYS
) -> list[TagRow]:
    """The tags `account`'s messages and events carried in the last `days` UTC days, with
    their counts over those days (stats.read_counts, one pipeline) and how many accepted
    messages ever carried each (PREFIX {ACCOUNT}:tags, the milter's count; one HMGET of
    these tags only). At most (events.tags_per_day + 1) x days tags, the folded bucket
    included; sorted by accepted messages, most first, then by name."""
    wanted = last_days(max(1, min(days, MAX_ANSWER_DAYS)), now)
    counts = read_counts(client, keys, account, wanted)
    names = list(counts.tags)
    with guard(f"reading the tag counts of {account}"):
        ever = client.hmget(keys.tag_counts(account), names) if names else []
    rows = [
        TagRow(
            tag=name,
            counts={kind: int(counts.tags[name].get(kind, 0)) for kind in SHOWN},
            accepted_ever=int(total) if total is not None else None,
        )
        for name, total in zip(names, ever, strict=True)
    ]
    rows.sort(key=lambda row: (-row.counts["accepted"], row.tag))
    return rows
