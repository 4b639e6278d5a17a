"""The recorder against a real Redis: once per (message, recipient, kind), counters,
suppression rules, the reputation hook, and a stream cap that never trims undelivered events."""

from __future__ import annotations

import pytest
import redis

from txmail.errors import StoreUnavailable
from txmail.events import (
    WEBHOOK_GROUP,
    Event,
    Recorder,
    SuppressionPolicy,
    make_event,
    record_outcome,
    stream_events,
    utc_day,
)
from txmail.store import Keys
from txmail.store.messages import MessageRecord

NOW = 1_800_000_000.0


def bounce(
    recipient: str = "User@Example.net",
    reason: str = "userunknown",
    kind: str = "bounce",
    trusted: bool = True,
    qid: str = "4jXCs06YbRzJJ2Y",
):
    return make_event(
        kind,
        "acme",
        qid,
        recipient,
        {"status": "5.1.1", "reason": reason},
        tags=["password-reset"],
        now=NOW,
        trusted=trusted,
    )


def test_one_event_per_message_recipient_and_kind(client: redis.Redis, keys: Keys) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW)
    first = recorder.record(bounce())
    again = recorder.record(bounce("user@example.net"))
    other_kind = recorder.record(bounce(kind="soft_bounce"))
    assert first.new and not again.new and other_kind.new
    assert first.event_id == again.event_id != other_kind.event_id
    events = stream_events(client, keys, "acme")
    assert [e.kind for _, e in events] == ["bounce", "soft_bounce"]
    assert events[0][1].recipient == "user@example.net"
    counts = client.hgetall(keys.event_counts("acme", utc_day(NOW)))
    assert counts == {
        "bounce": "1",
        "soft_bounce": "1",
        "tag:password-reset:bounce": "1",
        "tag:password-reset:soft_bounce": "1",
        "distinct:password-reset": "1",  # the day's counted tags (txmail/stats.py)
        "distinct": "1",
    }
    assert client.ttl(keys.event_counts("acme", utc_day(NOW))) > 0
    assert client.ttl(keys.event_seen("acme", "4jXCs06YbRzJJ2Y")) > 0


def test_opens_are_counted_every_time_but_recorded_once(client: redis.Redis, keys: Keys) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW)
    results = [
        recorder.record(make_event("open", "acme", "Q1", "a@b.test", now=NOW)) for _ in range(3)
    ]
    assert [r.new for r in results] == [True, False, False]
    assert len(stream_events(client, keys, "acme")) == 1
    assert client.hget(keys.event_counts("acme", utc_day(NOW)), "open") == "3"


@pytest.mark.parametrize(
    "event, policy, suppressed",
    [
        (dict(), SuppressionPolicy(), True),
        (dict(reason="mailboxfull"), SuppressionPolicy(), False),
        (dict(reason="mailboxfull"), SuppressionPolicy(reasons=("mailboxfull",)), True),
        (dict(kind="soft_bounce"), SuppressionPolicy(reasons=("userunknown",)), False),
        (dict(trusted=False), SuppressionPolicy(), False),
        (dict(kind="complaint", reason="feedback"), SuppressionPolicy(), True),
        (dict(kind="complaint", reason="feedback"), SuppressionPolicy(complaints=False), False),
    ],
)
def test_what_suppresses(
    client: redis.Redis, keys: Keys, event: dict, policy, suppressed: bool
) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW)
    recorded = recorder.record(bounce(**event), policy)
    found = recorder.suppressions.check("acme", ["user@example.net"])
    assert bool(found) is suppressed
    if suppressed:
        entry = found["user@example.net"]
        assert entry.list == "bounce" and entry.event_id == recorded.event_id
        assert entry.reason == event.get("reason", "userunknown")


def test_suppression_may_expire(client: redis.Redis, keys: Keys) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW)
    recorder.record(bounce(), SuppressionPolicy(days=3))
    entry = recorder.suppressions.check("acme", ["user@example.net"])["user@example.net"]
    assert entry.expires_at == NOW + 3 * 86400


def test_outcome_counted_once_and_again_after_a_failed_count(
    client: redis.Redis, keys: Keys
) -> None:
    calls: list[tuple[str, str]] = []
    failing = [True]

    def hook(account: str, kind: str, mark: tuple[str, str]) -> None:
        if failing[0]:
            failing[0] = False
            raise StoreUnavailable("redis went away")
        if client.hsetnx(*mark, "1"):  # as reputation_count.lua: counted with its mark
            calls.append((account, kind))

    recorder = Recorder(client, keys, outcome_hook=hook, clock=lambda: NOW)
    with pytest.raises(StoreUnavailable):
        recorder.record(bounce())
    recorder.record(bounce())  # the retry counts what the failure left uncounted
    recorder.record(bounce())  # and nothing twice
    recorder.record(bounce(recipient="x@example.net", trusted=False))  # forged: never counted
    assert calls == [("acme", "bounce")]


def test_record_outcome_of_a_copy_speaks_of_the_message_the_client_knows(
    client: redis.Redis, keys: Keys
) -> None:
    counted: list[tuple[str, str]] = []
    asked: list[str] = []

    def counts(event: Event) -> bool:
        asked.append(event.recipient)
        return False

    recorder = Recorder(
        client, keys, outcome_hook=lambda a, k, _mark: counted.append((a, k)), clock=lambda: NOW
    )
    copy = MessageRecord(
        "4jXCs07CopyAAAA",
        "acme",
        "app@acme.test",
        ["User@Example.net"],
        tags=["t1"],
        parent="4jXCs06YbRzJJ2Y",
    )
    details = {"status": "5.1.1", "reason": "userunknown"}
    hard = record_outcome(
        recorder, copy, "bounce", "User@Example.net", details, SuppressionPolicy(), counts=counts
    )
    assert hard.new and hard.suppressed and asked == ["user@example.net"] and counted == []
    forged = record_outcome(
        recorder,
        copy,
        "bounce",
        "other@example.net",
        details,
        SuppressionPolicy(),
        trusted=False,
        counts=counts,
        untrusted_cap=1,
    )
    assert forged.new and not forged.suppressed and asked == ["user@example.net"]
    record_outcome(recorder, copy, "delivery", "User@Example.net", {}, SuppressionPolicy())
    assert counted == [("acme", "delivery")]
    events = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.message_id, e.tags, e.trusted) for e in events] == [
        ("bounce", "4jXCs06YbRzJJ2Y", ["t1"], True),
        ("bounce", "4jXCs06YbRzJJ2Y", ["t1"], False),
        ("delivery", "4jXCs06YbRzJJ2Y", ["t1"], True),
    ]
    assert events[0].timestamp.startswith("2027-01-15T08")


def test_stream_cap_never_trims_undelivered_events(client: redis.Redis, keys: Keys) -> None:
    recorder = Recorder(client, keys, clock=lambda: NOW)
    stream = keys.events("acme")
    client.xgroup_create(stream, WEBHOOK_GROUP, id="0", mkstream=True)
    for n in range(30):
        recorder.record(bounce(recipient=f"r{n}@example.net"))
    trim = client.register_script(
        (
            __import__("pathlib").Path(__file__).parents[3] / "txmail/store/scripts/events_trim.lua"
        ).read_text()
    )
    assert trim(keys=[stream], args=[WEBHOOK_GROUP, 10]) == 0  # nothing read yet
    # a dispatcher reads 20 (pending) and acknowledges the first 12
    read = client.xreadgroup(WEBHOOK_GROUP, "c1", {stream: ">"}, count=20)[0][1]
    client.xack(stream, WEBHOOK_GROUP, *[i for i, _ in read[:12]])
    removed = trim(keys=[stream], args=[WEBHOOK_GROUP, 10])
    assert removed == 12
    left = [i for i, _ in client.xrange(stream)]
    assert left == [i for i, _ in read[12:]] + left[8:] and len(left) == 18
    # once everything is acknowledged the cap holds exactly
    rest = client.xreadgroup(WEBHOOK_GROUP, "c1", {stream: ">"})[0][1]
    client.xack(stream, WEBHOOK_GROUP, *[i for i, _ in read[12:] + rest])
    trim(keys=[stream], args=[WEBHOOK_GROUP, 10])
    assert client.xlen(stream) == 10
