"""Rule `suppressed`: bounce list (unless flag 8) and unsubscribe list (flag 4) at eom."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.unit.milter.driver import QUEUE_ID, Conversation, basic
from txmail.store import Keys
from txmail.store.suppressions import Suppressions

RCPTS = ["bounced@example.net", "unsub@example.net", "fine@example.net"]


@pytest.fixture
def suppressions(client: redis.Redis, prefix: str) -> Suppressions:
    lists = Suppressions(client, Keys(prefix))
    lists.add("acme", "bounce", "Bounced@Example.net", "userunknown")
    lists.add("acme", "unsubscribe", "unsub@example.net", "list-unsubscribe")
    return lists


CASES = [
    # (X-Mxm-Flags, recipients that stay)
    (None, ["unsub@example.net", "fine@example.net"]),
    ("0", ["unsub@example.net", "fine@example.net"]),
    ("4", ["fine@example.net"]),
    ("8", RCPTS),
    ("12", ["bounced@example.net", "fine@example.net"]),
    ("3", ["unsub@example.net", "fine@example.net"]),
]


@pytest.mark.parametrize("flags,kept", CASES)
def test_suppression_table(
    smtp: Callable[..., Conversation],
    suppressions: Suppressions,
    client: redis.Redis,
    prefix: str,
    flags: str | None,
    kept: list[str],
) -> None:
    extra = [("X-Mxm-Flags", flags)] if flags else []
    outcome = smtp(suppressions=suppressions).send(basic(extra=extra), "app@acme.example", RCPTS)
    assert outcome.accepted, outcome.reply
    assert outcome.recipients == kept
    removed = [r for r in RCPTS if r not in kept]
    events = [json.loads(f["event"]) for _, f in client.xrange(f"{prefix}{{acme}}:events")]
    assert [e["recipient"] for e in events] == removed
    for event in events:
        assert event["kind"] == "blocked" and event["message_id"] == QUEUE_ID
        assert event["details"]["reason"] == "suppressed"
        assert event["details"]["list"] in ("bounce", "unsubscribe")
        assert event["details"]["suppression_reason"] in ("userunknown", "list-unsubscribe")


def test_nobody_left_is_refused_naming_them(
    smtp: Callable[..., Conversation], suppressions: Suppressions, client: redis.Redis, prefix: str
) -> None:
    outcome = smtp(suppressions=suppressions).send(
        basic(extra=[("X-Mxm-Flags", "4")]), "app@acme.example", RCPTS[:2]
    )
    assert outcome.code == "550 5.7.1"
    assert "bounced@example.net (bounce list: userunknown)" in outcome.text
    assert "unsub@example.net (unsubscribe list: list-unsubscribe)" in outcome.text
    assert client.xlen(f"{prefix}{{acme}}:events") == 0  # nothing accepted, nothing recorded


def test_single_mode_bcc_that_is_suppressed_is_dropped(
    smtp: Callable[..., Conversation], suppressions: Suppressions, client: redis.Redis, prefix: str
) -> None:
    outcome = smtp({"recipient_mode": "single"}, suppressions=suppressions).send(
        basic(to="fine@example.net"),
        "app@acme.example",
        ["fine@example.net", "bounced@example.net", "other@example.net"],
    )
    assert outcome.recipients == ["fine@example.net"]
    record = client.hgetall(f"{prefix}{{acme}}:message:{QUEUE_ID}")
    assert record.get("bcc", "") == ""  # an empty field is not stored (store/messages.py)
    assert json.loads(record["blocked"]) == {
        "other@example.net": "discarded",
        "bounced@example.net": "suppressed",
    }
