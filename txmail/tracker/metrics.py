"""Prometheus /metrics of a txmail node, read from Redis (and the spool) at each scrape.

Every series carries a `scope` label. scope="node": this node's own (its Postfix queues, its
tracker, whether it reached Redis, the latency histograms of its milter, policyd and
webhooks dispatcher); sum them across nodes. scope="installation": read from the shared
Redis, so every node of one installation reports the same value; never sum them across nodes
(take one node's, or max by the other labels).

The metrics are declared in METRICS below (name, type, labels, help, scope) and in
txmail/histograms.py; reference() turns them into the README's metric list
(`python -m txmail.docs README.md`), so the list cannot drift from what is served.

Cardinality stays bounded: the only open-ended label is `account`, one series per account
(times a fixed list: event kinds, reputation checks); tags never become labels; `code` and
`status` of refusals are cut to 3 and 9 characters of [0-9A-Za-z._-] and come only from the
milter's own replies; the other labels take a few fixed values.

Reads Redis with one pipeline for the installation's counters, one for the accounts' records,
one per account for its usage and reputation (accounts/usage.py) and one per account with
an event stream for its webhook backlog; a scrape while Redis is down answers txmail_up 0,
the build and the queue sizes. Only clients in tracker.metrics_networks may read it (403).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

import txmail
from txmail import histograms, store
from txmail.accounts.records import Accounts
from txmail.accounts.usage import clock, read_usage
from txmail.errors import TemporaryFailure
from txmail.events import KINDS, WEBHOOK_GROUP
from txmail.tracker.services import SERVICES, Services, error_response, metrics_allowed

log = logging.getLogger("txmail.tracker")

QUEUES = ("incoming", "active", "deferred", "hold", "maildrop")
NODE = "node"  # the `scope` of a series about this node alone: sum across nodes
INSTALLATION = "installation"  # the same on every node (shared Redis): never sum
COMPONENTS = ("milter", "policyd", "webhooks")  # processes that report a heartbeat


@dataclass(frozen=True)
class Metric:
    """One metric family as served; a counter's name is without its `_total`."""

    name: str
    type: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...]
    scope: str
    values: str = ""  # what the labels can be, for the README's list

    def family(self) -> Any:
        make = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        return make(self.name, self.help, labels=[*self.labels, "scope"])

    @property
    def served(self) -> str:
        return f"{self.name}_total" if self.type == "counter" else self.name


BUILD = Metric(
    "txmail_build_info",
    "gauge",
    "txmail's version and Python's on this node (always 1)",
    ("version", "python"),
    NODE,
    "one series",
)
UP = Metric("txmail_up", "gauge", "1 when Redis answered this node's scrape, else 0", (), NODE)
SEEN = Metric(
    "txmail_component_last_seen_timestamp_seconds",
    "gauge",
    "Unix time this node's component last reported to Redis (at least every 10 s while it runs)",
    ("component",),
    NODE,
    "component: milter, policyd, webhooks",
)
QUEUE = Metric(
    "txmail_postfix_queue_messages",
    "gauge",
    "Messages in Postfix's queues of this node",
    ("queue",),
    NODE,
    "queue: incoming, active, deferred, hold, maildrop",
)
DROPPED = Metric(
    "txmail_tracker_dropped",
    "counter",
    "Opens and clicks this node's tracker dropped because the queue was full",
    (),
    NODE,
)
ACCEPTED = Metric(
    "txmail_messages_accepted",
    "counter",
    "Messages the milters of every node accepted",
    (),
    INSTALLATION,
)
REFUSED = Metric(
    "txmail_messages_refused",
    "counter",
    "Messages the milters of every node refused, by reply",
    ("code", "status"),
    INSTALLATION,
    "the milter's own SMTP reply code and RFC 3463 status",
)
POLICY = Metric(
    "txmail_policy_decisions",
    "counter",
    "Policy daemon decisions of every node, by outcome",
    ("outcome",),
    INSTALLATION,
    "outcome: the action's verb (dunno, defer_if_permit, reject, ...)",
)
EVENTS = Metric(
    "txmail_events",
    "counter",
    "Events recorded for the account since it began, by kind",
    ("account", "kind"),
    INSTALLATION,
    "one per account and event kind",
)
EVENTS_TODAY = Metric(
    "txmail_events_today",
    "gauge",
    "Events of the current UTC day (deprecated: use rate(txmail_events_total[...]))",
    ("account", "kind"),
    INSTALLATION,
    "one per account and kind",
)
BACKLOG = Metric(
    "txmail_webhook_backlog_events",
    "gauge",
    "Events not yet posted to the account's webhook",
    ("account",),
    INSTALLATION,
    "one per account with events",
)
OLDEST = Metric(
    "txmail_webhook_oldest_undelivered_age_seconds",
    "gauge",
    "Age of the account's oldest event not yet acknowledged by its webhook (0: none waits)",
    ("account",),
    INSTALLATION,
    "one per account with events",
)
DEAD = Metric(
    "txmail_webhook_dead_letters",
    "gauge",
    "Dead letters kept for the account",
    ("account",),
    INSTALLATION,
    "one per account",
)
SUSPENDED = Metric(
    "txmail_account_suspended",
    "gauge",
    "1 when the account is suspended, else 0",
    ("account",),
    INSTALLATION,
    "one per account",
)
RATE = Metric(
    "txmail_account_reputation_ratio",
    "gauge",
    "Hard-bounce or complaint ratio over the account's reputation window (0 to 1)",
    ("account", "check"),
    INSTALLATION,
    "check: bounce or complaint",
)
THRESHOLD = Metric(
    "txmail_account_reputation_threshold_ratio",
    "gauge",
    "Ratio above which the account is suspended (max_bounce_rate, max_complaint_rate)",
    ("account", "check"),
    INSTALLATION,
    "check: bounce or complaint",
)
JUDGED = Metric(
    "txmail_account_reputation_judged",
    "gauge",
    "1 when the window holds reputation_min_recipients outcomes, so a rate can suspend",
    ("account",),
    INSTALLATION,
    "one per account",
)
WARMUP_DAY = Metric(
    "txmail_account_warmup_day",
    "gauge",
    "The account's warm-up day (accounts warming up only)",
    ("account",),
    INSTALLATION,
    "one per account warming up",
)
WARMUP_QUOTA = Metric(
    "txmail_account_warmup_quota_recipients",
    "gauge",
    "Recipients the account may send today under its warm-up schedule",
    ("account",),
    INSTALLATION,
    "one per account warming up",
)
WARMUP_SENT = Metric(
    "txmail_account_warmup_sent_recipients",
    "gauge",
    "Recipients the account has sent today (the warm-up quota's count)",
    ("account",),
    INSTALLATION,
    "one per account warming up",
)
METRICS = (
    BUILD,
    UP,
    SEEN,
    QUEUE,
    DROPPED,
    ACCEPTED,
    REFUSED,
    POLICY,
    EVENTS,
    EVENTS_TODAY,
    BACKLOG,
    OLDEST,
    DEAD,
    SUSPENDED,
    RATE,
    THRESHOLD,
    JUDGED,
    WARMUP_DAY,
    WARMUP_QUOTA,
    WARMUP_SENT,
)


def reference() -> str:
    """The README's metric list (Markdown table), from METRICS and txmail/histograms.py."""
    rows = [
        "| metric | type | labels (besides `scope`) | scope | meaning |",
        "|---|---|---|---|---|",
    ]
    for metric in METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "-"
        if metric.values:
            labels += f" ({metric.values})"
        rows.append(
            f"| `{metric.served}` | {metric.type} | {labels} | {metric.scope} | {metric.help} |"
        )
    for histogram in histograms.HISTOGRAMS:
        labels = ", ".join(f"`{label}`" for label in histogram.labels) or "-"
        if histogram.label_values:
            labels += f" ({histogram.label_values})"
        bounds = ", ".join(floatToGoString(b) for b in histogram.buckets)
        rows.append(
            f"| `{histogram.name}` | histogram | {labels} | node | {histogram.help}; "
            f"buckets (s): {bounds} |"
        )
    return "\n".join(rows) + "\n"


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


def _stream_seconds(entry_id: str) -> float:
    """A stream entry id's time (milliseconds before the dash), in seconds."""
    return int(str(entry_id).split("-", 1)[0]) / 1000.0


def histogram_families(fields: dict[str, str]) -> Iterator[Any]:
    """The histograms of txmail/histograms.py from a node's hash (HGETALL, decoded)."""
    for histogram in histograms.HISTOGRAMS:
        family = HistogramMetricFamily(
            histogram.name,
            histogram.help,
            labels=[*histogram.labels, "scope"],
        )
        for series in histograms.series_of(histogram, fields):
            family.add_metric(
                [*series.labels, NODE],
                [(floatToGoString(bound), count) for bound, count in series.buckets],
                series.total,
            )
        yield family


class RedisCollector(Collector):
    """Builds every metric from Redis (and the spool) when Prometheus scrapes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        services = self.services
        settings = services.settings
        build = BUILD.family()
        build.add_metric([txmail.__version__, platform.python_version(), NODE], 1)
        yield build
        queues = QUEUE.family()
        for queue, size in queue_sizes(settings.postfix_queue_path).items():
            queues.add_metric([queue, NODE], size)
        yield queues
        dropped = DROPPED.family()
        dropped.add_metric([NODE], services.dropped)
        yield dropped
        up = UP.family()
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
        client, keys, settings = self.services.client, self.services.keys, self.services.settings
        accepted, refused, policy = ACCEPTED.family(), REFUSED.family(), POLICY.family()
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.message_stats)
        pipe.hgetall(keys.policy_stats)
        pipe.hgetall(keys.node_histograms(histograms.node_name(settings)))
        message_stats, policy_stats, latencies = map(store.decoded_hash, pipe.execute())
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
        seen = SEEN.family()
        for component in COMPONENTS:
            try:
                seen.add_metric([component, NODE], float(latencies[f"seen|{component}"]))
            except (KeyError, ValueError):
                continue
        yield seen
        yield from histogram_families(latencies)
        yield from self._accounts()

    def _accounts(self) -> Iterator[Any]:
        client, keys, settings = self.services.client, self.services.keys, self.services.settings
        events, today, backlog, oldest, dead = (
            m.family() for m in (EVENTS, EVENTS_TODAY, BACKLOG, OLDEST, DEAD)
        )
        suspended, rate, threshold, judged = (
            m.family() for m in (SUSPENDED, RATE, THRESHOLD, JUDGED)
        )
        warmup_day, warmup_quota, warmup_sent = (
            m.family() for m in (WARMUP_DAY, WARMUP_QUOTA, WARMUP_SENT)
        )
        day = time.strftime("%Y%m%d", time.gmtime())
        accounts = Accounts(client, keys).all()
        pipe = client.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(keys.event_totals(account.name))
            pipe.hgetall(keys.event_counts(account.name, day))
            pipe.xlen(keys.dead_letters(account.name))
            pipe.exists(keys.events(account.name))
        rows = pipe.execute()
        now = clock(settings)
        for i, account in enumerate(accounts):
            name = account.name
            totals, counts, dead_count, has_stream = rows[4 * i : 4 * i + 4]
            for kind, value in _count(store.decoded_hash(totals)).items():
                if kind in KINDS:
                    events.add_metric([name, kind, INSTALLATION], value)
            for kind, value in _count(store.decoded_hash(counts)).items():
                if kind in KINDS:
                    today.add_metric([name, kind, INSTALLATION], value)
            dead.add_metric([name, INSTALLATION], int(dead_count))
            if has_stream:
                waiting, age = self._backlog(name)
                backlog.add_metric([name, INSTALLATION], waiting)
                oldest.add_metric([name, INSTALLATION], age)
            suspended.add_metric([name, INSTALLATION], 1 if account.suspended else 0)
            usage = read_usage(client, keys, name, account.settings, repr(account.created_at), now)
            reputation = usage.reputation
            judged.add_metric([name, INSTALLATION], 1 if reputation["judged"] else 0)
            for check in reputation["checks"]:
                key = "bounce" if check["metric"] == "hard bounce" else "complaint"
                rate.add_metric([name, key, INSTALLATION], check["rate"] / 100.0)
                threshold.add_metric([name, key, INSTALLATION], check["threshold"] / 100.0)
            if usage.warmup is not None:
                warmup_day.add_metric([name, INSTALLATION], usage.warmup["day"])
                if usage.warmup["quota"] is not None:
                    warmup_quota.add_metric([name, INSTALLATION], usage.warmup["quota"])
                warmup_sent.add_metric([name, INSTALLATION], usage.warmup["used"])
        yield from (events, today, backlog, oldest, dead, suspended, rate, threshold, judged)
        yield from (warmup_day, warmup_quota, warmup_sent)

    def _backlog(self, account: str) -> tuple[int, float]:
        """Events of the account not yet acknowledged by its webhook, and the age in seconds
        of the oldest of them (0 when none waits)."""
        client, keys = self.services.client, self.services.keys
        stream = keys.events(account)
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:
            return 0, 0.0
        for group in groups:
            if group.get("name") != WEBHOOK_GROUP:
                continue
            last = str(group.get("last-delivered-id", "0-0"))
            pipe = client.pipeline(transaction=False)
            pipe.xpending(stream, WEBHOOK_GROUP)
            pipe.xrange(stream, f"({last}", "+", 1)
            pending, unread = pipe.execute()
            lag = group.get("lag")
            if lag is None:  # Redis < 7 or an unknown lag: everything after the last id
                unsent = len(store.decoded_entries(client.xrange(stream, f"({last}", "+", 10000)))
            else:
                unsent = int(lag)
            waiting = unsent + int(group.get("pending", 0))
            firsts = []
            if pending and pending.get("min"):
                firsts.append(_stream_seconds(store.decoded(pending["min"])))
            for entry_id, _ in unread or []:
                firsts.append(_stream_seconds(store.decoded(entry_id)))
            age = max(0.0, time.time() - min(firsts)) if waiting and firsts else 0.0
            return waiting, age
        # no dispatcher yet: all of it waits
        pipe = client.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xrange(stream, "-", "+", 1)
        size, first = pipe.execute()
        age = time.time() - _stream_seconds(store.decoded(first[0][0])) if first else 0.0
        return int(size), max(0.0, age)


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
