"""Prometheus /metrics of a txmail node, read from the Redis counters at each scrape.

Every series carries a `scope` label. scope="node": this node's own (its Postfix queues, its
tracker, whether it reached Redis); sum them across nodes. scope="installation": read from the
shared Redis, so every node of one installation reports the same value; never sum them across
nodes (take one node's, or max by the other labels).

Metrics (prometheus-client text format), with their scope:
    txmail_messages_accepted_total               installation  milter: messages accepted
                                                               (stats:messages)
    txmail_messages_refused_total{code,status}   installation  milter: refusals by SMTP reply
                                                               code and RFC 3463 status
    txmail_policy_decisions_total{outcome}       installation  policyd decisions (stats:policy)
    txmail_events_today{account,kind}            installation  events of the current UTC day
                                                               (PREFIX {ACCOUNT}:counts:DAY)
    txmail_webhook_backlog_events{account}       installation  events not yet posted: the
                                                               consumer group's lag plus its
                                                               pending entries
    txmail_webhook_dead_letters{account}         installation  dead letters kept
                                                               (PREFIX {ACCOUNT}:webhook:dead)
    txmail_postfix_queue_messages{queue}         node          files in this node's Postfix
                                                               incoming, active, deferred,
                                                               hold and maildrop queues
    txmail_tracker_dropped_total                 node          opens and clicks dropped, queue
                                                               full
    txmail_up                                    node          1 when Redis answered this
                                                               scrape, else 0

Reads Redis with one pipeline per group of accounts; a scrape while Redis is down answers
txmail_up 0 and the queue sizes. Only clients in tracker.metrics_networks may read it (403).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from txmail import store
from txmail.errors import TemporaryFailure
from txmail.events import KINDS, WEBHOOK_GROUP
from txmail.tracker.services import SERVICES, Services, error_response, metrics_allowed

log = logging.getLogger("txmail.tracker")

QUEUES = ("incoming", "active", "deferred", "hold", "maildrop")
NODE = "node"  # the `scope` of a series about this node alone: sum across nodes
INSTALLATION = "installation"  # the same on every node (shared Redis): never sum


def queue_sizes(spool: Path) -> dict[str, int]:
    """Messages in each Postfix queue: files below its hashed folders."""
    sizes = {}
    for queue in QUEUES:
        count = 0
        for _, _, files in os.walk(spool / queue):
            count += len(files)
        sizes[queue] = count
    return sizes


def _count(fields: dict[str, str]) -> dict[str, int]:
    found = {}
    for name, value in fields.items():
        try:
            found[name] = int(value)
        except (TypeError, ValueError):
            continue
    return found


class RedisCollector(Collector):
    """Builds every metric from Redis (and the spool) when Prometheus scrapes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        services = self.services
        settings = services.settings
        queues = GaugeMetricFamily(
            "txmail_postfix_queue_messages",
            "Messages in Postfix's queues of this node",
            labels=["queue", "scope"],
        )
        for queue, size in queue_sizes(settings.postfix_queue_path).items():
            queues.add_metric([queue, NODE], size)
        yield queues
        dropped = CounterMetricFamily(
            "txmail_tracker_dropped",
            "Opens and clicks this node's tracker dropped because the queue was full",
            labels=["scope"],
        )
        dropped.add_metric([NODE], services.dropped)
        yield dropped
        up = GaugeMetricFamily(
            "txmail_up", "1 when Redis answered this node's scrape", labels=["scope"]
        )
        try:
            families = list(self._from_redis())
        except (redis.RedisError, TemporaryFailure) as exc:
            log.warning("metrics: Redis unavailable (%s)", exc.__class__.__name__)
            up.add_metric([NODE], 0)
            yield up
            return
        up.add_metric([NODE], 1)
        yield up
        yield from families

    def _from_redis(self) -> Iterator[Any]:
        client, keys = self.services.client, self.services.keys
        accepted = CounterMetricFamily(
            "txmail_messages_accepted",
            "Messages the milters of every node accepted",
            labels=["scope"],
        )
        refused = CounterMetricFamily(
            "txmail_messages_refused",
            "Messages the milters of every node refused, by reply",
            labels=["code", "status", "scope"],
        )
        policy = CounterMetricFamily(
            "txmail_policy_decisions",
            "Policy daemon decisions of every node",
            labels=["outcome", "scope"],
        )
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.message_stats)
        pipe.hgetall(keys.policy_stats)
        pipe.smembers(keys.accounts)
        message_stats, policy_stats, accounts = pipe.execute()
        accepted.add_metric([INSTALLATION], _count(message_stats).get("accepted", 0))
        for name, value in _count(message_stats).items():
            if name.startswith("refused:"):
                _, code, status = (name.split(":", 2) + ["", ""])[:3]
                refused.add_metric([code, status, INSTALLATION], value)
        for outcome, value in _count(policy_stats).items():
            policy.add_metric([outcome, INSTALLATION], value)
        yield accepted
        yield refused
        yield policy
        events = GaugeMetricFamily(
            "txmail_events_today",
            "Events of the current UTC day",
            labels=["account", "kind", "scope"],
        )
        backlog = GaugeMetricFamily(
            "txmail_webhook_backlog_events",
            "Events not yet posted to the account's webhook",
            labels=["account", "scope"],
        )
        dead = GaugeMetricFamily(
            "txmail_webhook_dead_letters",
            "Dead letters kept for the account",
            labels=["account", "scope"],
        )
        day = time.strftime("%Y%m%d", time.gmtime())
        names = sorted(accounts)
        pipe = client.pipeline(transaction=False)
        for account in names:
            pipe.hgetall(keys.event_counts(account, day))
            pipe.xlen(keys.dead_letters(account))
            pipe.exists(keys.events(account))
        rows = pipe.execute()
        with_stream = []
        for i, account in enumerate(names):
            counts, dead_count, has_stream = rows[3 * i : 3 * i + 3]
            for kind, value in _count(counts).items():
                if kind in KINDS:
                    events.add_metric([account, kind, INSTALLATION], value)
            dead.add_metric([account, INSTALLATION], int(dead_count))
            if has_stream:
                with_stream.append(account)
        for account in with_stream:
            backlog.add_metric([account, INSTALLATION], self._backlog(account))
        yield events
        yield backlog
        yield dead

    def _backlog(self, account: str) -> int:
        client, keys = self.services.client, self.services.keys
        try:
            groups = client.xinfo_groups(keys.events(account))
        except redis.ResponseError:
            return 0
        for group in groups:
            if group.get("name") == WEBHOOK_GROUP:
                lag = group.get("lag")
                if lag is None:  # Redis < 7 or an unknown lag: everything after the last id
                    lag = len(
                        store.decoded_entries(
                            client.xrange(
                                keys.events(account),
                                f"({group.get('last-delivered-id', '0-0')}",
                                "+",
                                10000,
                            )
                        )
                    )
                return int(lag) + int(group.get("pending", 0))
        return int(client.xlen(keys.events(account)))  # no dispatcher yet: all of it waits


def render(services: Services) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(services))
    return generate_latest(registry)


async def handler(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if not metrics_allowed(request.remote or "", services.settings.tracker.metrics_networks):
        return error_response(
            403, "Metrics are served to tracker.metrics_networks only", None, None
        )
    body = await asyncio.to_thread(render, services)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
