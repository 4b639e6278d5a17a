"""Idempotency-Key of POST /v1/send against a real Redis: claimed once, the first answer kept,
freed when there is nothing to keep, a body mismatch told apart."""

from __future__ import annotations

import pytest
import redis

from txmail.store import Keys
from txmail.tracker import idempotency
from txmail.tracker.idempotency import Held, body_hash, claim, parse_key, settle

KEY = "order-7/2026-12-07"


def test_keys_are_visible_ascii_and_bounded() -> None:
    assert parse_key(None) is None
    assert parse_key("3f1c2b9e-7d1a-4c55-9a0e-0b6f9b1c2d3e") is not None
    assert parse_key("x" * idempotency.MAX_KEY) is not None
    for bad in ("", "two words", "x" * (idempotency.MAX_KEY + 1), "é", "a\r\nb"):
        with pytest.raises(ValueError, match="visible ASCII"):
            parse_key(bad)


def test_one_claim_wins_and_its_answer_is_kept(client: redis.Redis, keys: Keys) -> None:
    first = body_hash(b'{"mime": "x"}')
    marker, held = claim(client, keys, "acme", KEY, first, 300, "a")
    assert marker and held is None
    # a second request while the first is being sent: told it is pending, claims nothing
    assert claim(client, keys, "acme", KEY, first, 300, "b") == ("", Held(first, pending=True))
    assert settle(client, keys, "acme", KEY, marker, first, (200, '{"message_id":"Q1"}'))
    _, held = claim(client, keys, "acme", KEY, first, 300, "c")
    assert held == Held(first, pending=False, status=200, answer='{"message_id":"Q1"}')
    assert 0 < client.ttl(keys.idempotency("acme", idempotency.body_hash(KEY.encode()))) <= 86400
    # another body under the same key: the caller sees the hashes differ
    assert claim(client, keys, "acme", KEY, body_hash(b"other"), 300, "d")[1].body_hash == first


def test_nothing_to_keep_frees_the_key(client: redis.Redis, keys: Keys) -> None:
    marker, _ = claim(client, keys, "acme", KEY, "h", 300, "a")
    assert settle(client, keys, "acme", KEY, marker, "h", None)
    marker, held = claim(client, keys, "acme", KEY, "h", 300, "b")
    assert held is None


def test_only_the_holder_settles(client: redis.Redis, keys: Keys) -> None:
    marker, _ = claim(client, keys, "acme", KEY, "h", 300, "a")
    client.delete(keys.idempotency("acme", body_hash(KEY.encode())))  # the marker lapsed
    other, _ = claim(client, keys, "acme", KEY, "h", 300, "b")
    assert not settle(client, keys, "acme", KEY, marker, "h", (200, "{}"))
    assert claim(client, keys, "acme", KEY, "h", 300, "c")[1] == Held("h", pending=True)
    assert settle(client, keys, "acme", KEY, other, "h", (200, "{}"))


def test_keys_are_per_account(client: redis.Redis, keys: Keys) -> None:
    assert claim(client, keys, "acme", KEY, "h", 300, "a")[1] is None
    assert claim(client, keys, "other", KEY, "h", 300, "a")[1] is None
