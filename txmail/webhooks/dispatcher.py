"""The webhooks dispatcher: every account's events, posted in signed batches, never lost.

DESCRIPTION
    Each account's events are in its stream PREFIX {ACCOUNT}:events (txmail/events.py). The
    dispatcher reads them as consumer CONSUMER of the consumer group "webhooks" (created at id 0,
    so no event recorded before the first dispatcher ran is skipped), and for each account
    with a webhook URL:

      * batches up to webhooks.batch_size events, or what came within webhooks.batch_wait
        seconds of the batch's first event (sooner when no event came for
        webhooks.batch_idle seconds), and posts {"events": [...]} signed with the
        Standard Webhooks headers (txmail.tokens.webhooks) under a webhook-id derived from the
        batch's event ids (a retry of the same batch has the same id);
      * acknowledges the events (XACK) only after a 2xx answer: at least once. Receivers
        de-duplicate by event id;
      * on any other answer or no answer, retries the same batch with exponential backoff and
        full jitter (retry_base doubling up to retry_max_delay), reading no newer events of that
        account meanwhile, so they wait in the stream where nothing can trim them;
      * an event whose posts kept failing for webhooks.retry_window (at least 24 hours, counted
        from when it was first tried) goes to the account's dead letters (PREFIX
        {ACCOUNT}:webhook:dead), acknowledged in the same Lua call
        (store/scripts/webhook_dead_letter.lua): `txmail webhooks dead-letters` lists them and
        `txmail webhooks replay` sends them again;
      * 410 Gone disables the endpoint (PREFIX {ACCOUNT}:webhook, field disabled): its events
        go straight to the dead letters until `txmail webhooks enable ACCOUNT`.

    An account without a webhook URL has its events acknowledged as they are read: they stay
    in the stream as history (events tail, messages show) up to events.stream_max.
    After each acknowledgement the stream is trimmed to events.stream_max, but never past the
    group's oldest unacknowledged event (store/scripts/events_trim.lua).

    A dispatcher that is killed leaves its batch unacknowledged in the group's pending list;
    restarted under the same consumer name (webhooks.consumer, default the host name) it reads
    that list first and posts it again. Another node's entries idle for webhooks.claim_idle
    seconds are taken over (XAUTOCLAIM), so a node that never comes back loses nothing either.

    The backoff state (failing_since, attempts, next_attempt) is kept in PREFIX
    {ACCOUNT}:webhook too, so a restart does not shorten or restart the retry window.

    Every post is kept for the console (PREFIX {ACCOUNT}:webhook:posts, the last
    webhook_posts.POSTS_KEPT): when, how long it took, the status or why there was no answer,
    the events it carried and at most 200 bytes of the answer, without the post's signatures
    or secrets (txmail/webhook_posts.py). The record goes in the pipeline that settles the
    post (the acknowledgement, or the retry state): no round trip of its own.

SIDE EFFECTS ARE ARGUMENTS
    Redis client, HTTP transport (url, body, headers, timeout) -> status, clock, random source
    and executor are passed in, so the core runs in unit tests with fakes and a simulated clock.

FAILURE
    Redis down: the loop logs once, waits and goes on; nothing is acknowledged meanwhile.
    After any Redis error the dispatcher reads its own pending list again (reread_pending),
    so events of a read whose answer was lost go out as soon as Redis answers.
    The account's webhook secret and key are never logged.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from txmail import logs
from txmail.config import WebhooksSettings
from txmail.events import KINDS, WEBHOOK_GROUP
from txmail.histograms import WEBHOOK_EVENT_DELAY, WEBHOOK_POST, Observations, flush_logged
from txmail.store import Client, Keys, decoded, decoded_or_none, guard, scripts
from txmail.store.secrets import read_webhook_secret
from txmail.tokens import webhooks as signing
from txmail.webhook_endpoints import DISABLED, GONE
from txmail.webhook_posts import ANSWER_READ, Post, answer_text, keep, make_post

log = logging.getLogger("txmail.webhooks")

ACCOUNTS_REFRESH = 2.0  # seconds between looks for new accounts and changed URLs
CLAIM_EVERY = 60.0


class TransportError(Exception):
    """No HTTP answer (connection refused, timeout, TLS failure)."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status and the start of its body (at most ANSWER_READ bytes)."""

    status: int
    body: bytes = b""


# A transport answers a status alone or an Answer (fakes in tests answer a bare status).
Transport = Callable[[str, bytes, dict[str, str], float], "int | Answer"]


@dataclass(frozen=True)
class Outcome:
    """What became of one post, as _post hands it to _settle."""

    status: int | None  # None: no answer
    body: bytes
    seconds: float
    error: str = ""  # why there was no answer
    unexpected: bool = False  # the transport itself failed (a bug): logged with its traceback
    hidden: tuple[str, ...] = field(default=(), repr=False)  # signatures, secrets: never kept


@dataclass
class Pending:
    stream_id: str
    raw: str  # the event's JSON exactly as recorded
    event_id: str
    recorded_at: float  # from the stream id (Redis time)


@dataclass
class Endpoint:
    account: str
    url: str = ""
    disabled: bool = False
    batch: list[Pending] = field(default_factory=list)
    batch_started: float | None = None
    last_taken: float = 0.0  # when the last event joined the batch
    history_done: bool = False  # our own pending list has been read back after a restart
    history_from: str = "0"  # where reading our pending list goes on
    attempts: int = 0
    failing_since: float | None = None
    next_attempt: float = 0.0
    inflight: concurrent.futures.Future[Outcome] | None = None
    inflight_batch: list[Pending] = field(default_factory=list)
    last_claim: float = 0.0


def batch_id(batch: list[Pending]) -> str:
    digest = hashlib.sha256("\n".join(p.event_id for p in batch).encode()).hexdigest()
    return "msg_" + digest[:32]


def body_of(batch: list[Pending]) -> bytes:
    return ('{"events":[' + ",".join(p.raw for p in batch) + "]}").encode()


def _event_id(raw: str) -> str:
    # The id is the first field the recorder writes; fall back to JSON for other writers.
    if raw.startswith('{"id":"'):
        end = raw.find('"', 7)
        if end > 0:
            return raw[7:end]
    try:
        return str(json.loads(raw).get("id", ""))
    except ValueError:
        return ""


def _kind(raw: str) -> str:
    """The event's own kind (its top-level "kind", never one inside its data) for a histogram
    label: one of events.KINDS, else "other"."""
    try:
        event = json.loads(raw)
    except ValueError:
        return "other"
    kind = event.get("kind") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) and kind in KINDS else "other"


class InlineExecutor:
    """Runs each post at once in the caller's thread (unit tests, benchmarks of the core)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


class Dispatcher:
    def __init__(
        self,
        client: Client,
        keys: Keys,
        settings: WebhooksSettings,
        webhook_key: bytes | Callable[[], bytes | tuple[bytes, ...]],
        consumer: str,
        transport: Transport,
        stream_max: int = 100_000,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        executor: Any = None,
        observations: Observations | None = None,
        histogram_key: str = "",
    ) -> None:
        self.client = client
        self.observations = observations  # post times and event delays (txmail/histograms.py)
        self.histogram_key = histogram_key
        self.keys = keys
        self.settings = settings
        self.webhook_key = webhook_key if callable(webhook_key) else (lambda: webhook_key)
        self.consumer = consumer
        self.transport = transport
        self.stream_max = stream_max
        self.clock = clock
        self.rng = rng or random.Random()
        self.executor = executor or InlineExecutor()
        self.endpoints: dict[str, Endpoint] = {}
        self.groups: set[str] = set()
        self.last_refresh = -1e18
        self._trim = scripts.get(client, "events_trim")
        self._dead = scripts.get(client, "webhook_dead_letter")

    # -- accounts and their endpoints -----------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_refresh < ACCOUNTS_REFRESH:
            return
        self.last_refresh = now
        with guard("listing accounts for the webhooks"):
            names = sorted(map(decoded, self.client.smembers(self.keys.accounts)))
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hget(self.keys.account(name), "webhook_url")
                pipe.hgetall(self.keys.webhook(name))
            rows = pipe.execute()
        for index, name in enumerate(names):
            url, state = rows[2 * index] or "", rows[2 * index + 1] or {}
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                endpoint = self.endpoints[name] = Endpoint(name)
                # a restart continues the retry window and backoff where they were
                if state.get("failing_since"):
                    endpoint.failing_since = float(state["failing_since"])
                    endpoint.attempts = int(state.get("attempts") or 0)
                    endpoint.next_attempt = float(state.get("next_attempt") or 0)
            if url != endpoint.url:
                endpoint.url = url
            endpoint.disabled = bool(state.get("disabled"))
            if name not in self.groups:
                self._ensure_group(name)
        for gone in set(self.endpoints) - set(names):
            endpoint = self.endpoints[gone]
            if not endpoint.batch and endpoint.inflight is None:
                del self.endpoints[gone]

    def _ensure_group(self, account: str) -> None:
        try:
            self.client.xgroup_create(
                self.keys.events(account), WEBHOOK_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.groups.add(account)

    # -- reading --------------------------------------------------------------------------

    def _room(self, endpoint: Endpoint) -> int:
        """How many more events to read for `endpoint`: a batch, plus the next one while a post
        is in flight (so it can go the moment the post is answered); none in backoff, where the
        batch is fixed and newer events wait in the stream."""
        if endpoint.failing_since is not None and endpoint.batch:
            return 0
        limit = self.settings.batch_size * (2 if endpoint.inflight is not None else 1)
        return max(limit - len(endpoint.batch), 0)

    def _wants_events(self, endpoint: Endpoint, now: float) -> bool:
        return self._room(endpoint) > 0

    def read(self) -> int:
        """Read new (or, after a restart, our pending) events into the batches."""
        now = self.clock()
        wanted = [e for e in self.endpoints.values() if self._wants_events(e, now)]
        if not wanted:
            return 0
        with guard("reading events for the webhooks"):
            pipe = self.client.pipeline(transaction=False)
            for endpoint in wanted:
                pipe.xreadgroup(
                    WEBHOOK_GROUP,
                    self.consumer,
                    {
                        self.keys.events(endpoint.account): endpoint.history_from
                        if not endpoint.history_done
                        else ">"
                    },
                    count=self._room(endpoint),
                )
            replies = pipe.execute()
        count = 0
        for endpoint, reply in zip(wanted, replies, strict=True):
            entries = reply[0][1] if reply else []
            if not endpoint.history_done:
                if entries:
                    endpoint.history_from = entries[-1][0]
                if len(entries) < self._room(endpoint):
                    endpoint.history_done = True
            count += self._take(endpoint, entries, now)
        return count

    def _take(self, endpoint: Endpoint, entries: list[Any], now: float) -> int:
        known = {p.stream_id for p in endpoint.batch} | {
            p.stream_id for p in endpoint.inflight_batch
        }
        taken = 0
        unreadable: list[str] = []
        for stream_id, fields in entries:
            if stream_id in known:
                continue
            raw = (fields or {}).get("event")
            if not raw:
                unreadable.append(stream_id)  # an entry without an event: nothing to send
                continue
            endpoint.batch.append(
                Pending(stream_id, raw, _event_id(raw), int(stream_id.split("-")[0]) / 1000)
            )
            taken += 1
        if unreadable:
            self._ack(endpoint.account, unreadable)
        if taken:
            endpoint.last_taken = now
            if endpoint.batch_started is None:
                endpoint.batch_started = now
        return taken

    def claim(self) -> int:
        """Take over events another dispatcher read but never acknowledged (a dead node)."""
        now = self.clock()
        taken = 0
        for endpoint in self.endpoints.values():
            if now - endpoint.last_claim < CLAIM_EVERY or endpoint.inflight is not None:
                continue
            endpoint.last_claim = now
            if endpoint.failing_since is not None and endpoint.batch:
                continue
            with guard("claiming idle events"):
                reply = self.client.xautoclaim(
                    self.keys.events(endpoint.account),
                    WEBHOOK_GROUP,
                    self.consumer,
                    min_idle_time=int(self.settings.claim_idle * 1000),
                    start_id="0-0",
                    count=self.settings.batch_size,
                )
            entries = reply[1] if reply else []
            mine = {p.stream_id for p in endpoint.batch}
            fresh = [e for e in entries if e[0] not in mine]
            if fresh:
                log.info(
                    "%s: took over %d unacknowledged event(s) of another dispatcher",
                    endpoint.account,
                    len(fresh),
                    extra=logs.about(None, endpoint.account),
                )
            taken += self._take(endpoint, fresh, now)
        return taken

    def reread_pending(self) -> None:
        """After a Redis error, read our own pending list again before new events. A read
        that Redis carried out but whose answer never arrived (Redis killed between the two)
        left events delivered to this consumer that no batch holds; without this they would
        wait webhooks.claim_idle (two hours) for XAUTOCLAIM. Events a batch already holds
        are not taken twice."""
        for endpoint in self.endpoints.values():
            endpoint.history_done = False
            endpoint.history_from = "0"

    # -- posting --------------------------------------------------------------------------

    def _ready(self, endpoint: Endpoint, now: float) -> bool:
        if not endpoint.batch or endpoint.inflight is not None:
            return False
        if endpoint.failing_since is not None:
            return now >= endpoint.next_attempt
        if len(endpoint.batch) >= self.settings.batch_size or not endpoint.history_done:
            return True
        started = endpoint.batch_started if endpoint.batch_started is not None else now
        # a batch spans at most batch_wait; it goes sooner when no more events come
        return (
            now - started >= self.settings.batch_wait
            or now - endpoint.last_taken >= self.settings.batch_idle
        )

    def post_ready(self) -> int:
        """Start a post for each endpoint whose batch is due; settle finished posts."""
        now = self.clock()
        started = 0
        for endpoint in list(self.endpoints.values()):
            self._settle(endpoint)
            if not endpoint.batch or endpoint.inflight is not None:
                continue
            if not endpoint.url:
                # The URL may have been set since the last refresh: ask before letting go.
                with guard("reading a webhook URL"):
                    endpoint.url = (
                        decoded_or_none(
                            self.client.hget(self.keys.account(endpoint.account), "webhook_url")
                        )
                        or ""
                    )
            if not endpoint.url:
                self._ack(endpoint.account, [p.stream_id for p in endpoint.batch])
                self._clear_batch(endpoint)
                continue
            if endpoint.disabled:
                # A replay or `txmail webhooks enable` may have turned it back on since the
                # last refresh (a replay's events arrive at once): ask before dead-lettering.
                with guard("reading a webhook endpoint's state"):
                    endpoint.disabled = bool(
                        self.client.hget(self.keys.webhook(endpoint.account), "disabled")
                    )
            if endpoint.disabled:
                self._dead_letter(endpoint, endpoint.batch, DISABLED, now)
                self._clear_batch(endpoint)
                continue
            if not self._ready(endpoint, now):
                continue
            batch = endpoint.batch[: self.settings.batch_size]
            body = body_of(batch)
            secret = signing.account_secrets(
                self.webhook_key(),
                endpoint.account,
                read_webhook_secret(self.client, self.keys, endpoint.account),
                now,
            )
            headers = signing.headers(secret, batch_id(batch), int(now), body)
            hidden = _hidden(secret, headers)
            endpoint.inflight_batch = batch
            endpoint.inflight = self.executor.submit(
                self._post, endpoint.url, body, headers, hidden
            )
            started += 1
            self._settle(endpoint)
        return started

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], hidden: tuple[str, ...] = ()
    ) -> Outcome:
        started = time.monotonic()
        try:
            answer = self.transport(url, body, headers, self.settings.timeout)
        except TransportError as exc:
            error = str(exc)[:200] or exc.__class__.__name__
            outcome = Outcome(None, b"", time.monotonic() - started, error, hidden=hidden)
        except Exception as exc:  # noqa: BLE001 - a transport bug is one more failed attempt
            outcome = Outcome(
                None, b"", time.monotonic() - started, exc.__class__.__name__, True, hidden
            )
            log.error("posting failed unexpectedly", exc_info=exc)
        else:
            if isinstance(answer, Answer):
                status, answered = answer.status, answer.body[:ANSWER_READ]
            else:
                status, answered = int(answer), b""
            outcome = Outcome(status, answered, time.monotonic() - started, hidden=hidden)
        if self.observations is not None:
            posted = outcome.status is not None and 200 <= outcome.status < 300
            self.observations.observe(
                WEBHOOK_POST, outcome.seconds, "posted" if posted else "failed"
            )
        return outcome

    def _settle(self, endpoint: Endpoint) -> None:
        future = endpoint.inflight
        if future is None or not future.done():
            return
        batch = endpoint.inflight_batch
        endpoint.inflight, endpoint.inflight_batch = None, []
        now = self.clock()
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - an executor that could not run the post
            outcome = Outcome(None, b"", 0.0, exc.__class__.__name__, True)
        if outcome.unexpected:
            log.warning(
                "%s: posting failed unexpectedly (%s)",
                endpoint.account,
                outcome.error,
                extra=logs.about(None, endpoint.account),
            )
        status = outcome.status or 0
        error = f"HTTP {status}" if outcome.status is not None else outcome.error
        label = f"{endpoint.account}: {batch_id(batch)}"
        post = make_post(
            now,
            outcome.seconds,
            outcome.status,
            outcome.error,
            [p.stream_id for p in batch],
            [p.event_id for p in batch],
            answer_text(outcome.body, list(outcome.hidden)) if outcome.body else "",
            batch_id(batch),
        )
        if 200 <= status < 300:
            self._ack(endpoint.account, [p.stream_id for p in batch], post)
            self._drop(endpoint, batch)
            if self.observations is not None:
                for pending in batch:
                    self.observations.observe(
                        WEBHOOK_EVENT_DELAY, now - pending.recorded_at, _kind(pending.raw)
                    )
            if endpoint.failing_since is not None:
                log.info(
                    "%s: posted %d event(s) after %d failed attempt(s)",
                    label,
                    len(batch),
                    endpoint.attempts,
                    extra=logs.about(None, endpoint.account),
                )
                self._save_state(endpoint, ok=True)
            return
        if status == 410:
            log.warning(
                "%s: %s answered 410 Gone: endpoint disabled, %d event(s) to the dead "
                "letters (`txmail webhooks enable %s` turns it back on)",
                label,
                shown_endpoint(endpoint.url),
                len(batch),
                endpoint.account,
                extra=logs.about(None, endpoint.account),
            )
            endpoint.disabled = True
            with guard("disabling a webhook endpoint"):
                pipe = self.client.pipeline(transaction=False)
                pipe.hset(
                    self.keys.webhook(endpoint.account),
                    mapping={"disabled": repr(now), "disabled_by": "410 Gone"},
                )
                keep(pipe, self.keys, endpoint.account, post)
                pipe.execute()
            self._dead_letter(endpoint, batch, GONE, now)
            self._drop(endpoint, batch)
            self._save_state(endpoint, ok=True)
            return
        self._failed(endpoint, batch, error, now, post)

    def _failed(
        self,
        endpoint: Endpoint,
        batch: list[Pending],
        error: str,
        now: float,
        post: Post | None = None,
    ) -> None:
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        endpoint.attempts += 1
        window = self.settings.retry_window
        expired = [p for p in batch if now - max(p.recorded_at, endpoint.failing_since) >= window]
        if expired:
            log.warning(
                "%s: %d event(s) failed for %.0f h (%s): to the dead letters",
                endpoint.account,
                len(expired),
                window / 3600,
                error,
                extra=logs.about(None, endpoint.account),
            )
            self._dead_letter(endpoint, expired, error, now)
            self._drop(endpoint, expired)
        delay = min(
            self.settings.retry_max_delay,
            self.settings.retry_base * 2 ** min(endpoint.attempts - 1, 30),
        )
        delay = delay / 2 + self.rng.uniform(0, delay / 2)  # jitter: never all at once
        endpoint.next_attempt = now + delay
        if not endpoint.batch:
            # nothing left to retry: the next batch starts a fresh window
            self._save_state(endpoint, ok=True, post=post)
            return
        log.info(
            "%s: post of %d event(s) failed (%s); attempt %d, next in %.1f s",
            endpoint.account,
            len(batch),
            error,
            endpoint.attempts,
            delay,
            extra=logs.about(None, endpoint.account),
        )
        self._save_state(endpoint, ok=False, post=post)

    def _save_state(self, endpoint: Endpoint, ok: bool, post: Post | None = None) -> None:
        key = self.keys.webhook(endpoint.account)
        with guard("saving a webhook endpoint's retry state"):
            pipe = self.client.pipeline(transaction=False)
            if ok:
                endpoint.failing_since, endpoint.attempts, endpoint.next_attempt = None, 0, 0.0
                pipe.hdel(key, "failing_since", "attempts", "next_attempt", "last_error")
            else:
                pipe.hset(
                    key,
                    mapping={
                        "failing_since": repr(endpoint.failing_since),
                        "attempts": str(endpoint.attempts),
                        "next_attempt": repr(endpoint.next_attempt),
                    },
                )
            if post is not None:
                keep(pipe, self.keys, endpoint.account, post)
            pipe.execute()

    def _drop(self, endpoint: Endpoint, done: list[Pending]) -> None:
        gone = {p.stream_id for p in done}
        endpoint.batch = [p for p in endpoint.batch if p.stream_id not in gone]
        endpoint.batch_started = self.clock() if endpoint.batch else None

    def _clear_batch(self, endpoint: Endpoint) -> None:
        endpoint.batch, endpoint.batch_started = [], None

    def _ack(self, account: str, stream_ids: list[str], post: Post | None = None) -> None:
        stream = self.keys.events(account)
        with guard(f"acknowledging events of {account}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(stream, WEBHOOK_GROUP, *stream_ids)
            self._trim(keys=[stream], args=[WEBHOOK_GROUP, self.stream_max], client=pipe)
            if post is not None:
                keep(pipe, self.keys, account, post)
            pipe.execute()

    def _dead_letter(
        self, endpoint: Endpoint, batch: list[Pending], error: str, now: float
    ) -> None:
        args: list[Any] = [WEBHOOK_GROUP, self.settings.dead_letter_max, error, repr(now)]
        for pending in batch:
            args += [pending.stream_id, pending.raw]
        with guard(f"dead-lettering events of {endpoint.account}"):
            dropped = int(
                self._dead(
                    keys=[
                        self.keys.events(endpoint.account),
                        self.keys.dead_letters(endpoint.account),
                    ],
                    args=args,
                )
            )
            self._trim(
                keys=[self.keys.events(endpoint.account)], args=[WEBHOOK_GROUP, self.stream_max]
            )
        for pending in batch:
            log.info(
                "%s: dead letter %s (%s)",
                endpoint.account,
                pending.event_id,
                error,
                extra=logs.about(None, endpoint.account),
            )
        if dropped:
            log.warning(
                "%s: the dead letters are full (%d): the %d oldest were removed",
                endpoint.account,
                self.settings.dead_letter_max,
                dropped,
                extra=logs.about(None, endpoint.account),
            )

    # -- the loop -------------------------------------------------------------------------

    def step(self) -> int:
        """One round: accounts, reads, claims, posts. How much happened (0: idle)."""
        self.refresh()
        work = self.read()
        work += self.claim()
        work += self.post_ready()
        if self.observations is not None and self.observations.due():
            self.flush_observations()
        return work

    def flush_observations(self) -> None:
        """Add the post times and event delays observed so far to this node's histograms (once
        a second from step(), and once more when the dispatcher stops)."""
        if self.observations is not None:
            flush_logged(self.observations, self.client, self.histogram_key)

    def busy(self) -> bool:
        return any(e.batch or e.inflight is not None for e in self.endpoints.values())

    def wait(self, timeout: float) -> None:
        """Sleep until a post finishes or `timeout` passes (so a finished post is settled and
        the next batch posted at once, not after a fixed nap)."""
        inflight = [e.inflight for e in self.endpoints.values() if e.inflight is not None]
        if inflight:
            concurrent.futures.wait(inflight, timeout, concurrent.futures.FIRST_COMPLETED)
        else:
            time.sleep(timeout)


def requests_transport() -> Transport:
    """HTTP posts with one keep-alive session per endpoint URL."""
    import requests

    # a Session is not meant to be shared between threads: one per thread and URL
    sessions: dict[tuple[int, str], requests.Session] = {}

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        key = (threading.get_ident(), url)
        session = sessions.get(key)
        if session is None:
            session = sessions[key] = requests.Session()
        try:
            response = session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            )
            # At most ANSWER_READ bytes of the answer: a body read to its end leaves the
            # connection to the next post; a longer one is cut and its connection closed.
            answered = b""
            for chunk in response.iter_content(ANSWER_READ):
                answered += chunk
                if len(answered) >= ANSWER_READ:
                    break
        except requests.RequestException as exc:
            sessions.pop(key, None)
            raise TransportError(f"{exc.__class__.__name__}") from exc
        response.close()
        return Answer(response.status_code, answered[:ANSWER_READ])

    return post


def _hidden(secrets: tuple[bytes, ...], headers: dict[str, str]) -> tuple[str, ...]:
    """What an answer that echoes the post must not show: its signatures, the secrets."""
    found = []
    for part in headers.get("webhook-signature", "").split():
        found += [part, part.partition(",")[2]]
    for secret in secrets:
        found.append(signing.secret_text(secret))
        found.append(signing.secret_text(secret).partition("_")[2])
    return tuple(f for f in found if f)


def shown_endpoint(url: str) -> str:
    """A webhook URL as it may be logged: scheme, host and port only. Its user information,
    path and query may be the receiver's secret (a password, a token in the path)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the endpoint"
    return f"{parts.scheme}://{host}{port}/..."
