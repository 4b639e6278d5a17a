"""Per-day counts of an account: accepted messages and events by kind, overall and per tag.

SYNOPSIS
    count_accepted(pipe, keys, account, tags, now, counter_days, tags_per_day)
    days = since_days("2026-12-01", now, counter_days)       # or last_days(7, now)
    read_counts(client, keys, account, days, tag=None) -> Counts
    Counts.as_json() -> {"days": [{"date", "counts"}], "totals", "tags" | "tag"}

DESCRIPTION
    PREFIX {ACCOUNT}:counts:YYYYMMDD (one hash per account and UTC day, kept
    events.counter_days) holds:
      KIND                 events of that kind recorded that day (txmail/events.py, in
                           event_record.lua), and "accepted": messages the milter accepted
                           (count_accepted(), tags_count.lua; the milter counts the same
                           way in message_accept.lua, in the call that writes the message
                           record);
      tag:TAG:KIND         the same, for events and messages carrying TAG;
      distinct:TAG         marks TAG as one of the day's counted tags; "distinct" counts them.

    Tags are bounded by the milter (at most 10 of 64 characters a message), and per account
    and day only the first events.tags_per_day distinct tags get counters of their own: once
    the day has that many, every other tag of that day is counted under OTHER ("(other,
    folded)"), once per message or event however many of its tags were folded. OTHER has a
    comma, which no tag can have (a comma separates tags in the headers; the API refuses
    one), so no client's tag is ever counted as the folded bucket or shown as it. A day's
    hash therefore holds at most (tags_per_day + 1) x (kinds + 1) tag counters, so neither
    a client minting a tag per message nor a long retention can grow Redis without bound.
    An open or click counts every time it happens (events.py), the other kinds once per
    recipient.

    read_counts() reads one hash per day in one pipeline (HMGET of the tag's fields when a
    tag is asked, else HGETALL), so a request costs at most counter_days reads.

FAILURE
    StoreUnavailable from read_counts() when Redis is down; UsageError from since_days() for
    a date that is not YYYY-MM-DD, is in the future or is older than the counters are kept.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass, field
from typing import Any

from txmail.errors import UsageError
from txmail.events import KINDS
from txmail.store import Client, Keys, guard, scripts
from txmail.tags import MAX_LENGTH as MAX_TAG_LENGTH

ACCEPTED = "accepted"
COUNTED = (ACCEPTED, *KINDS)  # what a day's hash counts, in the order they are shown
OTHER = "(other, folded)"  # store/scripts/*.lua write it too; no tag has a comma
DEFAULT_TAGS_PER_DAY = 100
MAX_ANSWER_DAYS = 90  # days of one GET /v1/stats answer, asked by `days` or `since`
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def check_tag(tag: str) -> str:
    """`tag` as a filter or a question: one tag as a message carries it, or OTHER (the
    folded tags), else UsageError."""
    tag = tag.strip()
    if tag == OTHER:
        return tag
    if not 0 < len(tag) <= MAX_TAG_LENGTH or not tag.isprintable() or "," in tag:
        raise UsageError(
            f"tag must be one tag as messages carry it: 1 to {MAX_TAG_LENGTH} printable "
            "characters without a comma"
        )
    return tag


def tags_count_call(
    keys: Keys,
    account: str,
    now: float,
    counter_days: int,
    tags_per_day: int = DEFAULT_TAGS_PER_DAY,
) -> tuple[str, list[Any]]:
    """The key and the first ARGV of tags_count.lua (before the tags) for one accepted message
    of `account` on the UTC day of `now`; the milter passes them to message_accept.lua, which
    counts the same way (store.messages.Counting)."""
    return keys.event_counts(account, _day(now)), [
        counter_days * 86400,
        max(0, tags_per_day),
        ACCEPTED,
    ]


def count_accepted(
    pipe: Any,
    keys: Keys,
    account: str,
    tags: list[str],
    now: float,
    counter_days: int,
    tags_per_day: int = DEFAULT_TAGS_PER_DAY,
) -> None:
    """Queue on `pipe` the count of one accepted message of `account` with `tags` on the UTC
    day of `now` (store/scripts/tags_count.lua); the caller executes the pipeline. The milter
    no longer calls it: it counts the same way inside message_accept.lua (Messages.accept).
    It is kept because tests/unit/store/test_message_accept.py compares the two, and tests
    and bench/milter_store.py use it to write a day's counts as the milter does. EVAL with the
    script's text through execute_command: no NOSCRIPT repair inside a pipeline, and a cluster
    pipeline routes it."""
    key, args = tags_count_call(keys, account, now, counter_days, tags_per_day)
    pipe.execute_command("EVAL", scripts.text("tags_count"), 1, key, *args, *tags)


def _day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


def last_days(count: int, now: float) -> list[str]:
    """The last `count` UTC days up to today's, oldest first, as YYYYMMDD."""
    return [_day(now - 86400 * back) for back in range(count - 1, -1, -1)]


def since_days(since: str, now: float, counter_days: int, most: int | None = None) -> list[str]:
    """The UTC days from `since` (YYYY-MM-DD) to today, as YYYYMMDD; a clear UsageError for
    a date that is malformed, in the future, older than the counters are kept or (`most`)
    more days back than one answer covers."""
    try:
        first = datetime.date.fromisoformat(since) if DATE.match(since) else None
    except ValueError:
        first = None
    if first is None:
        raise UsageError(f"since must be a date as YYYY-MM-DD, not {since[:40]!r}")
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    if first > today:
        raise UsageError(f"since must not be after today ({today.isoformat()}, UTC)")
    span = (today - first).days + 1
    if most is not None and most < counter_days and span > most:
        oldest = today - datetime.timedelta(days=most - 1)
        raise UsageError(
            f"since must be {oldest.isoformat()} or later: one answer covers at most {most} "
            "days, today included"
        )
    if span > counter_days:
        oldest = today - datetime.timedelta(days=counter_days - 1)
        raise UsageError(
            f"since must be {oldest.isoformat()} or later: daily counts are kept "
            f"{counter_days} days (events.counter_days)"
        )
    return [(first + datetime.timedelta(days=n)).strftime("%Y%m%d") for n in range(span)]


@dataclass
class Counts:
    """Counts of one account over some days; `tag` set: only that tag's."""

    days: list[tuple[str, dict[str, int]]]
    tag: str | None = None
    tags: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, counts in self.days:
            for kind, value in counts.items():
                totals[kind] = totals.get(kind, 0) + value
        return _ordered(totals)

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "days": [{"date": _iso(day), "counts": counts} for day, counts in self.days],
            "totals": self.totals,
        }
        if self.tag is None:
            shown["tags"] = self.tags
        else:
            shown["tag"] = self.tag
        return shown


def _iso(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    return {kind: counts[kind] for kind in COUNTED if counts.get(kind)}


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def read_counts(
    client: Client, keys: Keys, account: str, days: list[str], tag: str | None = None
) -> Counts:
    """The counts of `account` on `days` (YYYYMMDD), overall or of `tag` alone."""
    fields = [f"tag:{tag}:{kind}" for kind in COUNTED] if tag is not None else []
    with guard(f"reading the daily counts of {account}"):
        pipe = client.pipeline(transaction=False)
        for day in days:
            key = keys.event_counts(account, day)
            if tag is not None:
                pipe.hmget(key, fields)
            else:
                pipe.hgetall(key)
        rows = pipe.execute() if days else []
    if tag is not None:
        return Counts(
            days=[
                (day, _ordered(dict(zip(COUNTED, map(_number, row), strict=True))))
                for day, row in zip(days, rows, strict=True)
            ],
            tag=tag,
        )
    found = Counts(days=[])
    for day, row in zip(days, rows, strict=True):
        kinds: dict[str, int] = {}
        for name, value in row.items():
            if name.startswith("tag:"):
                tagged, _, kind = name[4:].rpartition(":")
                if kind in COUNTED and tagged:
                    per_tag = found.tags.setdefault(tagged, {})
                    per_tag[kind] = per_tag.get(kind, 0) + _number(value)
            elif name in COUNTED:
                kinds[name] = _number(value)
        found.days.append((day, _ordered(kinds)))
    found.tags = {t: _ordered(c) for t, c in sorted(found.tags.items())}
    return found
