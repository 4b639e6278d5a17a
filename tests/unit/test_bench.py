"""The parts of bench/throughput.py and bench/redis_memory.py their figures rest on: which
process's CPU counts to which group, how postfwd's rate count is read, and what a message
writes to Redis through the real write paths. (The benchmarks themselves are not run here, and
nothing here looks at a time.)"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

from txmail import config as config_mod
from txmail import store
from txmail.accounts.records import Accounts
from txmail_testing.harness import RedisServer

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


throughput = bench_module("throughput")
redis_memory = bench_module("redis_memory")


def test_each_process_counts_to_the_group_of_its_nearest_root() -> None:
    proc = throughput.Proc
    procs = {
        10: proc(ppid=1, argv=("txmail", "up"), ticks=5),  # the supervisor
        11: proc(ppid=10, argv=("milter",), ticks=100),
        13: proc(ppid=11, argv=("worker",), ticks=7),  # a milter's child counts as milter
        12: proc(ppid=10, argv=("redis-server",), ticks=40),
        20: proc(ppid=1, argv=("master",), ticks=300),  # holds its reaped smtpds' time too
        21: proc(ppid=20, argv=("smtpd",), ticks=30),
        30: proc(ppid=1, argv=("someone else",), ticks=999),
    }
    roots = {10: "others", 11: "milter", 12: "redis", 20: "postfix"}
    assert throughput.group_ticks(procs, roots) == {
        "others": 5,
        "milter": 107,
        "redis": 40,
        "postfix": 330,
    }
    assert throughput.group_ticks(procs, {}) == {}


def test_txmail_processes_are_grouped_by_their_command() -> None:
    def txmail(*command: str) -> list[str]:
        return ["/venv/bin/python", "-m", "txmail", "--config", "/s/txmail.toml", *command]

    group = throughput.component_group
    assert group(["redis-server unixsocket:/s/run/redis/redis.sock"]) == "redis"
    assert group(["/usr/bin/redis-server", "127.0.0.1:6379"]) == "redis"
    assert group(txmail("milter")) == "milter"
    assert group(txmail("policyd")) == "policy"
    assert group(txmail("maillog")) == "follower"
    assert group(txmail("webhooks", "run")) == "dispatcher"
    assert group(txmail("tracker")) == "tracker"
    assert group(txmail("authsync")) == "others"
    assert group(["/usr/sbin/dovecot", "-F"]) == "others"
    assert group([]) == "others"


def test_postfwds_rate_count_is_read_from_its_cache_dump() -> None:
    entry = "%rate_cache -> %sender=app@bench.example -> %RATE01+10000000_3600 -> "
    dump = [
        entry + "@list                 -> 'RATE01+10000000_3600'",
        entry + "@count    -> '3001'",
        "%rate_cache -> %sender=other@bench.example -> %RATE01+10000000_3600 -> @count    -> '7'",
    ]
    assert throughput.rate_count(dump, "app@bench.example") == 3001
    assert throughput.rate_count(dump, "other@bench.example") == 7
    assert throughput.rate_count(dump, "nobody@bench.example") == -1
    assert throughput.rate_count([""], "app@bench.example") == -1


def test_per_message_figures_and_the_group_table() -> None:
    after, before = {"postfix": 6.0, "milter": 3.0}, {"postfix": 3.0}
    assert throughput.per_message(after, before, 1000, 1000) == {"postfix": 3.0, "milter": 3.0}
    table = throughput.group_table(
        {"bare": [{"postfix": 3.0}], "txmail": [{"postfix": 4.0, "milter": 3.0}]}
    )
    assert "| milter |  | 3.00 |" in table
    assert "| all groups | 3.00 | 7.00 |" in table


def test_key_kinds_name_no_account_nor_queue_id() -> None:
    kind = redis_memory.kind_of
    assert kind("txmail:{acme}:message:4QX:events", "txmail:") == "{ACCOUNT}:message:QID:events"
    assert kind("txmail:{acme}:message:4QX", "txmail:") == "{ACCOUNT}:message:QID"
    assert kind("txmail:{acme}:seen:4QX", "txmail:") == "{ACCOUNT}:seen:QID"
    assert kind("txmail:{acme}:counts:20261207", "txmail:") == "{ACCOUNT}:counts:DAY"
    assert kind("txmail:queue:4QX", "txmail:") == "queue:QID"
    assert kind("txmail:msgid:<a@b>", "txmail:") == "header Message-ID:ID"
    assert kind("txmail:{acme}:usage:m:29944740", "txmail:") == "{ACCOUNT}:usage:WINDOW"
    assert kind("txmail:{acme}:events", "txmail:") == "{ACCOUNT}:events"


def test_the_memory_bench_uses_the_rendered_redis_confs_encodings(tmp_path: Path) -> None:
    template = tmp_path / "redis.conf"
    template.write_text("port 0\nhash-max-listpack-value 256\n# set-max-intset-entries 1\n")
    assert redis_memory.encoding_settings(template) == ["--hash-max-listpack-value", "256"]


def test_a_message_writes_its_record_and_delivery_through_the_real_paths(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"mem{uuid.uuid4().hex[:8]}:"
    config_file = tmp_path / "txmail.toml"
    config_file.write_text(
        f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n'
    )
    settings = config_mod.load(config_file)
    client = store.connect(settings)
    keys = store.Keys(prefix)
    Accounts(client, keys).add("acme", ["acme.example"], "bench-password-1")
    redis_memory.write_messages(settings, client, ["acme"], 3, 2, random.Random(1), time.time())
    kinds: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        name = redis_memory.kind_of(key, prefix)
        kinds[name] = kinds.get(name, 0) + 1
    for kind in redis_memory.PER_MESSAGE_KINDS:
        assert kinds.get(kind) == 3, kind
    assert client.xlen(keys.events("acme")) == 3  # one delivery event each
    assert kinds.get("{ACCOUNT}:counts:DAY") == 1
    client.close()
