"""Shared fixtures: real Redis, a scriptable sink and running txmail stacks (the harness is
txmail_testing/harness.py, which bench/ uses too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from txmail_testing.harness import RedisServer, Sink, Stack


@pytest.fixture(scope="session")
def sink() -> Iterator[Sink]:
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's real Redis, closed after the test."""
    made = redis_server.client()
    yield made
    made.close()
    made.connection_pool.disconnect()


@pytest.fixture(scope="session")
def stack(sink: Sink) -> Iterator[Stack]:
    """One running node with its private Redis, shared by the tests that do not disturb it."""
    node = Stack(relay_port=sink.port, name="shared", log_permits=True)
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def make_stack(sink: Sink) -> Iterator[object]:
    """Factory for stacks a test may break (stop Redis, kill components); torn down after."""
    made: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        node = Stack(relay_port=sink.port, **kwargs)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
