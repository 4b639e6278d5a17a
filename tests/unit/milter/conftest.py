"""Fixtures for the milter's unit tests: a real (private) Redis and a test account per module."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.unit.milter.driver import Conversation, make_context
from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail_testing.harness import RedisServer

_prefixes = itertools.count()


@pytest.fixture
def prefix(redis_server: RedisServer) -> Iterator[str]:
    name = f"milter{next(_prefixes)}:"  # a name of its own: other modules count t0:, t1: ...
    yield name
    client = redis_server.client()
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def smtp(
    client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Conversation]:
    """`smtp(settings={...}, node=Settings(...), **services)`: a connection logged in as
    account `acme` (domains acme.example and mail.acme.example) with those account settings,
    on a node with those settings and services (MilterContext fields)."""
    monkeypatch.setattr("txmail.accounts.records.BCRYPT_ROUNDS", 4)  # speed, not security
    accounts = Accounts(client, make_context(client, prefix).keys)
    made: dict[str, bool] = {}

    def connect(
        settings: dict[str, Any] | None = None,
        login: str | None = "acme",
        node: Settings | None = None,
        **services: Any,
    ) -> Conversation:
        if not made:
            accounts.add("acme", ["acme.example", "mail.acme.example"], "a-long-password-1")
            made["acme"] = True
        if settings:
            accounts.update_settings("acme", settings)
        return Conversation(make_context(client, prefix, node, **services), login)

    return connect
