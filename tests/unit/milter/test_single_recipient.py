"""Rule `single_recipient` (Maxemail): the To recipient, one BCC copy, nobody else."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.unit.milter.driver import QUEUE_ID, Conversation, eml

SINGLE = {"recipient_mode": "single"}


def message(
    to: str,
    cc: str | None = None,
    bcc: str | None = None,
    sender: str = "Oxford Stones <newsletters@acme.example>",
) -> bytes:
    headers = [("From", sender), ("To", to), ("Subject", "Your order")]
    if cc:
        headers.append(("Cc", cc))
    if bcc:
        headers.append(("Bcc", bcc))
    return eml(headers)


CASES = [
    # (To header, Cc, RCPT TO list, expected reply, envelope after, To header after)
    ("a@example.net", None, ["a@example.net"], "", ["a@example.net"], "a@example.net"),
    (
        "A <a@example.net>",
        None,
        ["b@example.net", "a@example.net"],
        "",
        ["b@example.net", "a@example.net"],
        "A <a@example.net>",
    ),
    (
        "a@example.net",
        None,
        ["a@example.net", "b@example.net", "c@example.net", "d@example.net"],
        "",
        ["a@example.net", "b@example.net"],
        "a@example.net",
    ),
    (
        "A <a@example.net>, x@example.net",
        "cc@example.net",
        ["x@example.net", "a@example.net"],
        "",
        ["x@example.net", "a@example.net"],
        "A <a@example.net>",
    ),
    ("a@EXAMPLE.net", None, ["A@example.NET"], "", ["A@example.NET"], "a@EXAMPLE.net"),
    ("a@example.net", None, ["b@example.net"], "550 5.7.1", None, None),
    ("undisclosed-recipients:;", None, ["b@example.net"], "550 5.6.0", None, None),
]


@pytest.mark.parametrize("to,cc,rcpts,expected,envelope,to_after", CASES)
def test_single_recipient_table(
    smtp: Callable[..., Conversation],
    to: str,
    cc: str | None,
    rcpts: list[str],
    expected: str,
    envelope: list[str] | None,
    to_after: str | None,
) -> None:
    outcome = smtp(SINGLE).send(message(to, cc), "outgoing@acme.example", rcpts)
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "single-recipient mode" in outcome.text
        return
    assert outcome.recipients == envelope
    assert outcome.header("To") == [to_after]
    assert outcome.header("Cc") == [] and outcome.header("Bcc") == []


def test_discarded_recipients_are_blocked_events(
    smtp: Callable[..., Conversation], client: redis.Redis, prefix: str
) -> None:
    rcpts = ["a@example.net", "bcc@example.net", "c@example.net", "d@example.net"]
    outcome = smtp(SINGLE).send(
        message("a@example.net", bcc="bcc@example.net"), "outgoing@acme.example", rcpts
    )
    assert outcome.accepted
    assert outcome.recipients == ["a@example.net", "bcc@example.net"]
    events = [json.loads(f["event"]) for _, f in client.xrange(f"{prefix}{{acme}}:events")]
    assert [e["recipient"] for e in events] == ["c@example.net", "d@example.net"]
    for event in events:
        assert event["kind"] == "blocked" and event["message_id"] == QUEUE_ID
        assert event["account"] == "acme" and event["id"].startswith("evt_")
        assert event["details"]["reason"] == "discarded"
        assert "single-recipient mode" in event["details"]["explanation"]
    record = client.hgetall(f"{prefix}{{acme}}:message:{QUEUE_ID}")
    assert record["bcc"] == "bcc@example.net"
    assert json.loads(record["recipients"]) == ["a@example.net", "bcc@example.net"]
    assert json.loads(record["blocked"]) == {
        "c@example.net": "discarded",
        "d@example.net": "discarded",
    }


def test_from_is_rewritten_keeping_the_display_name(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp(SINGLE).send(
        message("a@example.net"), "outgoing@acme.example", ["a@example.net"]
    )
    assert outcome.header("From") == ["Oxford Stones <outgoing@acme.example>"]


def test_multi_mode_leaves_recipients_alone(smtp: Callable[..., Conversation]) -> None:
    rcpts = ["a@example.net", "b@example.net", "c@example.net"]
    outcome = smtp().send(
        message("a@example.net", cc="b@example.net"), "outgoing@acme.example", rcpts
    )
    assert outcome.recipients == rcpts
    assert outcome.header("Cc") == ["b@example.net"]
    assert outcome.header("From") == ["Oxford Stones <newsletters@acme.example>"]
