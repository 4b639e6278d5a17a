"""txmail webhooks run: the dispatcher process (started by `txmail up`), and the operator's
operations on dead letters and endpoints.

The loop runs Dispatcher.step() (txmail.webhooks.dispatcher) and posts through a small thread
pool, so one slow endpoint cannot hold up the others; each endpoint has at most one post in
flight, which keeps its events in order. Idle, it sleeps webhooks.poll_interval. SIGTERM and
SIGINT stop it; what was read but not acknowledged is posted again by the next run.

Dead letters (PREFIX {ACCOUNT}:webhook:dead) are listed with dead_letters() and sent again
with replay(), which moves them back into the account's event stream in one MULTI (same slot),
with the same event ids, and turns the endpoint back on.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from txmail import store
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.events import Event
from txmail.histograms import Observations, node_name
from txmail.store import Client, Keys, decoded_entries, guard, secrets
from txmail.webhooks.dispatcher import Dispatcher, requests_transport

log = logging.getLogger("txmail.webhooks")

POST_WORKERS = 8


def consumer_name(settings: Settings) -> str:
    return settings.webhooks.consumer or socket.gethostname()


def build(settings: Settings, client: Client, executor: Any = None) -> Dispatcher:
    return Dispatcher(
        client,
        Keys(settings.redis.prefix),
        settings.webhooks,
        lambda: secrets.webhook_keys(settings, client),
        consumer_name(settings),
        requests_transport(),
        stream_max=settings.events.stream_max,
        executor=executor,
        observations=Observations("webhooks"),
        histogram_key=Keys(settings.redis.prefix).node_histograms(node_name(settings)),
    )


def serve(settings: Settings) -> None:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = store.connect(settings)
    executor = concurrent.futures.ThreadPoolExecutor(
        POST_WORKERS, thread_name_prefix="webhook-post"
    )
    dispatcher = build(settings, client, executor)
    log.info("dispatching events as consumer %s", dispatcher.consumer)
    outage = False
    while not stopping:
        try:
            work = dispatcher.step()
        except TemporaryFailure as exc:
            if not outage:
                log.warning("NOQUEUE: %s; retrying", exc)
            outage = True
            dispatcher.reread_pending()
            time.sleep(1.0)
            continue
        if outage:
            log.info("NOQUEUE: Redis answers again")
            outage = False
        if not work:
            dispatcher.wait(settings.webhooks.poll_interval)
    executor.shutdown(wait=True)
    dispatcher.flush_observations()  # what the last second observed
    log.info("stopped")


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    account: str
    event: Event
    error: str
    failed_at: float

    def public(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.entry_id,
            "account": self.account,
            "error": self.error,
            "failed_at": self.failed_at,
            "event": json.loads(self.event.to_json()),
        }


def dead_letters(client: Client, keys: Keys, account: str, limit: int = 1000) -> list[DeadLetter]:
    """The account's dead letters, oldest first."""
    with guard(f"listing the dead letters of {account}"):
        rows = decoded_entries(client.xrange(keys.dead_letters(account), count=limit))
    found = []
    for entry_id, fields in rows:
        try:
            event = Event.from_json(fields["event"])
        except (KeyError, ValueError, TypeError):
            continue
        found.append(
            DeadLetter(
                entry_id,
                account,
                event,
                fields.get("error", ""),
                float(fields.get("failed_at") or 0),
            )
        )
    return found


def replay(
    client: Client, keys: Keys, account: str, event_ids: set[str] | None = None, batch: int = 500
) -> int:
    """Send dead letters again (all, or those with the given event ids); how many."""
    moved = 0
    start = "-"
    while True:
        with guard(f"replaying the dead letters of {account}"):
            rows = decoded_entries(
                client.xrange(keys.dead_letters(account), min=start, count=batch)
            )
        if not rows:
            break
        chosen = [
            (entry_id, fields)
            for entry_id, fields in rows
            if fields.get("event") and (event_ids is None or _id_of(fields["event"]) in event_ids)
        ]
        if chosen:
            with guard(f"replaying the dead letters of {account}"):
                pipe = client.pipeline(transaction=True)
                for entry_id, fields in chosen:
                    pipe.xadd(keys.events(account), {"event": fields["event"], "replay": "1"})
                    pipe.xdel(keys.dead_letters(account), entry_id)
                pipe.hdel(keys.webhook(account), "disabled", "disabled_by")
                pipe.execute()
            moved += len(chosen)
        last = rows[-1][0]
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(rows) < batch:
            break
    return moved


def _id_of(raw: str) -> str:
    try:
        return str(json.loads(raw).get("id", ""))
    except ValueError:
        return ""
