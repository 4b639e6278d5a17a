"""Each message's own list of events (event_record.lua, message_events()): what GET
/v1/messages/{id} reads, so a message's events are found whatever the account wrote since."""

from __future__ import annotations

import pytest
import redis

from txmail import events as events_module
from txmail.events import Recorder, make_event, message_events
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages

NOW = 1_800_000_000.0
QID = "4jXCs06YbRzJJ2Y"
RECORD_TTL = 1000  # seconds: far below the recorder's seen_ttl, to tell the two apart


def accepted(client: redis.Redis, keys: Keys, qid: str = QID, account: str = "acme") -> None:
    record = MessageRecord(
        queue_id=qid, account=account, envelope_sender="app@acme.test", recipients=["a@b.test"]
    )
    Messages(client, keys, RECORD_TTL).record(record)


def event(kind: str, recipient: str = "a@b.test", qid: str = QID, account: str = "acme"):
    return make_event(kind, account, qid, recipient, {"reason": "x"}, tags=["t"], now=NOW)


def test_recorded_events_are_listed_once_in_order_and_expire_with_the_record(
    client: redis.Redis, keys: Keys
) -> None:
    accepted(client, keys)
    recorder = Recorder(client, keys, clock=lambda: NOW)
    for kind in ("delivery", "open", "open", "click", "delivery"):
        recorder.record(event(kind))
    listed = message_events(client, keys, "acme", QID)
    assert [e.kind for e in listed.events] == ["delivery", "open", "click"]
    assert listed.unlisted == 0
    assert 0 < client.ttl(keys.message_events("acme", QID)) <= RECORD_TTL


def test_a_batch_of_opens_is_listed_too(client: redis.Redis, keys: Keys) -> None:
    accepted(client, keys)
    Recorder(client, keys).record_many([event("open"), event("click"), event("open", "c@d.test")])
    listed = message_events(client, keys, "acme", QID)
    assert [(e.kind, e.recipient) for e in listed.events] == [
        ("open", "a@b.test"),
        ("click", "a@b.test"),
        ("open", "c@d.test"),
    ]


def test_no_list_without_a_message_record(client: redis.Redis, keys: Keys) -> None:
    Recorder(client, keys).record(event("delivery"))
    Recorder(client, keys).record(event("delivery", qid=""))
    assert not client.exists(keys.message_events("acme", QID))
    assert client.keys(f"{keys.prefix}*:message:*") == []
    assert message_events(client, keys, "acme", QID).events == []


def test_the_list_is_capped_and_says_how_many_it_left_out(
    client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "MESSAGE_EVENTS_MAX", 3)
    accepted(client, keys)
    recorder = Recorder(client, keys)
    for n in range(5):
        recorder.record(event("delivery", f"r{n}@b.test"))
    listed = message_events(client, keys, "acme", QID)
    assert [e.recipient for e in listed.events] == ["r0@b.test", "r1@b.test", "r2@b.test"]
    assert listed.unlisted == 2
    assert client.xlen(keys.events("acme")) == 5  # the stream has them all


def test_the_list_is_the_accounts_own(client: redis.Redis, keys: Keys) -> None:
    accepted(client, keys)
    accepted(client, keys, account="other")
    Recorder(client, keys).record(event("delivery", account="other"))
    assert message_events(client, keys, "acme", QID).events == []
    assert len(message_events(client, keys, "other", QID).events) == 1
