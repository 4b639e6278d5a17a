"""Rule `size`: each account's max_message_size, from SIZE= at MAIL FROM and at end of message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic

CASES = [
    # (max_message_size, body bytes, SIZE= given, expected)
    (10_000, 100, None, ""),
    (10_000, 20_000, None, "552 5.3.4"),
    (10_000, 9_000, None, ""),
    (10_000, 100, 50_000, "552 5.3.4"),  # refused at MAIL FROM on the declared size
    (10_000, 100, 5_000, ""),
    (None, 11 * 1024 * 1024, None, "552 5.3.4"),  # the 10 MB default
    (None, 1024 * 1024, None, ""),
]


@pytest.mark.parametrize("limit,body_size,declared,expected", CASES)
def test_size_table(
    smtp: Callable[..., Conversation],
    limit: int | None,
    body_size: int,
    declared: int | None,
    expected: str,
) -> None:
    settings = {"max_message_size": limit} if limit else {}
    body = ("x" * 998 + "\r\n") * (body_size // 1000)
    params = (f"SIZE={declared}",) if declared else ()
    outcome = smtp(settings).send(
        basic(body=body), "app@acme.example", ["u@example.net"], sender_params=params
    )
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "too big for this account" in outcome.text
        assert "maximum" in outcome.text
    if declared and expected:
        assert outcome.mail_reply is not None


def test_reply_names_sizes(smtp: Callable[..., Conversation]) -> None:
    body = ("x" * 998 + "\r\n") * 3000
    outcome = smtp({"max_message_size": 2 * 1024 * 1024}).send(
        basic(body=body), "app@acme.example", ["u@example.net"]
    )
    assert outcome.code == "552 5.3.4"
    assert "(2.9 MB, maximum 2 MB)" in outcome.text
