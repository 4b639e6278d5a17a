"""`blocked` events: recipients the milter took off a message, and why.

Writes one event per recipient to the account's event stream (PREFIX {ACCOUNT}:events, one field
`event` holding the JSON of DESIGN.md's event shape), capped at STREAM_CAP entries. The event
recorder (txmail/events.py, issue 5) takes this over; until then this is the only writer.
`client` may be a Redis pipeline, so the milter writes a message's events in one round trip with
its message record.
Fails: StoreUnavailable (through the caller's guard) when Redis is down.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from txmail.store import Keys

STREAM_CAP = 1_000_000
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def event_id(now: float | None = None) -> str:
    """`evt_` and a ULID: 48 bits of milliseconds and 80 random bits, sortable by time."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def blocked_event(account: str, queue_id: str, recipient: str, reason: str,
                  details: dict[str, Any], tags: Iterable[str] = (),
                  now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"id": event_id(now), "kind": "blocked", "recipient": recipient,
            "message_id": queue_id,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "account": account, "tags": list(tags), "details": {"reason": reason, **details}}


def record_blocked(client: Any, keys: Keys, account: str, queue_id: str, recipient: str,
                   reason: str, details: dict[str, Any], tags: Iterable[str] = ()) -> None:
    event = blocked_event(account, queue_id, recipient, reason, details, tags)
    client.xadd(keys.events(account), {"event": json.dumps(event, separators=(",", ":"))},
                maxlen=STREAM_CAP, approximate=True)
