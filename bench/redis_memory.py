"""bench/redis_memory: Redis memory a message costs, per account, and for a node's month.

Writes N messages into a private redis-server through the code paths a message really takes,
not through SMTP:

- the milter's end of message: txmail/milter/finish.py's write_accepted, the call its _store
  makes (Messages.accept: message_accept.lua with the record, the account's tag counts, the
  per-day and per-tag counts and the quota, plus the node's accepted counter, in one round
  trip), the return path from the real bounce-address token;
- the maillog follower's delivery: a Postfix `status=sent` line through txmail.maillog's own
  StatusRecorder (prefetch, event_record.lua, the reputation script), as `txmail maillog` does.

Accounts, their domains and the webhook consumer group are made first and are not counted in
the per-message figures. redis-server runs with the memory settings of txmail's rendered
redis.conf (every `*-max-listpack-*` and `*-max-intset-*` line of postfix-conf/redis.conf),
without persistence (memory is what is measured).

    .venv/bin/python bench/redis_memory.py [--messages 20000] [--accounts 10] [--tags 2]
                                           [--per-day 1000000] [--projection-accounts 100]
    .venv/bin/python bench/redis_memory.py --messages 1000000     # about 15-30 min here

Prints: INFO memory used_memory before and after and its delta a message; MEMORY USAGE summed
by key kind (sampled, `--sample` keys a kind, scaled by the kind's count) a message and a
account; and the projection for a node sending --per-day messages a day with today's
retention: message records, their seen hash and event list live milter.message_ttl_days (30);
each account's event stream keeps events.stream_max (100,000) delivered events; the per-day
counters live events.counter_days (400).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from txmail import config as config_mod
from txmail import store
from txmail.accounts.records import Accounts
from txmail.maillog.server import build as build_follower
from txmail.maillog.server import handle_lines
from txmail.milter.finish import write_accepted
from txmail.store.messages import MessageRecord, Messages
from txmail.tokens.bounce_address import bounce_address
from txmail_testing.harness import free_listening_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
QUEUE_ID_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy"
ENCODING = re.compile(r"^\s*([a-z]+-max-(?:listpack|intset|ziplist)-[a-z]+)\s+(\S+)\s*$", re.M)
# Key kinds: the account and the queue id replaced by placeholders.
KINDS = (
    (re.compile(r"\{[^}]+\}:message:[^:]+:events$"), "{ACCOUNT}:message:QID:events"),
    (re.compile(r"\{[^}]+\}:message:[^:]+$"), "{ACCOUNT}:message:QID"),
    (re.compile(r"\{[^}]+\}:seen:[^:]+$"), "{ACCOUNT}:seen:QID"),
    (re.compile(r"\{[^}]+\}:counts:\d{8}$"), "{ACCOUNT}:counts:DAY"),
    (re.compile(r"^queue:[^:]+$"), "queue:QID"),
    (re.compile(r"^msgid:.*$|^header[^:]*:.*$"), "header Message-ID:ID"),
)
PER_MESSAGE_KINDS = (
    "{ACCOUNT}:message:QID",
    "queue:QID",
    "header Message-ID:ID",
    "{ACCOUNT}:seen:QID",
    "{ACCOUNT}:message:QID:events",
)


def encoding_settings(template: Path = ROOT / "postfix-conf/redis.conf") -> list[str]:
    """redis-server arguments for the encoding thresholds txmail's rendered redis.conf sets."""
    args: list[str] = []
    for name, value in ENCODING.findall(template.read_text()):
        args += [f"--{name}", value]
    return args


def queue_id(rng: random.Random) -> str:
    """A Postfix long queue id's shape (15 characters)."""
    return "".join(rng.choice(QUEUE_ID_CHARS) for _ in range(15))


def kind_of(key: str, prefix: str) -> str:
    """The kind of a key: its name with the account and the queue id (or day) replaced."""
    name = key[len(prefix) :] if key.startswith(prefix) else key
    for pattern, kind in KINDS:
        if pattern.search(name):
            return kind
    return re.sub(r":[a-z]:\d+$", ":WINDOW", re.sub(r"\{[^}]+\}", "{ACCOUNT}", name))


def status_line(qid: str, recipient: str, when: float) -> str:
    """A Postfix delivery line as the follower reads it."""
    stamp = time.strftime("%b %e %H:%M:%S", time.gmtime(when))
    return (
        f"{stamp} mta txmail/smtp[4242]: {qid}: to=<{recipient}>, "
        "relay=mx.dest.test[192.0.2.25]:25, delay=0.42, delays=0.05/0.01/0.2/0.16, "
        f"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {qid[:10]})"
    )


class PrivateRedis:
    def __init__(self, extra: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="txmail-redis-memory-"))
        self.port = free_listening_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                *encoding_settings(),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 10, what="redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def write_messages(
    settings: config_mod.Settings,
    client: Any,
    accounts: list[str],
    count: int,
    tags: int,
    rng: random.Random,
    now: float,
    progress: Callable[[int], None] | None = None,
) -> None:
    """`count` messages, one recipient each, round-robin over `accounts`: what the milter writes
    at end of message, then what the follower writes for its delivery line. `progress(n)` is
    called after every 100,000 messages."""
    keys = store.Keys(settings.redis.prefix)
    ttl = settings.milter.message_ttl_days * 86400
    messages = Messages(client, keys, ttl)
    follower = build_follower(settings, client, clock=lambda: now)
    secret = b"bench-bounce-secret-of-32-bytes!"
    lines = []
    for n in range(count):
        account = accounts[n % len(accounts)]
        domain = f"{account}.example"
        qid = queue_id(rng)
        recipient = f"user{n}@dest{n % 97}.test"
        message_tags = [f"tag{(n + t) % 7}" for t in range(tags)]
        record = MessageRecord(
            queue_id=qid,
            account=account,
            envelope_sender=f"app@{domain}",
            recipients=[recipient],
            size=5120,
            accepted_at=now,
            header_message_id=f"<{qid}.{n}@{domain}>",
            tags=message_tags,
            return_path=bounce_address(qid, domain, secret, settings.bounce_domain),
        )

        # the milter's own write (finish._store): record, tag counts, quota, /metrics count
        write_accepted(settings, messages, record, 1, record.size)
        lines.append(status_line(qid, recipient, now))
        if len(lines) == 200:  # the follower reads a batch of lines at a time
            handle_lines(lines, follower)
            lines = []
        if progress is not None and (n + 1) % 100_000 == 0:
            handle_lines(lines, follower)
            lines = []
            progress(n + 1)
    if lines:
        handle_lines(lines, follower)


def by_kind(client: Any, prefix: str, sample: int) -> dict[str, tuple[int, int]]:
    """kind -> (keys, bytes by MEMORY USAGE), the bytes measured on up to `sample` keys of
    each kind and scaled to its count."""
    counts: dict[str, int] = {}
    measured: dict[str, list[int]] = {}
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        kind = kind_of(name, prefix)
        counts[kind] = counts.get(kind, 0) + 1
        sizes = measured.setdefault(kind, [])
        if len(sizes) < sample:
            sizes.append(int(client.memory_usage(key, samples=0) or 0))
    return {
        kind: (n, round(sum(measured[kind]) / len(measured[kind]) * n))
        for kind, n in counts.items()
    }


def stream_bytes_per_event(client: Any, keys: store.Keys, accounts: Iterable[str]) -> float:
    total = length = 0
    for account in accounts:
        stream = keys.events(account)
        length += int(client.xlen(stream))
        total += int(client.memory_usage(stream, samples=0) or 0)
    return total / length if length else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--tags", type=int, default=2, help="Tags a message carries.")
    parser.add_argument("--sample", type=int, default=2000, help="Keys measured a kind.")
    parser.add_argument("--per-day", type=int, default=1_000_000)
    parser.add_argument("--projection-accounts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument(
        "--redis-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="One more redis-server setting, to measure its effect (repeatable).",
    )
    args = parser.parse_args()
    if args.messages < 1 or args.accounts < 1:
        raise SystemExit("--messages and --accounts must be at least 1")

    extra = []
    for item in args.redis_arg:
        name, _, value = item.partition("=")
        extra += [f"--{name}", value]
    # A SIGTERM (timeout(1), a stopped job) still stops the private redis-server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = PrivateRedis(extra)
    try:
        workdir = Path(server.dir)
        config_file = workdir / "txmail.toml"
        config_file.write_text(f'state_dir = "{workdir}"\n[redis]\nurl = "{server.url}"\n')
        settings = config_mod.load(config_file)
        client = store.connect(settings, decode=False)
        text_client = store.connect(settings)
        keys = store.Keys(settings.redis.prefix)
        registry = Accounts(text_client, keys)
        names = [f"acct{n}" for n in range(args.accounts)]
        for name in names:
            registry.add(name, [f"{name}.example"], "bench-password-1", settings={"warmup": False})
            text_client.xgroup_create(keys.events(name), "webhooks", id="0", mkstream=True)
        base = used_memory(client)
        base_usage = sum(
            size for _n, size in by_kind(client, settings.redis.prefix, 10**9).values()
        )
        start = time.monotonic()

        def progress(done: int) -> None:
            grown = used_memory(client) - base
            print(
                f"  {done:9,} messages: used_memory {grown / 2**20:8.1f} MiB more, "
                f"{grown / done:.0f} bytes a message ({time.monotonic() - start:.0f} s)",
                flush=True,
            )

        write_messages(
            settings,
            text_client,
            names,
            args.messages,
            args.tags,
            random.Random(args.seed),
            time.time(),
            progress,
        )
        elapsed = time.monotonic() - start
        after = used_memory(client)
        kinds = by_kind(client, settings.redis.prefix, args.sample)
        per_event = stream_bytes_per_event(client, keys, names)
        usage = sum(size for _n, size in kinds.values()) - base_usage
        report(args, settings, base, after, elapsed, kinds, per_event, (after - base) / usage)
    finally:
        server.close()


def report(
    args: argparse.Namespace,
    settings: config_mod.Settings,
    base: int,
    after: int,
    elapsed: float,
    kinds: dict[str, tuple[int, int]],
    per_event: float,
    overhead: float,
) -> None:
    n = args.messages
    print(
        f"redis_memory: {n} messages, {args.accounts} accounts, {args.tags} tags a message, "
        f"written in {elapsed:.1f} s ({n / elapsed:.0f} messages/s); "
        f"redis-server {redis_version()}"
    )
    print(f"used_memory before {base} after {after}: {(after - base) / n:.0f} bytes a message")
    print()
    print("| key kind | keys | MEMORY USAGE a message, bytes | a key |")
    print("|---|---|---|---|")
    per_message = per_account = 0.0
    for kind, (count, size) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        print(f"| {kind} | {count} | {size / n:.1f} | {size / count:.0f} |")
        if kind in PER_MESSAGE_KINDS:
            per_message += size / n
    print()
    stream_kind = "{ACCOUNT}:events"
    counts_kind = "{ACCOUNT}:counts:DAY"
    for kind, (_count, size) in kinds.items():
        if kind not in PER_MESSAGE_KINDS and kind not in (stream_kind, counts_kind):
            per_account += size / args.accounts
    counts_day = kinds.get(counts_kind, (1, 0))
    per_counts_day = counts_day[1] / max(1, counts_day[0])
    print(f"per message, the keys that live as long as its record: {per_message:.0f} bytes")
    print(f"event stream: {per_event:.0f} bytes an event")
    print(f"per account and day, its counters: {per_counts_day:.0f} bytes")
    print(f"per account, the rest (record, usage, reputation, tag counts): {per_account:.0f} bytes")
    days = settings.milter.message_ttl_days
    kept = settings.events.stream_max
    counter_days = settings.events.counter_days
    records = args.per_day * days * per_message
    streams = args.projection_accounts * min(kept, args.per_day * days) * per_event
    counters = args.projection_accounts * counter_days * per_counts_day
    fixed = args.projection_accounts * per_account
    total = records + streams + counters + fixed
    print()
    print(
        f"projection: {args.per_day:,} messages a day, {args.projection_accounts} accounts, "
        f"records kept {days} days, {kept:,} events a stream, counters {counter_days} days"
    )
    print(f"  message records and their keys: {records / 2**30:7.2f} GiB")
    print(f"  event streams:                  {streams / 2**30:7.2f} GiB")
    print(f"  per-day counters:               {counters / 2**30:7.2f} GiB")
    print(f"  accounts:                       {fixed / 2**30:7.2f} GiB")
    print(f"  total (MEMORY USAGE):           {total / 2**30:7.2f} GiB")
    print(
        f"  used_memory grew {overhead:.2f} times what MEMORY USAGE counts (the expiry table, "
        "allocator rounding):"
    )
    print(f"  total (used_memory):            {total * overhead / 2**30:7.2f} GiB")
    print(
        f"  a message {(after - base) / n:.0f} bytes of used_memory; an account "
        f"{(kept * per_event + counter_days * per_counts_day + per_account) * overhead / 2**20:.1f}"
        " MiB once its stream and counters are full"
    )


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    os.environ.setdefault("TZ", "UTC")
    main()
