"""Recording opens and clicks without making the person who clicked wait for Redis.

SYNOPSIS
    writer = HitWriter(client, keys, recorder)           # sync, runs in a worker thread
    recording = Recording(writer); await recording.run()  # the tracker's background task
    recording.submit(hit)                                 # from a request handler

DESCRIPTION
    The tracker answers the request first (the redirect, the GIF) and hands the hit to a
    bounded in-memory queue; one background task takes what has gathered, up to BATCH hits,
    and records them in a worker thread with txmail.events' Recorder.record_many, pipelined
    (one round trip per batch; on a Redis Cluster one Recorder.record per hit): every open and
    click is counted per account, day, kind and tag, the first of each per message and
    recipient goes to the account's event stream (and so to its webhook). An account with the
    setting webhook_every_open gets every repeat appended to the stream as well.
    Each event carries the message's tags, read from its record (PREFIX {ACCOUNT}:message:QID).

FAILURE
    Redis trouble: the batch is kept and retried with a growing pause, so hits are recorded
    late but not lost while the tracker runs. A full queue (QUEUE_MAX hits waiting, Redis down
    for long) drops new hits with a warning and counts them (txmail_tracker_dropped_total):
    redirects must keep working when Redis does not. A hit may be counted twice if Redis fails
    half-way through a batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from txmail.accounts.settings import FIELD_PREFIX
from txmail.errors import TemporaryFailure
from txmail.events import PartlyRecorded, Recorder, make_event
from txmail.store import Client, Keys, guard
from txmail.tokens.links import Mark

log = logging.getLogger("txmail.tracker")

BATCH = 200
QUEUE_MAX = 50_000
SETTINGS_TTL = 5.0  # seconds an account's webhook_every_open is cached
EVERY_FIELD = FIELD_PREFIX + "webhook_every_open"


@dataclass(frozen=True)
class Hit:
    """One request for a genuine token."""

    mark: Mark
    details: dict[str, Any]
    at: float


class HitWriter:
    """Writes hits as events (blocking Redis calls: run it in a thread)."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        recorder: Recorder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
        self.recorder = recorder
        self.clock = clock
        self._every: dict[str, tuple[bool, float]] = {}

    def _lookups(self, hits: list[Hit]) -> tuple[list[list[str]], dict[str, bool]]:
        """Tags of each hit's message and, for accounts not cached, webhook_every_open."""
        now = self.clock()
        accounts = sorted(
            {h.mark.account for h in hits if self._every.get(h.mark.account, (False, 0.0))[1] < now}
        )
        with guard("reading message tags"):
            pipe = self.client.pipeline(transaction=False)
            for hit in hits:
                pipe.hget(self.keys.message(hit.mark.account, hit.mark.queue_id), "tags")
            for account in accounts:
                pipe.hget(self.keys.account(account), EVERY_FIELD)
            rows = pipe.execute()
        tags = []
        for raw in rows[: len(hits)]:
            try:
                value = json.loads(raw) if raw else []
            except ValueError:
                value = []
            tags.append([str(t) for t in value] if isinstance(value, list) else [])
        for account, raw in zip(accounts, rows[len(hits) :], strict=True):
            self._every[account] = (raw == "true", now + SETTINGS_TTL)
        return tags, {a: v for a, (v, _) in self._every.items()}

    def write(self, hits: list[Hit]) -> int:
        """Record `hits` in order; returns how many were written. On a single Redis the whole
        batch is two round trips; on a Cluster each hit goes through Recorder.record
        (Recorder.record_many)."""
        tags, every = self._lookups(hits)
        events = [
            make_event(
                h.mark.kind,
                h.mark.account,
                h.mark.queue_id,
                h.mark.recipient,
                details=h.details,
                tags=t,
                now=h.at,
            )
            for h, t in zip(hits, tags, strict=True)
        ]
        self.recorder.record_many(
            events, repeats=lambda event: every.get(event.account, False), logger=log
        )
        return len(hits)


class Recording:
    """The bounded queue between request handlers and the HitWriter."""

    def __init__(self, writer: HitWriter, on_drop: Callable[[], None] | None = None) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[Hit] = asyncio.Queue(QUEUE_MAX)
        self.on_drop = on_drop
        self._warned = 0.0
        self.busy = False

    def submit(self, hit: Hit) -> bool:
        try:
            self.queue.put_nowait(hit)
            return True
        except asyncio.QueueFull:
            if self.on_drop is not None:
                self.on_drop()
            if time.monotonic() - self._warned > 10:
                self._warned = time.monotonic()
                log.warning(
                    "%s: dropping %s hits: %d are waiting for Redis",
                    hit.mark.queue_id,
                    hit.mark.kind,
                    self.queue.qsize(),
                )
            return False

    async def run(self) -> None:
        pending: list[Hit] = []
        pause = 0.1
        while True:
            if not pending:
                pending.append(await self.queue.get())
            while len(pending) < BATCH and not self.queue.empty():
                pending.append(self.queue.get_nowait())
            self.busy = True
            try:
                await asyncio.to_thread(self.writer.write, pending)
                pending, pause = [], 0.1
            except TemporaryFailure as exc:
                pending = pending[exc.done :] if isinstance(exc, PartlyRecorded) else pending
                log.warning("recording %d hits later: %s", len(pending), exc.__cause__ or exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
            finally:
                self.busy = False

    async def drain(self, timeout: float) -> None:
        """Wait until what is queued has been written, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (self.busy or not self.queue.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
