"""`blocked` events: recipients the milter took off a message, and why.

One event per recipient, in DESIGN.md's shape, recorded through the event recorder
(txmail/events.py): appended to the account's stream once per (message, recipient, kind),
counted per day, kind and tag, and trimmed only after the webhooks dispatcher has delivered it.
The milter records them after the message record, so a message that is not accepted never
leaves events behind.
Fails: StoreUnavailable when Redis is down (the milter answers 451 4.3.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from txmail.events import Recorder, make_event


def record_blocked(
    recorder: Recorder,
    account: str,
    queue_id: str,
    recipient: str,
    reason: str,
    details: dict[str, Any],
    tags: Iterable[str] = (),
) -> None:
    recorder.record(
        make_event(
            "blocked", account, queue_id, recipient, {"reason": reason, **details}, tags=list(tags)
        )
    )
