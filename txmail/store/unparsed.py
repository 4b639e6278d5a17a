"""Returned mail the bounce pipe (txmail/bounce_pipe) could not read or could not match to a
message, kept.

Nothing that reaches the pipe is dropped: what yields no recipient outcome, or names no message
txmail sent, goes here with the reason, so an operator can look at it (`txmail bounces
unparsed`) and a parser fix can be checked against it.

Writes: PREFIX bounces:unparsed, a stream with fields reason, sender, recipient, queue_id,
        received_at, size, truncated and raw (the mail's first bounce_pipe.unparsed_max_bytes,
        Latin-1 decoded so every byte survives). Capped at bounce_pipe.unparsed_max entries:
        past it the oldest go, and the pipe logs a warning saying so.
Fails:  StoreUnavailable when Redis is down (the pipe then exits 75 and Postfix retries).

Unreadable is what a reader raises when the parser failed on the mail itself (it raised on it,
ran past its time, was killed by a limit, answered garbage): main.handle() keeps such a mail
here without parsing it and answers 0, because every retry would fail alike until Postfix
discards it. When the token of its bounce address is valid and the client's NOTIFY asks for
failures, the mail is also forwarded to the envelope sender as it came.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from txmail.errors import TxmailError
from txmail.store import Client, Keys, decoded, decoded_entries, guard, scripts

MAX_REASON = 300


class Unreadable(TxmailError):
    """The parser failed on this returned mail itself (not trouble that may pass): keep it."""


@dataclass(frozen=True)
class UnparsedBounce:
    entry_id: str
    reason: str
    sender: str
    recipient: str
    queue_id: str
    received_at: float
    size: int
    truncated: bool
    raw: bytes

    def summary(self) -> dict[str, object]:
        return {
            "id": self.entry_id,
            "reason": self.reason,
            "sender": self.sender,
            "recipient": self.recipient,
            "queue_id": self.queue_id,
            "received_at": self.received_at,
            "size": self.size,
            "truncated": self.truncated,
        }


def keep(
    client: Client,
    keys: Keys,
    raw: bytes,
    reason: str,
    sender: str,
    recipient: str,
    queue_id: str,
    max_entries: int,
    max_bytes: int,
    now: float | None = None,
) -> bool:
    """Store one returned mail for inspection; True when older ones had to go for the cap."""
    with guard(f"{queue_id or 'NOQUEUE'}: keeping an unparsed bounce"):
        pipe = client.pipeline(transaction=False)
        pipe.xadd(
            keys.bounces_unparsed,
            {
                "reason": reason[:MAX_REASON],
                "sender": sender[:320],
                "recipient": recipient[:320],
                "queue_id": queue_id[:64],
                "received_at": repr(time.time() if now is None else now),
                "size": str(len(raw)),
                "truncated": "1" if len(raw) > max_bytes else "0",
                "raw": raw[:max_bytes].decode("latin-1"),
            },
        )
        pipe.xlen(keys.bounces_unparsed)
        _, length = pipe.execute()
        if int(length) > max_entries:
            client.xtrim(keys.bounces_unparsed, maxlen=max_entries, approximate=False)
            return True
    return False


def _entry(entry_id: str, fields: dict[str, str]) -> UnparsedBounce:
    return UnparsedBounce(
        entry_id=entry_id,
        reason=fields.get("reason", ""),
        sender=fields.get("sender", ""),
        recipient=fields.get("recipient", ""),
        queue_id=fields.get("queue_id", ""),
        received_at=float(fields.get("received_at") or 0),
        size=int(fields.get("size") or 0),
        truncated=fields.get("truncated") == "1",
        raw=fields.get("raw", "").encode("latin-1"),
    )


def newest(client: Client, keys: Keys, count: int = 50) -> list[UnparsedBounce]:
    """The newest `count` kept bounces, newest first."""
    with guard("listing unparsed bounces"):
        rows = decoded_entries(client.xrevrange(keys.bounces_unparsed, count=count))
    return [_entry(entry_id, fields) for entry_id, fields in rows]


def newest_summaries(client: Client, keys: Keys, count: int = 50) -> list[UnparsedBounce]:
    """The newest `count` kept bounces, newest first, without their raw text (raw is b""):
    for a listing, which reads a few hundred bytes per entry instead of the mail."""
    with guard("listing unparsed bounces"):
        rows = scripts.get(client, "unparsed_summaries")(
            keys=[keys.bounces_unparsed], args=[max(1, count)]
        )
    found = []
    for raw_id, pairs in rows:
        values = [decoded(v) for v in pairs]
        fields = dict(zip(values[0::2], values[1::2], strict=True))
        found.append(_entry(decoded(raw_id), fields))
    return found


def get(client: Client, keys: Keys, entry_id: str) -> UnparsedBounce | None:
    with guard("reading an unparsed bounce"):
        rows = decoded_entries(client.xrange(keys.bounces_unparsed, min=entry_id, max=entry_id))
    return _entry(*rows[0]) if rows else None
