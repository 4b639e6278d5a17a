"""Node-wide counters that /metrics reads: messages accepted and refused, policy decisions.

    count_message(client, keys, "accepted")
    count_message(client, keys, "refused", code="554", status="5.7.1")
    count_policy(client, keys, "reject")

Writes: PREFIX stats:messages and PREFIX stats:policy (hashes of monotonic counters; one HINCRBY
each, so the cost is one Redis command per decision). Counting never fails the caller: when
Redis is down the decision stands, the count is lost and that is logged at debug level.
"""

from __future__ import annotations

import logging
import re

import redis

from txmail.errors import TemporaryFailure
from txmail.store import Client, Keys

log = logging.getLogger("txmail.counters")
LABEL = re.compile(r"[^0-9A-Za-z._-]")


def _incr(client: Client | None, key: str, name: str) -> None:
    if client is None:
        return
    try:
        client.hincrby(key, name, 1)
    except (redis.RedisError, TemporaryFailure) as exc:
        log.debug("cannot count %s in %s: %s", name, key, exc)


def count_message(
    client: Client | None, keys: Keys, outcome: str, code: str = "", status: str = ""
) -> None:
    name = (
        outcome
        if outcome == "accepted"
        else f"refused:{LABEL.sub('', code)[:3]}:{LABEL.sub('', status)[:9]}"
    )
    _incr(client, keys.message_stats, name)


def count_policy(client: Client | None, keys: Keys, outcome: str) -> None:
    _incr(client, keys.policy_stats, LABEL.sub("", outcome.lower())[:32] or "unknown")
