"""Kept unparsed bounces (txmail/store/unparsed.py): the listing reads no raw text."""

from __future__ import annotations

import uuid

import redis

from txmail.store import Keys, unparsed


def test_the_listing_reads_the_summaries_only(client: redis.Redis) -> None:
    keys = Keys(f"u{uuid.uuid4().hex[:8]}:")
    for n in range(3):
        unparsed.keep(
            client, keys, b"x" * 200_000, f"reason {n}", "", f"r{n}@x.example", "", 10, 256 * 1024
        )
    listed = unparsed.newest_summaries(client, keys, 2)
    assert [b.reason for b in listed] == ["reason 2", "reason 1"]
    assert all(b.raw == b"" and b.size == 200_000 for b in listed)
    assert listed[0].recipient == "r2@x.example"
    whole = unparsed.get(client, keys, listed[0].entry_id)
    assert whole is not None and whole.raw == b"x" * 200_000
    assert unparsed.newest_summaries(client, Keys(f"u{uuid.uuid4().hex[:8]}:"), 5) == []
