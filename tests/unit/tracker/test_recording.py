"""The tracker's HitWriter against a real Redis: a batch of opens and clicks through
Recorder.record_many, the first of each per recipient to the stream, every one counted on the
day it happened, and every repeat posted for an account with webhook_every_open."""

from __future__ import annotations

import json

import redis

from txmail.events import Recorder, stream_events, utc_day
from txmail.store import Keys
from txmail.tokens.links import Mark
from txmail.tracker.recording import EVERY_FIELD, Hit, HitWriter

YESTERDAY = 1_800_000_000.0 - 86400  # the hits happened then, and are written now
NOW = 1_800_000_000.0


def hit(kind: str, account: str, recipient: str, at: float = YESTERDAY) -> Hit:
    return Hit(Mark(kind, account, f"4jXCs06Yb{account}", recipient), {"ua": "test"}, at)


def test_a_batch_posts_the_first_of_each_and_counts_every_one(
    client: redis.Redis, keys: Keys
) -> None:
    client.hset(keys.message("acme", "4jXCs06Ybacme"), "tags", json.dumps(["welcome"]))
    client.hset(keys.account("chatty"), EVERY_FIELD, "true")
    writer = HitWriter(client, keys, Recorder(client, keys, clock=lambda: NOW))
    batch = [
        hit("open", "acme", "a@dest.test"),
        hit("open", "acme", "a@dest.test"),
        hit("click", "acme", "a@dest.test"),
        hit("open", "chatty", "c@dest.test"),
        hit("open", "chatty", "c@dest.test"),
    ]
    assert writer.write(batch) == 5
    assert writer.write([hit("open", "acme", "a@dest.test")]) == 1
    acme = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.tags) for e in acme] == [("open", ["welcome"]), ("click", ["welcome"])]
    chatty = [e for _, e in stream_events(client, keys, "chatty")]
    assert [e.kind for e in chatty] == ["open", "open"]  # webhook_every_open: the repeat too
    assert client.hgetall(keys.event_counts("acme", utc_day(YESTERDAY))) == {
        "open": "3",
        "click": "1",
        "tag:welcome:open": "3",
        "tag:welcome:click": "1",
        "distinct:welcome": "1",
        "distinct": "1",
    }
    assert client.hgetall(keys.event_counts("chatty", utc_day(YESTERDAY))) == {"open": "2"}
    assert not client.exists(keys.event_counts("acme", utc_day(NOW)))
