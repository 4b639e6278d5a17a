"""Latency histograms that the daemons observe and the tracker's /metrics renders.

    observations = Observations()
    observations.observe(MILTER_END_OF_MESSAGE, 0.042)
    observations.observe(WEBHOOK_EVENT_DELAY, 3.1, "bounce")
    observations.flush(client, keys.node_histograms(node_name(settings)))  # once a second

The milter, policyd and the webhooks dispatcher are processes apart from the tracker that serves
/metrics, so each one counts its observations in memory (thread-safe: the milter and the
dispatcher observe from several threads) and adds them about once a second, in one pipelined
round trip, to this node's hash PREFIX stats:histograms:NODE (HINCRBY per bucket and count,
HINCRBYFLOAT for the sum; NODE from the configuration, node_name()). No message waits on
Redis for a metric. The tracker of the same node reads that hash at each scrape and renders
`_bucket{le=...}`, `_sum` and `_count` (tracker/metrics.py). Series are per node
(scope="node"): sum them across nodes.

Fields of the hash: "NAME|LABELS|BOUND" (observations at most BOUND seconds and above the
bound before it: not cumulative, so a changed bucket list never breaks a series),
"NAME|LABELS|inf" (above the last bound) and "NAME|LABELS|sum"; LABELS is the label values
joined by ",". "seen|COMPONENT" (milter, policyd, webhooks) is the Unix time of the process's
last flush, written at least every 10 seconds even when it observed nothing: /metrics'
txmail_component_last_seen_timestamp_seconds, so an alert sees a component that stopped.
Label values are fixed words (an event kind, an outcome), never an account or a tag, so the
hash stays a few hundred fields at most.

A flush that fails (Redis down) keeps what it took for the next one (in MULTI/EXEC, so a flush
cut off half way wrote nothing: see transactional()); a process that stops flushes once more,
and one killed with -9 loses at most one second of observations. The hash expires 30 days
after its last write, so a node that is gone leaves nothing behind.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster

from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.store.keys import NODE_HISTOGRAMS, NODES_SEEN

log = logging.getLogger("txmail.histograms")

KEEP_SECONDS = 30 * 86400  # a gone node's hash lapses after this long without a write
FLUSH_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0  # an idle process still writes "seen|COMPONENT" this often


@dataclass(frozen=True)
class Histogram:
    """One histogram family: its metric name, help, fixed bucket bounds (seconds, ascending)
    and label names (whose values are always drawn from a short fixed list)."""

    name: str
    help: str
    buckets: tuple[float, ...]
    labels: tuple[str, ...] = ()
    label_values: str = ""  # what the labels can be, for the README's metric list


MILTER_END_OF_MESSAGE = Histogram(
    "txmail_milter_end_of_message_seconds",
    "Time the milter took at end of message (rules, DKIM, recording), accepted or refused",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POLICY_DECISION = Histogram(
    "txmail_policy_decision_seconds",
    "Time policyd took to answer one policy request",
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
WEBHOOK_POST = Histogram(
    "txmail_webhook_post_seconds",
    "Time one webhook post took until its answer (or its failure), by outcome",
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    ("outcome",),
    "outcome: posted (2xx) or failed",
)
WEBHOOK_EVENT_DELAY = Histogram(
    "txmail_webhook_event_delay_seconds",
    "Time from an event's recording to its post being acknowledged (2xx), by event kind; "
    'kind="bounce" is the bounce-to-webhook latency',
    (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0),
    ("kind",),
    "kind: an event kind, or other",
)
HISTOGRAMS = (MILTER_END_OF_MESSAGE, POLICY_DECISION, WEBHOOK_POST, WEBHOOK_EVENT_DELAY)


def node_name(settings: Settings) -> str:
    """This node's name in PREFIX stats:histograms:NODE: its configured name (`node_name`, else
    `hostname`, Postfix's myhostname) and a digest of the state directory. Both come from the
    configuration and the state volume, which every process of one node shares, also when each
    runs in a container with a host name of its own (compose); two nodes on one machine (a
    test's) differ by their state directories."""
    state = str(settings.state_path.resolve())
    name = settings.node_name or settings.hostname
    return f"{name}-{hashlib.sha256(state.encode()).hexdigest()[:8]}"


def bound_field(bound: float) -> str:
    return repr(float(bound))


class Observations:
    """Observations of this process not yet added to Redis."""

    def __init__(
        self,
        component: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.component = component
        self._wall_clock = wall_clock  # the heartbeat's Unix time
        self._last_seen = -1e18
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._sums: collections.defaultdict[str, float] = collections.defaultdict(float)
        self._clock = clock
        self._last_flush = clock()

    def observe(self, histogram: Histogram, seconds: float, *labels: str) -> None:
        series = f"{histogram.name}|{','.join(labels)}"
        seconds = max(0.0, seconds)
        at = bisect.bisect_left(histogram.buckets, seconds)
        bucket = bound_field(histogram.buckets[at]) if at < len(histogram.buckets) else "inf"
        with self._lock:
            self._counts[f"{series}|{bucket}"] += 1
            self._sums[f"{series}|sum"] += seconds

    def beat_due(self) -> bool:
        """True when "seen|COMPONENT" is due (every HEARTBEAT_SECONDS); the caller writes it."""
        if not self.component:
            return False
        now = self._clock()
        if now - self._last_seen < HEARTBEAT_SECONDS:
            return False
        self._last_seen = now
        return True

    def beat_failed(self) -> None:
        self._last_seen = -1e18  # try again at the next flush

    def take(self) -> tuple[dict[str, int], dict[str, float]]:
        with self._lock:
            counts, sums = dict(self._counts), dict(self._sums)
            self._counts.clear()
            self._sums.clear()
        return counts, sums

    def put_back(self, counts: dict[str, int], sums: dict[str, float]) -> None:
        with self._lock:
            self._counts.update(counts)
            for name, total in sums.items():
                self._sums[name] += total

    def due(self) -> bool:
        """True about once a second (then the caller flushes)."""
        now = self._clock()
        if now - self._last_flush < FLUSH_SECONDS:
            return False
        self._last_flush = now
        return True

    def queue(self, pipe: Any, key: str) -> Callable[[], None] | None:
        """Queue on `pipe` what was observed since the last flush, and the heartbeat when due,
        as writes to `key`. Returns None when there is nothing to write, else `undo`: call it
        when the pipeline failed, and the observations are kept for the next flush (and the
        heartbeat tried again). Observations.flush and policyd's flush share it."""
        counts, sums = self.take()
        beat = self.beat_due()
        if not counts and not beat:
            return None
        write(pipe, key, counts, sums, self.component if beat else "", now=self._wall_clock())

        def undo() -> None:
            self.put_back(counts, sums)
            if beat:
                self.beat_failed()

        return undo

    def flush(self, client: Any, key: str) -> None:
        """Add what was observed, and the heartbeat when due, to `key` in one pipeline."""
        pipe = client.pipeline(transaction=transactional(client))
        undo = self.queue(pipe, key)
        if undo is None:
            return
        try:
            pipe.execute()
        except (redis.RedisError, TemporaryFailure) as exc:
            log.debug("cannot write the latency histograms yet: %s", exc)
            undo()


def transactional(client: Any) -> bool:
    """Whether a flush's pipeline can be MULTI/EXEC. With it, a flush cut off before its EXEC
    reached Redis wrote nothing, so keeping its observations for the next flush counts none
    twice (a plain pipeline cut off half way has written the first part); only an answer lost
    after EXEC ran still counts one flush twice. Not on a Redis Cluster, whose client (redis-py
    before 6) refuses transactions and whose policyd flush spans two slots: there a flush cut
    off half way counts its first part twice."""
    return not isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def write(
    pipe: Any,
    key: str,
    counts: dict[str, int],
    sums: dict[str, float],
    seen: str = "",
    now: float | None = None,
) -> None:
    """Queue the HINCRBYs of `counts` and `sums` (and "seen|SEEN", the heartbeat of component
    SEEN at Unix time `now`, when given) on `pipe`."""
    for name, count in counts.items():
        pipe.hincrby(key, name, count)
    for name, total in sums.items():
        pipe.hincrbyfloat(key, name, total)
    if seen:
        at = time.time() if now is None else now
        pipe.hset(key, f"seen|{seen}", repr(at))
        # The nodes page reads the nodes from this index, never by a SCAN of the keyspace.
        head, marker, node = key.rpartition(NODE_HISTOGRAMS)
        if marker and node:
            pipe.zadd(head + NODES_SEEN, {node: at})
    pipe.expire(key, KEEP_SECONDS)


def flush_every(
    observations: Observations,
    client: Any,
    key: str,
    wait: Callable[[float], bool] | None = None,
) -> threading.Thread:
    """A daemon thread that flushes `observations` once a second: `wait(seconds)` sleeps
    between flushes and returns True to stop (the default never does). Any error is logged
    and the next flush tried: a thread that died would stop the heartbeat, and its process
    would look down while it serves."""

    pause = wait or threading.Event().wait  # an Event never set: a plain sleep

    def run() -> None:
        while not pause(FLUSH_SECONDS):
            flush_logged(observations, client, key)

    thread = threading.Thread(target=run, name="histograms", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def flushing(observations: Observations, client: Any, key: str) -> Iterator[None]:
    """Flush `observations` once a second while the block runs (the milter's: its work
    happens in threads pymilter starts), and once more when it ends, so what the last second
    observed is not lost at a stop."""
    stop = threading.Event()
    thread = flush_every(observations, client, key, stop.wait)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5.0)
        flush_logged(observations, client, key)


def flush_logged(observations: Observations, client: Any, key: str) -> None:
    """observations.flush, with any unexpected error logged instead of raised (a flush thread's
    loop, and the last flush of a process that stops)."""
    try:
        observations.flush(client, key)
    except Exception as exc:  # the metrics thread must outlive any one failure
        log.warning("cannot write the latency histograms: %s", exc)


@dataclass(frozen=True)
class Series:
    """One rendered series: label values, cumulative (le, count) pairs with +Inf, the sum."""

    labels: tuple[str, ...]
    buckets: list[tuple[float, int]]
    total: float


def series_of(histogram: Histogram, fields: dict[str, str]) -> list[Series]:
    """The series of `histogram` in a node's hash (as HGETALL decoded it): each bucket's
    count made cumulative over the declared bounds; a stored bound that is no longer declared
    is counted in the next declared one above it."""
    per: dict[str, dict[str, str]] = collections.defaultdict(dict)
    prefix = histogram.name + "|"
    for name, value in fields.items():
        if name.startswith(prefix):
            labels, _, part = name[len(prefix) :].rpartition("|")
            per[labels][part] = value
    found = []
    for labels, parts in sorted(per.items()):
        values = tuple(labels.split(",")) if histogram.labels else ()
        if len(values) != len(histogram.labels):
            continue
        stored: list[tuple[float, int]] = []
        for part, value in parts.items():
            if part == "sum":
                continue
            try:
                stored.append((float("inf") if part == "inf" else float(part), int(value)))
            except ValueError:
                continue
        buckets = []
        for bound in (*histogram.buckets, float("inf")):
            buckets.append((bound, sum(n for b, n in stored if b <= bound)))
        try:
            total = float(parts.get("sum", "0"))
        except ValueError:
            total = 0.0
        found.append(Series(values, buckets, total))
    return found
