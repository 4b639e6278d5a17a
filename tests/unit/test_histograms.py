"""Latency histograms: observed in memory, flushed to a real Redis, rendered by /metrics."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from txmail import histograms
from txmail.config import Settings
from txmail.histograms import (
    MILTER_END_OF_MESSAGE,
    WEBHOOK_EVENT_DELAY,
    Histogram,
    Observations,
    flush_every,
    flushing,
    node_name,
    series_of,
)
from txmail.store import Keys
from txmail_testing.harness import RedisServer

KEY = Keys("t:").node_histograms("node1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_observations_are_flushed_as_bucket_counts(client: redis.Redis) -> None:
    client.delete(KEY)
    observations = Observations("milter")
    for seconds in (0.003, 0.04, 0.04, 0.7, 99.0):
        observations.observe(MILTER_END_OF_MESSAGE, seconds)
    observations.observe(WEBHOOK_EVENT_DELAY, 2.0, "bounce")
    observations.flush(client, KEY)
    stored = client.hgetall(KEY)
    name = MILTER_END_OF_MESSAGE.name
    assert stored[f"{name}||0.005"] == "1"
    assert stored[f"{name}||0.05"] == "2"
    assert stored[f"{name}||1.0"] == "1"
    assert stored[f"{name}||inf"] == "1"
    assert abs(float(stored[f"{name}||sum"]) - 99.783) < 1e-9
    assert stored[f"{WEBHOOK_EVENT_DELAY.name}|bounce|2.5"] == "1"
    assert float(stored["seen|milter"]) > 0
    assert 0 < client.ttl(KEY) <= histograms.KEEP_SECONDS
    # nothing new and no heartbeat due: no write at all
    client.delete(KEY)
    observations.flush(client, KEY)
    assert not client.exists(KEY)


def test_rendered_buckets_are_cumulative_and_count_the_sum() -> None:
    name = MILTER_END_OF_MESSAGE.name
    fields = {
        f"{name}||0.005": "1",
        f"{name}||0.05": "2",
        f"{name}||0.07": "4",  # a bound no longer declared: counted in the next one above
        f"{name}||inf": "1",
        f"{name}||sum": "3.5",
        "other||1.0": "9",
    }
    (series,) = series_of(MILTER_END_OF_MESSAGE, fields)
    buckets = dict(series.buckets)
    assert buckets[0.005] == 1
    assert buckets[0.05] == 3
    assert buckets[0.1] == 7
    assert buckets[10.0] == 7
    assert buckets[float("inf")] == 8
    assert series.total == 3.5
    two = Histogram("x_seconds", "", (1.0,), ("kind", "outcome"))
    assert series_of(two, {"x_seconds|bounce|1.0": "1"}) == []  # labels that do not fit


def test_a_failed_flush_keeps_the_observations(redis_server: RedisServer) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    clock = Clock()
    observations = Observations("webhooks", clock=clock)
    observations.observe(MILTER_END_OF_MESSAGE, 0.01)
    observations.flush(down, KEY)
    live = redis_server.client()
    live.delete(KEY)
    observations.flush(live, KEY)  # the heartbeat is written again after the failure too
    stored = live.hgetall(KEY)
    assert stored[f"{MILTER_END_OF_MESSAGE.name}||0.01"] == "1"
    assert "seen|webhooks" in stored
    assert observations.due() is False  # once a second, by the clock given
    clock.now += histograms.FLUSH_SECONDS
    assert observations.due() is True


def test_the_tracker_renders_histograms_prometheus_can_parse(client: redis.Redis) -> None:
    from txmail.tracker.metrics import histogram_families

    observations = Observations("policyd")
    observations.observe(MILTER_END_OF_MESSAGE, 0.02)
    observations.observe(WEBHOOK_EVENT_DELAY, 0.3, "delivery")
    families = list(histogram_families(_fields(observations)))
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    eom = parsed["txmail_milter_end_of_message_seconds"]
    assert eom.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in eom.samples}
    assert values[("txmail_milter_end_of_message_seconds_bucket", "0.01")] == 0
    assert values[("txmail_milter_end_of_message_seconds_bucket", "0.025")] == 1
    assert values[("txmail_milter_end_of_message_seconds_count", None)] == 1
    assert 'kind="delivery"' in text and 'scope="node"' in text


def _fields(observations: Observations) -> dict[str, str]:
    counts, sums = observations.take()
    return {**{k: str(v) for k, v in counts.items()}, **{k: repr(v) for k, v in sums.items()}}


def test_every_container_of_a_node_writes_the_same_hash(
    client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In compose each component runs in a container of its own, with its own host name, on
    one configuration and state volume: the milter, policyd, the dispatcher and the tracker
    that reads their hash must agree on the node's name all the same."""
    settings = Settings(state_dir=str(tmp_path), hostname="mta.example.test")
    keys = Keys("t:")
    names = []
    for container in ("3f2a9c0d1b7e", "8e1d4b2c9a6f"):
        monkeypatch.setattr(socket, "gethostname", lambda container=container: container)
        names.append(node_name(settings))
    client.delete(keys.node_histograms(names[0]))
    for name, component in zip(names, ("milter", "policyd"), strict=True):
        observations = Observations(component)
        observations.observe(MILTER_END_OF_MESSAGE, 0.01)
        observations.flush(client, keys.node_histograms(name))
    assert names[0] == names[1]
    assert names[0].startswith("mta.example.test-")
    stored = client.hgetall(keys.node_histograms(names[0]))
    assert stored[f"{MILTER_END_OF_MESSAGE.name}||0.01"] == "2"
    assert {"seen|milter", "seen|policyd"} <= set(stored)
    # Two nodes: a name of its own, or (tests, one machine) a state directory of its own.
    assert node_name(Settings(state_dir=str(tmp_path), node_name="mta2")) != names[0]
    assert (
        node_name(Settings(state_dir=str(tmp_path / "b"), hostname="mta.example.test"))
        != (names[0])
    )


class Failing:
    """A client whose first pipeline raises an error no flush expects."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls = 0
        self.transactions: list[bool] = []

    def pipeline(self, transaction: bool = True) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug in a client library")
        self.transactions.append(transaction)
        return self.client.pipeline(transaction=transaction)


def test_the_flush_thread_outlives_an_unexpected_error(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client.delete(KEY)
    observations = Observations("milter")
    observations.observe(MILTER_END_OF_MESSAGE, 0.01)
    waits = iter([False, False, True])  # two flushes, then stop
    failing = Failing(client)
    with caplog.at_level(logging.WARNING, "txmail.histograms"):
        flush_every(observations, failing, KEY, lambda seconds: next(waits)).join()
    assert "cannot write the latency histograms: a bug in a client library" in caplog.text
    stored = client.hgetall(KEY)  # the second flush wrote them
    assert stored[f"{MILTER_END_OF_MESSAGE.name}||0.01"] == "1"
    assert "seen|milter" in stored
    assert failing.transactions == [True]  # MULTI/EXEC: a lost answer never counts twice


def test_what_the_last_second_observed_is_flushed_at_the_stop(client: redis.Redis) -> None:
    client.delete(KEY)
    observations = Observations("webhooks", wall_clock=lambda: 1234.5)
    with flushing(observations, client, KEY):
        observations.observe(MILTER_END_OF_MESSAGE, 0.3)
    stored = client.hgetall(KEY)
    assert stored[f"{MILTER_END_OF_MESSAGE.name}||0.5"] == "1"
    assert stored["seen|webhooks"] == "1234.5"


def test_queue_gives_an_undo_that_keeps_everything_for_the_next_flush(
    client: redis.Redis,
) -> None:
    client.delete(KEY)
    observations = Observations("policyd")
    observations.observe(MILTER_END_OF_MESSAGE, 0.01)
    undo = observations.queue(client.pipeline(), KEY)  # never executed: as if it failed
    assert undo is not None
    undo()
    observations.flush(client, KEY)
    stored = client.hgetall(KEY)
    assert stored[f"{MILTER_END_OF_MESSAGE.name}||0.01"] == "1"
    assert "seen|policyd" in stored  # the heartbeat tried again at once
    assert observations.queue(client.pipeline(), KEY) is None  # nothing new, no beat due
