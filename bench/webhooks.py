"""bench/webhooks: events per second the webhooks dispatcher posts to a local receiver.

A private Redis holds N recorded events of one account (written by the real recorder); the
dispatcher core (txmail.webhooks.dispatcher, real requests transport, batches of 100, signed)
posts them to a threaded HTTP receiver on loopback, and the clock runs from the first read to
the last acknowledgement. Every run checks that every event id arrived and that nothing is left
pending in the consumer group.

    .venv/bin/python bench/webhooks.py [--events 20000] [--reps 3]

Prints one line per run and the median.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time

from txmail.config import WebhooksSettings
from txmail.events import Recorder, make_event
from txmail.store import Keys
from txmail.webhooks.dispatcher import Dispatcher, requests_transport
from txmail_testing.harness import RedisServer
from txmail_testing.webhook_receiver import WebhookReceiver


def run_once(redis_server: RedisServer, receiver: WebhookReceiver, events: int, rep: int) -> float:
    client = redis_server.client()
    keys = Keys(f"bench{rep}:")
    client.sadd(keys.accounts, "acme")
    client.hset(keys.account("acme"), mapping={"name": "acme", "webhook_url": receiver.url})
    recorder = Recorder(client, keys)
    for n in range(events):
        recorder.record(
            make_event(
                "delivery",
                "acme",
                f"Q{n // 10}",
                f"r{n}@dest.example",
                {
                    "status": "2.0.0",
                    "diagnostic": "250 2.0.0 ok",
                    "remote_mta": "mx.dest.example",
                    "class": "standard",
                },
                tags=["bench"],
            )
        )
    receiver.posts.clear()
    # as `txmail webhooks run` does: posts on a thread pool, the loop waits for them
    pool = concurrent.futures.ThreadPoolExecutor(8)
    dispatcher = Dispatcher(
        client,
        keys,
        WebhooksSettings(),
        b"k" * 32,
        "bench",
        requests_transport(),
        stream_max=events,
        executor=pool,
    )
    stream = keys.events("acme")
    start = time.perf_counter()
    while True:
        if dispatcher.step():
            continue
        if not dispatcher.busy():
            group = client.xinfo_groups(stream)[0]
            if group["lag"] == 0 and group["pending"] == 0:
                break
        dispatcher.wait(0.01)
    elapsed = time.perf_counter() - start
    pool.shutdown()
    ids = {e["id"] for e in receiver.events()}
    assert len(ids) == events, (len(ids), events)
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0
    client.close()
    return events / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    redis_server = RedisServer().start()
    receiver = WebhookReceiver().start()
    try:
        rates = []
        for rep in range(args.reps):
            rate = run_once(redis_server, receiver, args.events, rep)
            rates.append(rate)
            print(
                f"run {rep + 1}: {args.events} events in batches of 100: {rate:,.0f} events/s",
                flush=True,
            )
        print(f"median: {statistics.median(rates):,.0f} events/s (goal: at least 5,000)")
    finally:
        receiver.stop()
        redis_server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
