"""Maillog status lines to events: sent, deferred (once, with attempts), bounced, expired; lines
of messages txmail did not record give nothing (table over real Postfix 3.7 lines)."""

from __future__ import annotations

import pytest
import redis

from txmail.events import Recorder, stream_events
from txmail.maillog.lines import parse_line
from txmail.maillog.server import StatusRecorder, handle_lines
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages

P = "Nov 22 04:10:11 mta txmail/smtp[15387]: "
SENT = (
    P + "4jXCvV4QlNzJHcB: to=<a1@dest.test>, relay=mx.dest.test[127.0.0.1]:2526, delay=0.14,"
    " delays=0.1/0.02/0/0.02, dsn=2.0.0, status=sent (250 2.0.0 sink-accepted id=1)"
)
BOUNCED = (
    P + "4jXCvV4QlNzJHcB: to=<reject-a2@dest.test>, relay=127.0.0.1[127.0.0.1]:2526, "
    "delay=0.14, delays=0.1/0.02/0/0.02, dsn=5.1.1, status=bounced (host 127.0.0.1"
    "[127.0.0.1] said: 550 5.1.1 <reject-a2@dest.test>: Recipient address rejected: "
    "User unknown (in reply to RCPT TO command))"
)
DEFERRED = (
    P + "4jXCvV4QlNzJHcB: to=<defer-a3@dest.test>, relay=127.0.0.1[127.0.0.1]:2526, "
    "delay=0.11, delays=0.09/0/0/0.01, dsn=4.2.0, status=deferred (host 127.0.0.1"
    "[127.0.0.1] said: 450 4.2.0 <defer-a3@dest.test>: Mailbox busy, try later (in "
    "reply to RCPT TO command))"
)
REFUSED = (
    "Nov 22 04:10:11 mta txmail/smtp[1]: 4jXCvV4QlNzJHcB: to=<defer-a3@dest.test>, "
    "relay=none, delay=300, delays=300/0/0/0, dsn=4.4.1, status=deferred (connect to "
    "127.0.0.1[127.0.0.1]:2526: Connection refused)"
)
EXPIRED = (
    "Nov 22 04:10:11 mta txmail/qmgr[1]: 4jXCvV4QlNzJHcB: to=<x4@dest.test>, "
    "relay=none, delay=432000, delays=432000/0/0/0, dsn=4.4.1, status=expired, returned "
    "to sender (connect to mx.dest.test: Connection refused)"
)
PIPE = (
    "Nov 22 04:10:12 mta txmail/pipe[9]: 4jXCvV5XyVzJHcZ: to=<bounces+x@mta.example.test>, "
    "relay=bouncepipe, delay=0.3, delays=0/0/0/0.3, dsn=2.0.0, status=sent (delivered via "
    "bouncepipe service)"
)


@pytest.mark.parametrize(
    "line, status, dsn, remote",
    [
        (SENT, "sent", "2.0.0", "mx.dest.test"),
        (BOUNCED, "bounced", "5.1.1", "127.0.0.1"),
        (DEFERRED, "deferred", "4.2.0", "127.0.0.1"),
        (REFUSED, "deferred", "4.4.1", None),
        ("postfix/qmgr[1]: 4jXCvV4QlNzJHcB: removed", None, None, None),
        ("garbage status= to=<", None, None, None),
    ],
)
def test_parse(line: str, status: str | None, dsn: str | None, remote: str | None) -> None:
    parsed = parse_line(line)
    if status is None:
        assert parsed is None
        return
    assert parsed is not None
    assert (parsed.queue_id, parsed.status, parsed.dsn, parsed.remote_mta) == (
        "4jXCvV4QlNzJHcB",
        status,
        dsn,
        remote,
    )


def test_events_from_lines(client: redis.Redis, keys: Keys) -> None:
    messages = Messages(client, keys, 3600)
    messages.record(
        MessageRecord(
            queue_id="4jXCvV4QlNzJHcB",
            account="acme",
            envelope_sender="app@acme.test",
            recipients=["a1@dest.test", "reject-a2@dest.test", "defer-a3@dest.test"],
            tags=["t1"],
        )
    )
    statuses = StatusRecorder(client, keys, messages, Recorder(client, keys))
    handle_lines([SENT, BOUNCED, DEFERRED, REFUSED, DEFERRED, PIPE, EXPIRED], statuses)
    events = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.recipient) for e in events] == [
        ("delivery", "a1@dest.test"),
        ("bounce", "reject-a2@dest.test"),
        ("soft_bounce", "defer-a3@dest.test"),
        ("bounce", "x4@dest.test"),
    ]
    delivery, hard, soft, expired = events
    assert delivery.details["remote_mta"] == "mx.dest.test" and delivery.tags == ["t1"]
    assert hard.details["reason"] == "userunknown" and hard.details["status"] == "5.1.1"
    assert soft.details["attempts"] == 1 and "Mailbox busy" in soft.details["diagnostic"]
    assert expired.details["reason"] == "expired"
    # DEFERRED came twice: the second is the same attempt read again (its delay= is not later
    # than REFUSED's), so two attempts are counted, not three
    assert (
        client.hget(keys.event_seen("acme", "4jXCvV4QlNzJHcB"), "attempts:defer-a3@dest.test")
        == "2"
    )
    assert Recorder(client, keys).suppressions.check("acme", ["reject-a2@dest.test"])
