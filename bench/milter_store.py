"""bench/milter_store: the milter's write of an accepted message, the way before message_accept.lua
and the way since, in one run against one private Redis.

    .venv/bin/python bench/milter_store.py [--messages 5000] [--blocks 6] [--tags 1]
                                           [--appendfsync everysec|always]

"before" is the pipeline the milter sent until message_accept.lua (SET queue, HSET and EXPIRE
of the record, SET msgid, HINCRBY per tag, EVAL of tags_count.lua with its text, HINCRBY of
/metrics' count, EVAL of policy_commit.lua with its text: 8 commands, 2 of them carrying about
5 KB of script); "after" is Messages.accept (SET, SET, HINCRBY and one EVALSHA of
message_accept.lua: 4 commands). Both write the same keys for the same message, through the
same redis-py client, one round trip a message, and count the same way (both run the
checkout's Lua for the count, _commit.lua and _count_tags.lua: the bench isolates the change
from a pipeline of commands and script texts to one EVALSHA). The blocks alternate between
the two ways, so a busy moment of the machine hits both alike. Prints per message and way:
the client's CPU (this process, redis-py packing and parsing), Redis's CPU (INFO cpu of the
private server), the bytes Redis read, and the commands Redis ran (INFO commandstats; the
scripts' own included), as medians over the blocks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txmail.accounts.records import Accounts
from txmail.accounts.usage import commit_call
from txmail.config import Settings
from txmail.stats import count_accepted, tags_count_call
from txmail.store import Keys, hash_mapping, scripts
from txmail.store.counters import count_message
from txmail.store.messages import Counting, MessageRecord, Messages
from txmail_testing.harness import RedisServer

TTL = 30 * 86400


def record(queue_id: str, tags: list[str]) -> MessageRecord:
    return MessageRecord(
        queue_id=queue_id,
        account="bench",
        envelope_sender="app@bench.example",
        recipients=["rcpt@dest.test"],
        size=5120,
        header_message_id=f"<{queue_id}@client.test>",
        tags=tags,
        return_path=f"b+{queue_id}@bounce.example",
    )


def before(client: Any, keys: Keys, settings: Settings, message: MessageRecord) -> None:
    """The milter's pipeline until message_accept.lua (finish._store and Messages.record)."""
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.queue(message.queue_id), message.account, ex=TTL)
    key = keys.message(message.account, message.queue_id)
    pipe.hset(key, mapping=hash_mapping(message.to_hash()))
    pipe.expire(key, TTL)
    pipe.set(keys.header_message_id(message.header_message_id), message.queue_id, ex=TTL)
    for tag in message.tags:
        pipe.hincrby(keys.tag_counts(message.account), tag, 1)
    count_accepted(pipe, keys, message.account, message.tags, message.accepted_at, 400, 100)
    count_message(pipe, keys, "accepted")
    call_keys, args = commit_call(
        settings, keys, message.account, message.queue_id, len(message.recipients), message.size
    )
    pipe.execute_command("EVAL", scripts.text("policy_commit"), len(call_keys), *call_keys, *args)
    pipe.execute()


def after(messages: Messages, keys: Keys, settings: Settings, message: MessageRecord) -> None:
    """The milter's write since (finish._store)."""
    day_key, day_args = tags_count_call(keys, message.account, message.accepted_at, 400, 100)
    commit = commit_call(
        settings, keys, message.account, message.queue_id, len(message.recipients), message.size
    )
    messages.accept(
        message,
        Counting(day_key, day_args, commit),
        also=lambda pipe: count_message(pipe, keys, "accepted"),
    )


def server_state(client: Any) -> tuple[float, int, int]:
    cpu = client.info("cpu")
    stats = client.info("stats")
    commands = sum(int(row["calls"]) for row in client.info("commandstats").values())
    return (
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        int(stats["total_net_input_bytes"]),
        commands,
    )


def block(
    client: Any, write: Callable[[MessageRecord], None], count: int, tags: list[str], name: str
) -> dict[str, float]:
    queue_ids = [f"{name}{time.monotonic_ns():x}{n:06d}" for n in range(count)]
    records = [record(q, tags) for q in queue_ids]
    server_before = server_state(client)
    cpu_before = time.process_time()
    for message in records:
        write(message)
    cpu = time.process_time() - cpu_before
    server_after = server_state(client)
    return {
        "client µs": cpu * 1e6 / count,
        "redis µs": (server_after[0] - server_before[0]) * 1e6 / count,
        "bytes in": (server_after[1] - server_before[1]) / count,
        "commands": (server_after[2] - server_before[2] - 3) / count,  # 3 INFOs
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages a block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks of each way")
    parser.add_argument("--tags", type=int, default=1, help="tags a message")
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always"))
    args = parser.parse_args()

    server = RedisServer().start()
    try:
        client = server.client()
        client.config_set("appendfsync", args.appendfsync)
        keys, settings = Keys("bench:"), Settings()
        Accounts(client, keys).add(
            "bench", ["bench.example"], "a-good-password", settings={"warmup": False}
        )
        messages = Messages(client, keys, TTL)
        tags = [f"tag{n}" for n in range(args.tags)]
        ways: dict[str, Callable[[MessageRecord], None]] = {
            "before": lambda m: before(client, keys, settings, m),
            "after": lambda m: after(messages, keys, settings, m),
        }
        for way in ways.values():  # warm: scripts loaded, connections open
            for n in range(50):
                way(record(f"warm{time.monotonic_ns():x}{n}", tags))
        results: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
        for number in range(args.blocks):
            order = list(ways) if number % 2 == 0 else list(reversed(ways))
            for name in order:
                results[name].append(block(client, ways[name], args.messages, tags, name))
            client.flushall()  # memory stays small; the account goes too: add it again
            Accounts(client, keys).add(
                "bench", ["bench.example"], "a-good-password", settings={"warmup": False}
            )
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            f"milter_store: {args.blocks} blocks of {args.messages} messages each way, "
            f"{args.tags} tag(s), appendfsync {args.appendfsync}, load {load}"
        )
        print(f"  {'per message':12} {'before':>9} {'after':>9} {'after/before':>13}")
        for figure in results["before"][0]:
            was = statistics.median(r[figure] for r in results["before"])
            now = statistics.median(r[figure] for r in results["after"])
            print(f"  {figure:12} {was:9.1f} {now:9.1f} {now / was:13.2f}")
        client.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
