"""txmail/reports/series.py: the overview's daily numbers, read from the counters the milter,
the event recorder and the reputation guard keep."""

from __future__ import annotations

import time

import pytest
import redis

from tests.unit.reports.conftest import Send
from txmail.accounts.records import Accounts
from txmail.errors import UsageError
from txmail.reports.series import SHOWN, read_overview, read_series, read_tags
from txmail.store import Keys

HARD = ("bounce", {"reason": "userunknown", "status": "5.1.1", "diagnostic": "550 no such user"})
DELIVERED = ("delivery", {"status": "2.0.0"})


def test_today_counts_sent_delivered_bounced_and_the_rates(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["a@x.test"], ("welcome",), {"a@x.test": DELIVERED})
    send("AAAAAA0002", ["b@x.test"], ("welcome",), {"b@x.test": HARD})
    send("AAAAAA0003", ["c@x.test", "d@x.test"], (), {"c@x.test": DELIVERED})
    send("BBBBBB0001", ["e@x.test"], ("welcome",), {"e@x.test": HARD}, account="other")

    overview = read_overview(client, keys, accounts.get("acme"), time.time())
    assert len(overview.days) == 30
    today = overview.days[-1]
    assert today.date == time.strftime("%Y-%m-%d", time.gmtime())
    assert set(today.counts) == set(SHOWN)
    assert (today.counts["accepted"], today.counts["delivery"], today.counts["bounce"]) == (3, 2, 1)
    assert today.bounce_rate == pytest.approx(100 / 3, abs=0.001)  # the guard's trusted outcomes
    assert today.complaint_rate == 0.0
    assert overview.rates_source == "reputation"
    assert overview.max_bounce_rate == 5.0
    assert all(
        day.counts["accepted"] == 0 and day.bounce_rate is None for day in overview.days[:-1]
    )
    assert overview.totals["accepted"] == 3
    # usage against every limit and the reputation window, as `txmail stats` reads them
    assert {(lim["unit"], lim["window"]) for lim in overview.usage.limits} >= {
        ("messages", "day"),
        ("recipients", "minute"),
    }
    assert overview.usage.reputation["bounced"] == 1


def test_a_tag_filters_every_number(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["a@x.test"], ("welcome",), {"a@x.test": DELIVERED})
    send("AAAAAA0002", ["b@x.test"], ("welcome",), {"b@x.test": HARD})
    send("AAAAAA0003", ["c@x.test"], ("reset",), {"c@x.test": DELIVERED})
    overview = read_overview(client, keys, accounts.get("acme"), time.time(), tag="welcome")
    today = overview.days[-1]
    assert (today.counts["accepted"], today.counts["delivery"], today.counts["bounce"]) == (2, 1, 1)
    assert today.bounce_rate == 50.0
    assert overview.rates_source == "tag"
    assert overview.tag == "welcome"
    assert read_series(client, keys, "acme", time.time(), 7, "nobody")[-1].counts["accepted"] == 0


def test_days_are_bounded_and_a_bad_tag_is_a_clear_error(client: redis.Redis, keys: Keys) -> None:
    assert len(read_series(client, keys, "acme", time.time(), days=10_000)) == 90
    assert len(read_series(client, keys, "acme", time.time(), days=0)) == 1
    with pytest.raises(UsageError, match="without a comma"):
        read_series(client, keys, "acme", time.time(), tag="a,b")


def test_tags_table_lists_the_tags_with_counts(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["a@x.test"], ("welcome", "eu"), {"a@x.test": DELIVERED})
    send("AAAAAA0002", ["b@x.test"], ("welcome",), {"b@x.test": HARD})
    send("BBBBBB0001", ["e@x.test"], ("secret-tag",), {}, account="other")
    rows = read_tags(client, keys, "acme", time.time())
    assert [row.tag for row in rows] == ["welcome", "eu"]
    assert rows[0].counts["accepted"] == 2 and rows[0].counts["bounce"] == 1
    assert rows[0].accepted_ever == 2
    assert rows[1].counts["delivery"] == 1
