"""bench/bounce_latency: seconds from a bounce's arrival to its webhook post, end to end.

One txmail node (real Postfix, Dovecot, Redis, milter, bounce pipe, maillog follower and
webhooks dispatcher with its default 1 s batching) relays to a sink that accepts everything.
For each of N messages the sink later sends an RFC 3464 DSN back to the message's return-path
address on port 25, as a remote MTA does; the clock runs from the moment that DSN is handed to
port 25 until the `bounce` event reaches a local HTTP receiver. The DSNs are spread out (one
every --gap seconds) so each measures the path, not a queue.

    .venv/bin/python bench/bounce_latency.py [--bounces 20] [--gap 0.5]

Prints p50, p95 and max (goal: p95 below 2 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from txmail_testing.harness import Sink, Stack, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bounces", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.5)
    args = parser.parse_args()
    sink = Sink().start()
    receiver = WebhookReceiver().start()
    stack = Stack(relay_port=sink.port, name="bench-bounce")
    try:
        stack.start()
        password = stack.add_account("bench", "bench.example")
        stack.txmail("webhooks", "url", "bench", receiver.url)
        sender = "app@bench.example"
        rcpts = [f"user{n}@dest.example" for n in range(args.bounces)]
        queue_ids = [
            stack.send(("bench", password), sender, [r], simple_message(sender, r)) for r in rcpts
        ]
        wait_for(
            lambda: sum(e["kind"] == "delivery" for e in receiver.events()) >= args.bounces,
            60,
            what="every delivery event",
        )
        latencies = []
        for rcpt, queue_id in zip(rcpts, queue_ids, strict=True):
            original = sink.find(rcpt)[-1]
            dsn = Sink.dsn(original, rcpt)
            start = time.time()
            Sink.deliver(stack.smtp, "", original.sender, dsn)
            event = receiver.wait_event(
                lambda e, q=queue_id: e["message_id"] == q and e["kind"] == "bounce", timeout=30
            )
            _, _, arrived = receiver.post_of(event["id"])
            latencies.append(arrived - start)
            time.sleep(args.gap)
        latencies.sort()
        p95 = latencies[max(int(round(0.95 * len(latencies))) - 1, 0)]
        print(
            f"{len(latencies)} bounces: p50 {statistics.median(latencies):.2f} s, "
            f"p95 {p95:.2f} s, max {latencies[-1]:.2f} s (goal: p95 below 2 s)"
        )
    finally:
        stack.close()
        receiver.stop()
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
