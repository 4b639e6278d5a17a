"""The installation's nodes and their components' health, for the console's nodes page.

    nodes(client, keys, now)           every node that wrote a heartbeat lately, from Redis
    probe_this_node(settings)          each component of this node asked now (txmail/health.py)

Every node's milter, policyd and webhooks dispatcher write "seen|COMPONENT" into PREFIX
stats:histograms:NODE at least every 10 seconds (txmail/histograms.py); a component not seen
for STALE_SECONDS is reported as silent. The node serving the page also probes its own
components the way `txmail health` does, each within health.TIMEOUT seconds, all at once in
threads, so the page takes a few seconds at most.

Reads: PREFIX stats:nodes (the nodes by their last heartbeat, at most MAX_NODES), then
PREFIX stats:histograms:NODE of each. Fails: StoreUnavailable.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import cast

from txmail import health
from txmail.config import Settings
from txmail.histograms import HEARTBEAT_SECONDS, KEEP_SECONDS, node_name
from txmail.store import Client, Keys, decoded, guard

COMPONENTS = ("milter", "policyd", "webhooks")  # the processes that write a heartbeat
STALE_SECONDS = 3 * HEARTBEAT_SECONDS
MAX_NODES = 100
SKIPPED = ("capture",)  # the --dev capture server is no part of a node


@dataclass(frozen=True)
class Heartbeat:
    component: str
    seen_at: float | None  # None: never seen
    ok: bool


@dataclass(frozen=True)
class Node:
    name: str
    this: bool  # the node serving the page
    heartbeats: list[Heartbeat]


def nodes(client: Client, keys: Keys, settings: Settings, now: float) -> list[Node]:
    """The MAX_NODES nodes that wrote a heartbeat last, from the index their heartbeats write
    (PREFIX stats:nodes, never a SCAN of the keyspace); those silent for as long as their
    histograms are kept are dropped from it."""
    with guard("listing nodes"):
        client.zremrangebyscore(keys.nodes_seen, "-inf", now - KEEP_SECONDS)
        members = cast("list[bytes | str]", client.zrevrange(keys.nodes_seen, 0, MAX_NODES - 1))
        found = [decoded(raw) for raw in members]
        pipe = client.pipeline(transaction=False)
        for name in found:
            pipe.hmget(keys.node_histograms(name), [f"seen|{c}" for c in COMPONENTS])
        rows = pipe.execute() if found else []
    here = node_name(settings)
    result = []
    for name, row in sorted(zip(found, rows, strict=True)):
        beats = []
        for component, value in zip(COMPONENTS, row, strict=True):
            seen = float(decoded(value)) if value else None
            beats.append(
                Heartbeat(component, seen, seen is not None and now - seen < STALE_SECONDS)
            )
        result.append(Node(name, name == here, beats))
    return result


@dataclass(frozen=True)
class Probe:
    component: str
    problem: str | None  # None: it answered

    @property
    def ok(self) -> bool:
        return self.problem is None


def probe_this_node(settings: Settings) -> list[Probe]:
    """Ask each of this node's components whether it answers (as `txmail health` does)."""
    names = [n for n in health.probes(settings) if n not in SKIPPED]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
        answers = list(pool.map(lambda n: health.check(settings, n), names))
    return [Probe(n, a) for n, a in zip(names, answers, strict=True)]
