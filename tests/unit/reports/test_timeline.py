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


def _dispatcher(client: redis.Redis, keys: Keys, answers: list[object]):  # type: ignore[no-untyped-def]
    """The real dispatcher core, posting to a fake endpoint that gives `answers` in turn."""
    import random

    from txmail.config import WebhooksSettings
    from txmail.webhooks.dispatcher import Answer, Dispatcher, TransportError

    def transport(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        answer = answers.pop(0) if answers else Answer(200, b"ok")
        if isinstance(answer, Exception):
            raise TransportError(str(answer))
        assert isinstance(answer, Answer)
        return answer

    return Dispatcher(
        client,
        keys,
        WebhooksSettings(batch_size=100, batch_wait=0.0, retry_base=0.0, retry_max_delay=0.0),
        b"k" * 32,
        "node-a",
        transport,
        rng=random.Random(1),
    )


def test_each_event_shows_the_posts_that_carried_it_and_their_answers(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    from txmail.webhooks.dispatcher import Answer

    accounts.set_webhook_url("acme", "http://receiver.test/hook")
    send("AAAAAA0002", ["carol@x.test"], (), {"carol@x.test": HARD})
    dispatcher = _dispatcher(
        client, keys, [Answer(500, b"database\ndown"), Answer(202, b'{"taken": 1}')]
    )
    for _ in range(4):
        dispatcher.step()

    timeline = read_timeline(client, keys, RECORD_TTL, "acme", "AAAAAA0002")
    assert timeline is not None
    [posted] = timeline.posted
    assert (posted.kind, posted.recipient, posted.state) == (
        "bounce",
        "carol@x.test",
        "acknowledged",
    )
    assert posted.said == "posted and acknowledged"
    assert [(p.status, p.answer) for p in posted.posts] == [
        (500, "database down"),
        (202, '{"taken": 1}'),
    ]


def test_an_event_whose_post_is_no_longer_kept_is_acknowledged_or_waits(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    accounts.set_webhook_url("acme", "http://receiver.test/hook")
    send("AAAAAA0003", ["dave@x.test"], (), {"dave@x.test": HARD})
    dispatcher = _dispatcher(client, keys, [])
    for _ in range(3):
        dispatcher.step()
    client.delete(keys.webhook_posts("acme"))  # its post is past the kept ones
    # a later message whose event the dispatcher has not read yet, and one it posted and
    # got no answer for: both wait, the first never posted, the second retried
    send("AAAAAA0004", ["erin@x.test"], (), {"erin@x.test": HARD})

    def state(qid: str) -> tuple[str, str]:
        timeline = read_timeline(client, keys, RECORD_TTL, "acme", qid)
        assert timeline is not None
        [posted] = timeline.posted
        return posted.state, posted.said

    assert state("AAAAAA0003") == (
        "acknowledged",
        "posted and acknowledged; the post is no longer kept",
    )
    assert state("AAAAAA0004") == ("waiting", "waits to be posted")
    failing = _dispatcher(client, keys, [OSError("connection refused")] * 10)
    failing.step()
    failing.step()
    assert state("AAAAAA0004") == ("waiting", "posted, not acknowledged yet: it is retried")
    timeline = read_timeline(client, keys, RECORD_TTL, "acme", "AAAAAA0004")
    assert timeline is not None
    assert timeline.posted[0].posts[0].outcome == "no answer (connection refused)"
    # the first message's entry trimmed from the stream (as events.stream_max does, never
    # past what waits): still acknowledged; the waiting one still waits
    [pending] = client.xpending_range(keys.events("acme"), "webhooks", "-", "+", 10)
    client.xtrim(keys.events("acme"), minid=pending["message_id"], approximate=False)
    assert client.xlen(keys.events("acme")) == 1
    assert state("AAAAAA0003")[0] == "acknowledged"
    assert state("AAAAAA0004")[0] == "waiting"


def test_without_a_webhook_url_the_events_are_not_posted(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0005", ["fay@x.test"], (), {"fay@x.test": HARD})
    timeline = read_timeline(client, keys, RECORD_TTL, "acme", "AAAAAA0005")
    assert timeline is not None
    assert [p.state for p in timeline.posted] == ["unposted"]
