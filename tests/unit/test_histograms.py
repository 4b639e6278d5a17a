"""Latency histograms: observed in memory, flushed to a real Redis, rendered by /metrics."""

from __future__ import annotations

import redis
from prometheus_client.parser import text_string_to_metric_families

from txmail import histograms
from txmail.histograms import (
    MILTER_END_OF_MESSAGE,
    WEBHOOK_EVENT_DELAY,
    Histogram,
    Observations,
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
