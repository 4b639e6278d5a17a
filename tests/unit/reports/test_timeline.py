"""txmail/reports/timeline.py: one message's story for its own account only."""

from __future__ import annotations

import json
import time

import redis

from tests.unit.reports.conftest import RECORD_TTL, Send
from txmail.accounts.records import Accounts
from txmail.events import Recorder, make_event
from txmail.reports.timeline import read_timeline
from txmail.store import Keys

HARD = ("bounce", {"reason": "userunknown", "status": "5.1.1", "diagnostic": "550 5.1.1 no user"})
SOFT = ("soft_bounce", {"reason": "mailboxfull", "status": "4.2.2", "diagnostic": "452 full"})


def test_the_timeline_has_acceptance_outcomes_opens_and_dead_letters(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    record = send(
        "AAAAAA0001",
        ["alice@x.test", "bob@x.test"],
        ("welcome",),
        {"alice@x.test": SOFT, "bob@x.test": HARD},
    )
    # two more failed attempts for alice, counted as the maillog follower counts them
    recorder = Recorder(client, keys)
    recorder.count_attempt("acme", record.message_id, "alice@x.test")
    recorder.count_attempt("acme", record.message_id, "alice@x.test")
    recorder.record(make_event("open", "acme", "AAAAAA0001", "alice@x.test", {"ip": "x"}))
    # one of its events dead-lettered by the webhooks dispatcher (the same fields its script
    # writes), and another message's, which must not show
    bounce_id = next(
        e["id"]
        for e in (
            json.loads(r) for r in client.lrange(keys.message_events("acme", "AAAAAA0001"), 0, -1)
        )
        if e["kind"] == "bounce"
    )
    for event_id, message_id in ((bounce_id, "AAAAAA0001"), ("evt_other", "AAAAAA0009")):
        event = {"id": event_id, "kind": "bounce", "message_id": message_id, "recipient": "b"}
        client.xadd(
            keys.dead_letters("acme"),
            {"event": json.dumps(event), "error": "HTTP 500", "failed_at": str(time.time())},
        )

    timeline = read_timeline(client, keys, RECORD_TTL, "acme", "AAAAAA0001")
    assert timeline is not None
    kinds = [step.kind for step in timeline.steps]
    assert kinds[0] == "accepted"
    assert sorted(kinds[1:]) == ["bounce", "open", "soft_bounce"]
    bounce = next(step for step in timeline.steps if step.kind == "bounce")
    assert bounce.recipient == "bob@x.test"
    assert bounce.summary == "hard bounce: userunknown"
    assert bounce.details["diagnostic"] == "550 5.1.1 no user"
    soft = next(step for step in timeline.steps if step.kind == "soft_bounce")
    assert soft.details["attempts"] == 2
    assert [d["event_id"] for d in timeline.dead_letters] == [bounce_id]
    assert timeline.dead_letters[0]["error"] == "HTTP 500"


def test_another_accounts_message_is_none_like_a_missing_one(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("BBBBBB0001", ["e@x.test"], (), {"e@x.test": HARD}, account="other")
    assert read_timeline(client, keys, RECORD_TTL, "acme", "BBBBBB0001") is None
    assert read_timeline(client, keys, RECORD_TTL, "acme", "CCCCCC0001") is None
    assert read_timeline(client, keys, RECORD_TTL, "acme", "bad id!") is None
    assert read_timeline(client, keys, RECORD_TTL, "other", "BBBBBB0001") is not None


def test_a_message_with_copies_links_to_them(client: redis.Redis, keys: Keys) -> None:
    from txmail.store.messages import MessageRecord, Messages

    messages = Messages(client, keys, RECORD_TTL)
    messages.record(
        MessageRecord(
            queue_id="PARENT0001",
            account="acme",
            envelope_sender="app@acme.test",
            recipients=["a@x.test", "b@x.test"],
            copies={"b@x.test": "COPY000001"},
        )
    )
    messages.record(
        MessageRecord(
            queue_id="COPY000001",
            account="acme",
            envelope_sender="app@acme.test",
            recipients=["b@x.test"],
            parent="PARENT0001",
        )
    )
    parent = read_timeline(client, keys, RECORD_TTL, "acme", "PARENT0001")
    assert parent is not None and parent.copies == {"b@x.test": "COPY000001"}
    assert [s.link for s in parent.steps if s.kind == "copy"] == ["COPY000001"]
    copy = read_timeline(client, keys, RECORD_TTL, "acme", "COPY000001")
    assert copy is not None and copy.parent == "PARENT0001"
