"""Every line the milter logs about a message carries its queue id and account as fields
(txmail/logs.py), whether the message is accepted or refused."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.milter.driver import QUEUE_ID, Conversation, basic
from txmail import logs


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("milter"))
    logger = logging.getLogger("txmail.milter")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_an_accepted_message(
    smtp: Callable[..., Conversation], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    outcome = smtp().send(basic(), "app@acme.example", ["u@example.net"])
    assert outcome.code == ""
    (accepted,) = [x for x in lines() if ": accept:" in x["message"]]
    assert (accepted["queue_id"], accepted["account"]) == (QUEUE_ID, "acme")


def test_a_refused_message(
    smtp: Callable[..., Conversation], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    outcome = smtp().send(
        basic(extra=[("X-Mxm-Flags", "16")]), "app@acme.example", ["u@example.net"]
    )
    assert outcome.code == "554 5.6.0"
    (refused,) = [x for x in lines() if ": reject:" in x["message"]]
    assert (refused["queue_id"], refused["account"]) == (QUEUE_ID, "acme")
    assert refused["message"].startswith(f"{QUEUE_ID}: reject: account=acme")
