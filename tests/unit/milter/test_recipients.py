"""Rule `recipients`: the RCPT TO over max_recipients gets 452 4.5.3; the others stay."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic

CASES = [
    # (max_recipients, recipients given, recipients accepted)
    (20, 1, 1),
    (20, 20, 20),
    (20, 21, 20),
    (20, 30, 20),
    (3, 5, 3),
    (1, 2, 1),
]


@pytest.mark.parametrize("limit,given,accepted", CASES)
def test_recipient_limit_table(
    smtp: Callable[..., Conversation], limit: int, given: int, accepted: int
) -> None:
    settings = {} if limit == 20 else {"max_recipients": limit}
    recipients = [f"r{i}@example.net" for i in range(given)]
    outcome = smtp(settings).send(basic(), "app@acme.example", recipients)
    assert outcome.recipients == recipients[:accepted]
    refused = {r: reply for r, reply in outcome.rcpt_replies.items() if reply}
    assert list(refused) == recipients[accepted:]
    for reply in refused.values():
        assert reply[:2] == ("452", "4.5.3")
        assert reply[2] == (
            f"Too many recipients (maximum {limit}); send the rest in another message"
        )
    assert outcome.accepted


def test_default_is_twenty(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(basic(), "app@acme.example", [f"r{i}@x.example" for i in range(21)])
    assert outcome.rcpt_replies["r20@x.example"] is not None
    assert "maximum 20" in outcome.rcpt_replies["r20@x.example"][2]
