"""The webhook posts the dispatcher made for an account, and their answers: kept to be shown.

SYNOPSIS
    keep(pipe, keys, account, post)          add one post to a pipeline the dispatcher executes
    recent(client, keys, account) -> [Post]  the kept posts, newest first
    answer_text(body, hidden) -> str         an answer body as it may be kept

DESCRIPTION
    PREFIX {ACCOUNT}:webhook:posts is a list of JSON records, newest first, capped at POSTS_KEPT
    (LPUSH and LTRIM in the pipeline the dispatcher already sends when it settles a post: no
    round trip of its own). One record:

        {"at": SECONDS, "seconds": TOOK, "status": HTTP STATUS or null, "error": "" or why
         there was no answer, "events": N, "first": STREAM ID, "last": STREAM ID,
         "tags": "T1 T2 ...", "answer": TEXT, "webhook_id": "msg_..."}

    A batch is not one stretch of the stream: it holds the events this node read, in the order
    it read them (its pending list after a restart, then new events, then events it took over
    from a dead node), and other nodes read the entries in between. So "first" and "last" are
    the lowest and highest stream ids of the batch, shown as a span, never used to decide
    which events a post carried. That is what "tags" is for: the last TAG_CHARS characters of
    each event's id (its random part; event ids are what the timeline knows of an event, the
    message's own list holds no stream ids), TAG_CHARS + 1 bytes an event. Two events of the
    kept posts share a tag with a chance of about one in 10^8 per lookup.

    The answer is at most ANSWER_BYTES bytes of UTF-8 text: control characters and runs of
    white space made one space, any signature the post carried and any signing secret removed
    (a receiver that echoes its request shows neither here), cut on a character boundary.

    Bounds: POSTS_KEPT records of about 400 + (TAG_CHARS + 1) * webhooks.batch_size bytes
    (about 100 KB an account with batches of 100; 1 MB at the largest batch, 1000).

FAILURE
    recent() raises StoreUnavailable when Redis is down; an unreadable record is skipped.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from txmail.store import Client, Keys, guard

POSTS_KEPT = 100
ANSWER_BYTES = 200  # of an answer body kept
ANSWER_READ = 1024  # bytes of an answer body the transport reads at most
TAG_CHARS = 8

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")


@dataclass(frozen=True)
class Post:
    at: float
    seconds: float
    status: int | None
    error: str
    events: int
    first: str
    last: str
    tags: str
    answer: str
    webhook_id: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """How the endpoint answered, in a few words."""
        if self.status is None:
            return f"no answer ({self.error})" if self.error else "no answer"
        return f"HTTP {self.status}"

    @property
    def shown_at(self) -> str:
        """When, as the console shows times (UTC, to the second)."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at))

    def carried(self, event_id: str) -> bool:
        return event_tag(event_id) in self.tags.split(" ")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Post:
        data = json.loads(raw)
        status = data.get("status")
        return cls(
            at=float(data["at"]),
            seconds=float(data.get("seconds") or 0),
            status=int(status) if status is not None else None,
            error=str(data.get("error", "")),
            events=int(data.get("events") or 0),
            first=str(data.get("first", "")),
            last=str(data.get("last", "")),
            tags=str(data.get("tags", "")),
            answer=str(data.get("answer", "")),
            webhook_id=str(data.get("webhook_id", "")),
        )


def event_tag(event_id: str) -> str:
    return event_id[-TAG_CHARS:]


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def make_post(
    at: float,
    seconds: float,
    status: int | None,
    error: str,
    stream_ids: list[str],
    event_ids: list[str],
    answer: str,
    webhook_id: str,
) -> Post:
    ordered = sorted(stream_ids, key=_stream_order)
    return Post(
        at=at,
        seconds=round(seconds, 4),
        status=status,
        error=error[:ANSWER_BYTES],
        events=len(event_ids),
        first=ordered[0] if ordered else "",
        last=ordered[-1] if ordered else "",
        tags=" ".join(event_tag(e) for e in event_ids if e),
        answer=answer,
        webhook_id=webhook_id,
    )


def answer_text(body: bytes, hidden: list[str]) -> str:
    """`body` as it may be kept and shown: printable, nothing of `hidden` (the post's
    signatures and secrets), at most ANSWER_BYTES bytes."""
    text = body[:ANSWER_READ].decode("utf-8", errors="replace")
    for secret in sorted((h for h in hidden if h), key=len, reverse=True):
        text = text.replace(secret, "[hidden]")
    text = _UNPRINTABLE.sub(" ", text).strip()
    cut = text.encode("utf-8")[:ANSWER_BYTES]
    return cut.decode("utf-8", errors="ignore")


def keep(pipe: Any, keys: Keys, account: str, post: Post) -> None:
    """Queue the record of `post` on `pipe` (the caller executes it)."""
    key = keys.webhook_posts(account)
    pipe.lpush(key, post.to_json())
    pipe.ltrim(key, 0, POSTS_KEPT - 1)


def recent(client: Client, keys: Keys, account: str, count: int = POSTS_KEPT) -> list[Post]:
    """The account's kept posts, newest first."""
    with guard(f"reading the webhook posts of {account}"):
        rows = client.lrange(keys.webhook_posts(account), 0, max(count, 1) - 1)
    return parsed(rows)


def parsed(rows: list[Any]) -> list[Post]:
    found = []
    for raw in rows:
        try:
            found.append(Post.from_json(raw))
        except (KeyError, ValueError, TypeError):
            continue
    return found
