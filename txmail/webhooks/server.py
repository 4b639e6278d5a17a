"""txmail webhooks run: the dispatcher process (started by `txmail up`), and the operator's
operations on dead letters and endpoints.

The loop runs Dispatcher.step() (txmail.webhooks.dispatcher) and posts through a small thread
pool, so one slow endpoint cannot hold up the others; each endpoint has at most one post in
flight, which keeps its events in order. Idle, it sleeps webhooks.poll_interval. SIGTERM and
SIGINT stop it; what was read but not acknowledged is posted again by the next run.

Dead letters (PREFIX {ACCOUNT}:webhook:dead) are listed and replayed by the core
(txmail/webhook_endpoints.py: dead_letters(), replay()), which the CLI and the console share.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import socket
import time
from typing import Any

from txmail import store
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.histograms import Observations, node_name
from txmail.store import Client, Keys, secrets
from txmail.webhook_endpoints import DeadLetter, dead_letters, replay  # noqa: F401 - re-exported
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
