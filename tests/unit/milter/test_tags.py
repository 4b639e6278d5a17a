"""Rule `tags`: X-CloudMTA-Tags and X-Mxm-Tag, merged, de-duplicated, stored and counted."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.unit.milter.driver import QUEUE_ID, Conversation, basic

CASES = [
    # (headers, expected reply, stored tags)
    ([], "", []),
    ([("X-CloudMTA-Tags", "password-reset, account")], "", ["password-reset", "account"]),
    ([("X-Mxm-Tag", "order,confirmation,guest")], "", ["order", "confirmation", "guest"]),
    (
        [("X-Mxm-Tag", "order"), ("X-Mxm-Tag", "confirmation"), ("X-Mxm-Tag", "guest")],
        "",
        ["order", "confirmation", "guest"],
    ),
    (
        [("X-CloudMTA-Tags", "b, a"), ("X-Mxm-Tag", "a ,c"), ("x-cloudmta-tags", "b")],
        "",
        ["b", "a", "c"],
    ),
    ([("X-Mxm-Tag", " , ,x, ")], "", ["x"]),
    ([("X-Mxm-Tag", "two words")], "", ["two words"]),
    ([("X-Mxm-Tag", ",".join(f"t{i}" for i in range(10)))], "", [f"t{i}" for i in range(10)]),
    ([("X-Mxm-Tag", ",".join(f"t{i}" for i in range(11)))], "554 5.6.0", None),
    (
        [("X-Mxm-Tag", ",".join(f"t{i}" for i in range(10)) + ",t0,t1")],
        "",
        [f"t{i}" for i in range(10)],
    ),
    ([("X-Mxm-Tag", "a" * 64)], "", ["a" * 64]),
    ([("X-Mxm-Tag", "a" * 65)], "554 5.6.0", None),
    ([("X-Mxm-Tag", "bad\x01tag")], "554 5.6.0", None),
    ([("X-CloudMTA-Tags", "folded,\r\n second")], "", ["folded", "second"]),
]


@pytest.mark.parametrize("headers,expected,tags", CASES)
def test_tags_table(
    smtp: Callable[..., Conversation],
    client: redis.Redis,
    prefix: str,
    headers: list[tuple[str, str]],
    expected: str,
    tags: list[str] | None,
) -> None:
    outcome = smtp().send(basic(extra=headers), "app@acme.example", ["u@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "tag" in outcome.text.lower()
        return
    record = client.hgetall(f"{prefix}{{acme}}:message:{QUEUE_ID}")
    assert json.loads(record["tags"]) == tags
    assert outcome.header("X-Mxm-Tag") == outcome.header("X-CloudMTA-Tags") == []


def test_tags_are_counted(
    smtp: Callable[..., Conversation], client: redis.Redis, prefix: str
) -> None:
    conversation = smtp()
    for queue_id in ("4jXCs06YbRzJJ2A", "4jXCs06YbRzJJ2B"):
        conversation.send(
            basic(extra=[("X-Mxm-Tag", "order, receipt")]),
            "app@acme.example",
            ["u@example.net"],
            queue_id=queue_id,
        )
    conversation.send(
        basic(extra=[("X-Mxm-Tag", "order")]),
        "app@acme.example",
        ["u@example.net"],
        queue_id="4jXCs06YbRzJJ2C",
    )
    assert client.hgetall(f"{prefix}{{acme}}:tags") == {"order": "3", "receipt": "2"}
