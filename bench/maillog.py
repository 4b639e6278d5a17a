"""bench/maillog: what the maillog follower costs a message, itself and in Redis.

Writes N message records through the real store (one account, one tag), then appends a
Postfix-like log of those N messages (seven lines each, one of them `status=sent`) to a file
in groups of --group messages, and runs the follower as `txmail maillog` does (the real
LogFollower, StatusRecorder and scripts, against a private redis-server) until it has read
every line. Each group is appended once the follower has read the one before, so with
--group 1 every batch holds one delivery, as on a quiet node, and with --group 100 a busy one.

Two ways to record, alternated rep by rep:

    batch     one maillog_batch.lua call per batch of lines, the position inside it (now)
    per-line  the records read in two pipelines, then each line's event script, reputation
              script and "counted" mark apart, the position in a file (what the follower did
              before; what it still does on a Redis Cluster)

Prints, per way and rep, the follower's CPU a message (this process), Redis's (its
/proc stat), the wall-clock time a message, Redis commands a message (INFO commandstats) and
round trips a message (calls that went to Redis), then the medians. `--appendfsync` lists
Redis's settings to compare: each gets a redis-server of its own, and every rep runs each way
against each of them in turn.

    .venv/bin/python bench/maillog.py [--messages 3000] [--group 1] [--reps 3]
                                      [--appendfsync always,everysec]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from txmail.accounts import reputation
from txmail.events import Recorder
from txmail.maillog.follower import LogFollower
from txmail.maillog.position import RedisPosition
from txmail.maillog.server import SettingsCache, StatusRecorder, handle_lines
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages
from txmail_testing.harness import RedisServer

WAYS = ("batch", "per-line")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def log_lines(queue_id: str, n: int) -> list[str]:
    p = "Dec  7 23:00:00 mta txmail/"
    rcpt = f"ok{n}@dest.example"
    return [
        f"{p}smtpd[10]: {queue_id}: client=localhost[127.0.0.1]",
        f"{p}cleanup[11]: {queue_id}: message-id=<{n}@bench.example>",
        f"{p}qmgr[12]: {queue_id}: from=<app@bench.example>, size=5120, nrcpt=1 (queue active)",
        f"{p}smtp[13]: Trusted TLS connection established to 127.0.0.1[127.0.0.1]:2526",
        f"{p}smtp[13]: {queue_id}: to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]:2526, delay=0.12, "
        "delays=0.05/0.01/0.03/0.03, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ)",
        f"{p}qmgr[12]: {queue_id}: removed",
        f"{p}smtpd[10]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1",
    ]


class Counting:
    """Counts the calls that reach Redis: every execute_command, and a pipeline's execute."""

    def __init__(self, client: redis.Redis) -> None:
        self.trips = 0
        original = client.execute_command
        pipeline = client.pipeline

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.trips += 1
            return original(*args, **kwargs)

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            run = pipe.execute

            def execute(*a: Any, **k: Any) -> Any:
                self.trips += 1
                return run(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        client.execute_command = execute_command  # type: ignore[method-assign]
        client.pipeline = counted_pipeline  # type: ignore[method-assign]


def run(way: str, server: RedisServer, args: argparse.Namespace, rep: int) -> dict[str, float]:
    client = server.client()
    keys = Keys(f"b{rep}{way[0]}:")
    client.hset(keys.account("bench"), "status", "active")
    messages = Messages(client, keys, 3600)
    queue_ids = [f"B{rep}{way[0].upper()}{n:08d}X" for n in range(args.messages)]
    for n, queue_id in enumerate(queue_ids):
        messages.record(
            MessageRecord(
                queue_id=queue_id,
                account="bench",
                envelope_sender="app@bench.example",
                recipients=[f"ok{n}@dest.example"],
                tags=["bench"],
            )
        )
    folder = Path(tempfile.mkdtemp(prefix="bench-maillog-"))
    log = folder / "postfix.log"
    log.touch()
    counting = Counting(client)
    cache = SettingsCache(client, keys)
    recorder = StatusRecorder(
        client,
        keys,
        Messages(client, keys, 3600),
        Recorder(client, keys, outcome_hook=reputation.outcome_hook(client, keys, cache.get)),
        settings=cache,
        position_key=keys.maillog_position("bench"),
    )
    if way == "batch":
        positions = RedisPosition(client, keys.maillog_position("bench"), folder / "offset")
        follower = LogFollower(log, folder / "offset", positions=positions)
    else:
        follower = LogFollower(log, folder / "offset")
        recorder.record_statuses = lambda statuses, position=None: [  # type: ignore[method-assign]
            recorder.handle(s) for s in statuses
        ]
        recorder.messages.get_many = recorder.messages.get_many_pipelined  # type: ignore[method-assign]
    groups = [
        [
            line
            for n in range(i, min(i + args.group, args.messages))
            for line in log_lines(queue_ids[n], n)
        ]
        for i in range(0, args.messages, args.group)
    ]
    before_commands = commands(client)
    counting.trips = 0
    redis_before, own_before = cpu_of(server.proc.pid), time.process_time()  # type: ignore[union-attr]
    wall_before = time.monotonic()
    with log.open("a") as out:
        for group in groups:
            out.write("\n".join(group) + "\n")
            out.flush()
            read = 0
            while read < len(group):
                lines = follower.read_lines()
                read += len(lines)
                handle_lines(lines, recorder, follower.position() if way == "batch" else None)
                follower.commit()
    own = time.process_time() - own_before
    wall = time.monotonic() - wall_before
    redis_cpu = cpu_of(server.proc.pid) - redis_before  # type: ignore[union-attr]
    trips = counting.trips
    done = commands(client) - before_commands
    follower.close()
    events = client.xlen(keys.events("bench"))
    if events != args.messages:
        raise SystemExit(f"{way}: expected {args.messages} events, found {events}")
    client.flushdb()
    client.close()
    return {
        "follower_ms": own * 1000 / args.messages,
        "wall_ms": wall * 1000 / args.messages,
        "redis_ms": redis_cpu * 1000 / args.messages,
        "commands": done / args.messages,
        "trips": trips / args.messages,
    }


def line(row: dict[str, float]) -> str:
    return (
        f"follower {row['follower_ms']:.3f} ms  Redis {row['redis_ms']:.3f} ms CPU, "
        f"{row['wall_ms']:.3f} ms wall, {row['commands']:.1f} commands, "
        f"{row['trips']:.2f} round trips a message"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--group", type=int, default=1, help="messages appended at a time")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--appendfsync", default="always,everysec")
    args = parser.parse_args()
    settings = args.appendfsync.split(",")
    servers = {name: RedisServer(appendfsync=name).start() for name in settings}
    runs = [(way, name) for name in settings for way in WAYS]
    found: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    print(
        f"maillog: {args.messages} messages, {args.group} a batch, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    try:
        for rep in range(1, args.reps + 1):
            for way, name in runs:
                row = run(way, servers[name], args, rep)
                found[(way, name)].append(row)
                print(f"  rep {rep} {way:8} {name:8}  {line(row)}", flush=True)
    finally:
        for server in servers.values():
            server.close()
    for (way, name), rows in found.items():
        median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{way:8} {name:8} median  {line(median)}")

    def ratio(a: tuple[str, str], b: tuple[str, str], key: str) -> str:
        per = [
            sum(x[k] for k in key.split("+")) / sum(y[k] for k in key.split("+"))
            for x, y in zip(found[a], found[b], strict=True)
        ]
        return f"{statistics.median(per):.2f} (per rep: {' '.join(f'{r:.2f}' for r in per)})"

    for name in settings:
        print(
            f"batch/per-line, {name}: follower + Redis CPU "
            f"{ratio(('batch', name), ('per-line', name), 'follower_ms+redis_ms')}, "
            f"Redis CPU {ratio(('batch', name), ('per-line', name), 'redis_ms')}"
        )
    for way in WAYS:
        for name in settings[1:]:
            print(
                f"{way}, {name}/{settings[0]}: Redis CPU "
                f"{ratio((way, name), (way, settings[0]), 'redis_ms')}, wall "
                f"{ratio((way, name), (way, settings[0]), 'wall_ms')}"
            )
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
