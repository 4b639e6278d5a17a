"""Shared fixtures: real Redis, a scriptable sink and running txmail stacks (the harness is
txmail_testing/harness.py, which bench/ uses too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from txmail_testing.docker import IMAGE_BUILD, IMAGE_TAG, ImageBuild, unavailable
from txmail_testing.harness import RedisServer, Sink, Stack

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The image tests go last, and their image starts building now (txmail_testing/docker.py):
    the build is minutes of downloads that the other tests need not wait behind."""
    image_tests = [i for i in items if i.path.name == "test_image.py"]
    if not image_tests:
        return
    items[:] = [i for i in items if i.path.name != "test_image.py"] + image_tests
    if unavailable() is None and not config.option.collectonly:
        build = ImageBuild(REPO, IMAGE_TAG)
        config.stash[IMAGE_BUILD] = build
        build.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(IMAGE_BUILD, None)
    if build is not None:  # a run that ended before the image tests: stop the engine too
        build.engine.close()


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
