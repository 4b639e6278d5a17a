"""Message records in a real (private) Redis: written once, read one at a time or in a batch."""

from __future__ import annotations

import uuid

from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages
from txmail_testing.harness import RedisServer


def test_get_many_reads_a_batch_and_names_the_unknown(redis_server: RedisServer) -> None:
    client = redis_server.client()
    messages = Messages(client, Keys(f"m{uuid.uuid4().hex[:8]}:"), ttl_seconds=60)
    for queue_id, account in (("4Q1", "acme"), ("4Q2", "other")):
        messages.record(
            MessageRecord(
                queue_id=queue_id,
                account=account,
                envelope_sender="app@acme.example",
                recipients=["u@example.net"],
                size=10,
            )
        )
    found = messages.get_many(["4Q1", "4Q9", "4Q2"])
    assert list(found) == ["4Q1", "4Q9", "4Q2"]
    assert found["4Q9"] is None
    assert [found[q].account for q in ("4Q1", "4Q2")] == ["acme", "other"]  # type: ignore[union-attr]
    assert found["4Q1"] == messages.get("4Q1")
    assert messages.get_many([]) == {}
    # one script call on a single Redis; the same as the two pipelines of a Redis Cluster
    assert found == messages.get_many_pipelined(["4Q1", "4Q9", "4Q2"])
    client.close()
