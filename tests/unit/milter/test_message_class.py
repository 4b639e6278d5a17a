"""Rule `message_class`: X-CloudMTA-Class routes by a routing header the milter adds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic

CASES = [
    # (X-CloudMTA-Class headers, expected reply, routing header value)
    ([], "", None),
    (["standard"], "", None),
    (["priority"], "", "priority"),
    (["digest"], "", "digest"),
    (["PRIORITY"], "", "priority"),
    ([" Digest "], "", "digest"),
    (["digest", "DIGEST"], "", "digest"),
    (["urgent"], "554 5.6.0", None),
    ([""], "554 5.6.0", None),
    (["priority", "digest"], "554 5.6.0", None),
]


@pytest.mark.parametrize("values,expected,route", CASES)
def test_class_table(
    smtp: Callable[..., Conversation], values: list[str], expected: str, route: str | None
) -> None:
    extra = [("X-CloudMTA-Class", v) for v in values]
    outcome = smtp().send(basic(extra=extra), "app@acme.example", ["u@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "standard, priority, digest" in outcome.text
        return
    assert outcome.header("X-CloudMTA-Route") == ([route] if route else [])
    assert outcome.header("X-CloudMTA-Class") == []  # the client's header never leaves


def test_unknown_value_is_named(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(
        basic(extra=[("x-cloudmta-class", "bulk")]), "app@acme.example", ["u@example.net"]
    )
    assert outcome.code == "554 5.6.0"
    assert "'bulk'" in outcome.text
