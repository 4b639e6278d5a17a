"""The nodes page's data (txmail/reports/nodes.py): heartbeats from Redis, probes of this node."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from txmail.config import Settings
from txmail.histograms import node_name, write
from txmail.reports.nodes import STALE_SECONDS, nodes, probe_this_node
from txmail.store import Keys

NOW = 1_800_000_000.0


def test_each_node_with_its_components_seen_or_silent(client: redis.Redis, tmp_path: Path) -> None:
    keys = Keys(f"n{uuid.uuid4().hex[:8]}:")
    settings = Settings(state_dir=str(tmp_path), hostname="a.relay.example")
    here = node_name(settings)
    pipe = client.pipeline()
    write(pipe, keys.node_histograms(here), {}, {}, "milter", NOW - 2)
    write(pipe, keys.node_histograms(here), {}, {}, "policyd", NOW - STALE_SECONDS - 1)
    write(pipe, keys.node_histograms("b.relay.example-12345678"), {}, {}, "webhooks", NOW)
    pipe.hset(keys.node_histograms("not-a-node"), "seen|milter", repr(NOW))  # not in the index
    pipe.execute()
    found = {n.name: n for n in nodes(client, keys, settings, NOW)}
    assert set(found) == {here, "b.relay.example-12345678"}
    assert found[here].this and not found["b.relay.example-12345678"].this
    beats = {b.component: (b.ok, b.seen_at) for b in found[here].heartbeats}
    assert beats == {
        "milter": (True, NOW - 2),
        "policyd": (False, NOW - STALE_SECONDS - 1),
        "webhooks": (False, None),
    }


def test_probes_of_a_node_that_is_not_running_say_what_failed(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path))
    probes = {p.component: p for p in probe_this_node(settings)}
    assert "capture" not in probes and {"milter", "redis", "tracker"} <= set(probes)
    assert not probes["milter"].ok and "no socket" in (probes["milter"].problem or "")
