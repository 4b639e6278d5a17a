"""Fixtures of the report tests: a fresh key prefix, an account, and a helper that sends a
message through the code paths the milter and the outcome recorders use. The Redis client
fixture is tests/conftest.py's."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from txmail.accounts.records import Accounts
from txmail.accounts.reputation import outcome_hook
from txmail.events import Recorder, SuppressionPolicy, record_outcome
from txmail.stats import count_accepted
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages

RECORD_TTL = 7 * 86400


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:8]}:")


@pytest.fixture
def accounts(client: redis.Redis, keys: Keys) -> Accounts:
    made = Accounts(client, keys)
    made.add("acme", ["acme.test"], "a long enough password", settings={"max_bounce_rate": 5})
    made.add("other", ["other.test"], "a long enough password")
    return made


Send = Callable[..., MessageRecord]


@pytest.fixture
def send(client: redis.Redis, keys: Keys) -> Send:
    """send(qid, recipients, tags=(), outcomes={recipient: (kind, details)}, account=...,
    now=...): the message record and its daily count written as the milter writes them, then
    each outcome recorded as the maillog follower does (reputation counted)."""
    recorder = Recorder(client, keys, outcome_hook=outcome_hook(client, keys))

    def sending(
        qid: str,
        recipients: list[str],
        tags: tuple[str, ...] = (),
        outcomes: dict[str, tuple[str, dict[str, Any]]] | None = None,
        account: str = "acme",
        now: float | None = None,
    ) -> MessageRecord:
        moment = time.time() if now is None else now
        record = MessageRecord(
            queue_id=qid,
            account=account,
            envelope_sender=f"app@{account}.test",
            recipients=recipients,
            size=1234,
            accepted_at=moment,
            tags=list(tags),
        )

        def also(pipe: Any) -> None:  # as txmail/milter/finish.py _store
            for tag in tags:
                pipe.hincrby(keys.tag_counts(account), tag, 1)
            count_accepted(pipe, keys, account, list(tags), moment, counter_days=400)

        Messages(client, keys, RECORD_TTL).record(record, also=also)
        for recipient, (kind, details) in (outcomes or {}).items():
            record_outcome(recorder, record, kind, recipient, details, SuppressionPolicy())
        return record

    return sending
