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


def test_fields_at_their_absent_value_are_not_stored_and_old_records_still_read(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    keys = Keys(f"m{uuid.uuid4().hex[:8]}:")
    messages = Messages(client, keys, ttl_seconds=60)
    plain = MessageRecord(
        queue_id="4Q1", account="acme", envelope_sender="app@acme.example", recipients=["u@x.net"]
    )
    full = MessageRecord(
        queue_id="4Q2",
        account="acme",
        envelope_sender="app@acme.example",
        recipients=["u@x.net", "b@x.net"],
        envelope_params=["RET=HDRS"],
        recipient_params={"u@x.net": ["NOTIFY=NEVER"]},
        header_message_id="<m@acme.example>",
        flags=0,
        bcc="b@x.net",
        blocked={"v@x.net": "suppressed"},
        return_path="bounces+t@bounces.example",
    )
    messages.record(plain)
    messages.record(full)
    stored = client.hgetall(keys.message("acme", "4Q1"))
    assert not set(stored) & {"envelope_params", "recipient_params", "flags", "bcc", "blocked"}
    assert stored["tags"] == "[]" and stored["message_class"] == "standard"  # read raw elsewhere
    assert messages.get("4Q1") == plain
    assert client.hgetall(keys.message("acme", "4Q2")) == full.to_hash()  # nothing left out
    assert messages.get("4Q2") == full
    # A record written before (every field, empty ones too) reads as it did.
    client.hset(keys.message("acme", "4Q3"), mapping={**plain.to_hash(), "queue_id": "4Q3"})
    client.set(keys.queue("4Q3"), "acme")
    assert messages.get("4Q3") == MessageRecord(**{**plain.__dict__, "queue_id": "4Q3"})
    client.close()
