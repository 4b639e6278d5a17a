"""Counts per account, UTC day, tag and kind against a real Redis: the cap of distinct tags a
day and its "(other, folded)" bucket, which no tag can be, accepted messages sharing the
day's tags with events, reading them back by tag or whole, and the `since` and tag checks
(txmail/stats.py)."""

from __future__ import annotations

import pytest
import redis

from txmail import tags
from txmail.errors import UsageError
from txmail.events import Event, Recorder, make_event, utc_day
from txmail.stats import (
    OTHER,
    check_tag,
    count_accepted,
    last_days,
    read_counts,
    since_days,
)
from txmail.store import Keys

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
TODAY = utc_day(NOW)


def event(kind: str, tags: list[str], recipient: str = "a@b.test", qid: str = "Q1") -> Event:
    return make_event(kind, "acme", qid, recipient, tags=tags, now=NOW)


def accept(client: redis.Redis, keys: Keys, tags: list[str], cap: int = 100, account="acme"):
    pipe = client.pipeline(transaction=False)
    count_accepted(pipe, keys, account, tags, NOW, counter_days=400, tags_per_day=cap)
    return pipe.execute()[0]


def tag_counts(client: redis.Redis, keys: Keys, tag: str, account: str = "acme") -> dict:
    return read_counts(client, keys, account, [TODAY], tag).totals


def test_the_first_tags_of_a_day_are_counted_and_the_rest_fold_into_other(
    client: redis.Redis, keys: Keys
) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW, tags_per_day=2)
    recorder.record(event("delivery", ["a"], qid="Q1"))
    recorder.record(event("delivery", ["b"], qid="Q2"))
    recorder.record(event("delivery", ["c", "d"], qid="Q3"))  # past the cap: one (other)
    recorder.record(event("bounce", ["a", "c"], qid="Q4"))  # a still counted, c folded
    assert tag_counts(client, keys, "a") == {"delivery": 1, "bounce": 1}
    assert tag_counts(client, keys, "b") == {"delivery": 1}
    assert tag_counts(client, keys, "c") == {}
    assert tag_counts(client, keys, "d") == {}
    assert tag_counts(client, keys, OTHER) == {"delivery": 1, "bounce": 1}
    whole = read_counts(client, keys, "acme", [TODAY])
    assert whole.totals == {"delivery": 3, "bounce": 1}
    assert whole.tags == {
        OTHER: {"delivery": 1, "bounce": 1},
        "a": {"delivery": 1, "bounce": 1},
        "b": {"delivery": 1},
    }


def test_duplicates_are_not_counted_twice_and_opens_count_every_time(
    client: redis.Redis, keys: Keys
) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW, tags_per_day=1)
    for _ in range(2):
        recorder.record(event("delivery", ["a"]))
        recorder.record(event("open", ["a"]))
    assert tag_counts(client, keys, "a") == {"delivery": 1, "open": 2}


def test_accepted_messages_share_the_days_tags_with_events(client: redis.Redis, keys: Keys) -> None:
    assert accept(client, keys, ["x", "y"], cap=2) == 0
    assert accept(client, keys, ["x", "z", "w"], cap=2) == 2  # z and w folded, counted once
    Recorder(client, keys, clock=lambda: NOW, tags_per_day=2).record(event("delivery", ["z"]))
    assert tag_counts(client, keys, "x") == {"accepted": 2}
    assert tag_counts(client, keys, "y") == {"accepted": 1}
    assert tag_counts(client, keys, OTHER) == {"accepted": 1, "delivery": 1}
    assert read_counts(client, keys, "acme", [TODAY]).totals == {"accepted": 2, "delivery": 1}
    assert 0 < client.ttl(keys.event_counts("acme", TODAY)) <= 400 * 86400


def test_a_batch_of_opens_is_capped_too(client: redis.Redis, keys: Keys) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW, tags_per_day=1)
    recorder.record_many([event("open", ["a"]), event("open", ["b"]), event("click", ["a"])])
    assert tag_counts(client, keys, "a") == {"open": 1, "click": 1}
    assert tag_counts(client, keys, OTHER) == {"open": 1}


def test_counts_are_per_account(client: redis.Redis, keys: Keys) -> None:
    accept(client, keys, ["shared"])
    accept(client, keys, ["shared"], account="other")
    accept(client, keys, ["shared"], account="other")
    assert tag_counts(client, keys, "shared") == {"accepted": 1}
    assert tag_counts(client, keys, "shared", account="other") == {"accepted": 2}


def test_reading_by_day_and_the_json_shape(client: redis.Redis, keys: Keys) -> None:
    accept(client, keys, ["order:paid", "receipt"])  # a colon inside a tag reads back whole
    days = last_days(3, NOW)
    assert days[-1] == TODAY and len(days) == 3
    one = read_counts(client, keys, "acme", days, "order:paid").as_json()
    assert one == {
        "days": [
            {"date": "2027-01-13", "counts": {}},
            {"date": "2027-01-14", "counts": {}},
            {"date": "2027-01-15", "counts": {"accepted": 1}},
        ],
        "totals": {"accepted": 1},
        "tag": "order:paid",
    }
    whole = read_counts(client, keys, "acme", days).as_json()
    assert whole["days"][-1] == {"date": "2027-01-15", "counts": {"accepted": 1}}
    assert whole["tags"] == {"order:paid": {"accepted": 1}, "receipt": {"accepted": 1}}
    assert read_counts(client, keys, "acme", [], "x").as_json()["totals"] == {}


def test_since_is_a_day_within_the_counters_life() -> None:
    assert since_days("2027-01-13", NOW, 400) == ["20270113", "20270114", "20270115"]
    assert since_days("2027-01-15", NOW, 400) == ["20270115"]
    assert len(since_days("2025-12-12", NOW, 400)) == 400
    for bad, words in (
        ("2025-12-11", "2025-12-12 or later"),
        ("2027-01-16", "not be after today"),
        ("2027-02-30", "YYYY-MM-DD"),
        ("15/01/2027", "YYYY-MM-DD"),
        ("", "YYYY-MM-DD"),
        ("２０２７-01-15", "YYYY-MM-DD"),
    ):
        with pytest.raises(UsageError, match=words):
            since_days(bad, NOW, 400)


def test_a_tag_asked_for_is_one_a_message_could_carry() -> None:
    assert check_tag(" password-reset ") == "password-reset"
    assert check_tag("x" * 64) == "x" * 64
    for bad in ("", "   ", "x" * 65, "a,b", "a\nb", "a\x00"):
        with pytest.raises(UsageError, match="1 to 64 printable characters"):
            check_tag(bad)
    assert check_tag(OTHER) == OTHER  # the folded tags can be asked for, though no tag has it


def test_a_tag_named_like_the_folded_bucket_is_a_tag_of_its_own(
    client: redis.Redis, keys: Keys
) -> None:
    # No tag can be the bucket's name (it has a comma), so a client's "(other)" or
    # "(other" + " folded)" stays apart from the tags folded past the day's cap.
    accept(client, keys, ["(other)"], cap=1)
    accept(client, keys, ["late"], cap=1)  # past the cap: folded
    whole = read_counts(client, keys, "acme", [TODAY])
    assert whole.tags == {"(other)": {"accepted": 1}, OTHER: {"accepted": 1}}
    assert tag_counts(client, keys, "(other)") == {"accepted": 1}
    assert tag_counts(client, keys, OTHER) == {"accepted": 1}
    merged = tags.merge(OTHER.split(","))
    assert not isinstance(merged, tags.TagRefusal) and OTHER not in merged


def test_one_stats_answer_covers_at_most_its_cap_of_days() -> None:
    assert len(since_days("2026-10-18", NOW, 400, most=90)) == 90
    with pytest.raises(UsageError, match="2026-10-18 or later: one answer covers at most 90"):
        since_days("2026-10-17", NOW, 400, most=90)
    # counters kept for fewer days than the cap: their life is the limit
    with pytest.raises(UsageError, match="kept 30 days"):
        since_days("2026-12-01", NOW, 30, most=90)
