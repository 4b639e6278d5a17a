"""Fixtures of the event tests (also imported by tests/unit/maillog and tests/unit/webhooks):
a client of the session's real Redis, closed after the test, and a fresh key prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.harness import RedisServer
from txmail.store import Keys


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    made = redis_server.client()
    yield made
    made.close()
    made.connection_pool.disconnect()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:8]}:")
