"""bench/round_trips: Redis commands and CPU a message, process by process, through one stack.

Starts bench/throughput.py's txmail instance (every rule, DKIM, policyd, events; smtp-source
into the trusted listener, to smtp-sink), sends --messages messages --reps times and prints for
each rep, per message: the Redis commands of every process (INFO commandstats, each command
by name, the commands scripts run included as Redis counts them; the bench's own INFO left
out), and the CPU milliseconds of the milter, policyd, Redis,
the maillog follower, the webhook dispatcher and the whole machine. With --monitor it also
sends one message alone and prints the commands Redis saw for it (MONITOR), in order, client
by client, which is how the round trips of one message are traced.

    .venv/bin/python bench/round_trips.py [--messages 2000] [--sessions 10] [--reps 3]
                                          [--monitor] [--against OTHER/.venv/bin/python]

With --against, a second instance runs another checkout's code (say the commit before a
change, in a worktree of its own with its own venv) on the same machine, and the reps
alternate between the two, so a busy moment hits both alike; the summary gives this
checkout's medians over the other's.

Figures swing with the machine's load (printed beside them): compare runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import TxmailInstance, machine_cpu, queue_empty, sent_lines  # noqa: E402

from txmail_testing import harness  # noqa: E402
from txmail_testing.harness import free_port, process_cpu, wait_for  # noqa: E402

MARKER = "round-trips-monitor-end"
SHOWN = ("milter", "policyd", "redis", "follower", "dispatcher", "machine")
PROCESSES = {
    "milter": ("milter",),
    "policyd": ("policyd",),
    "follower": ("maillog",),
    "dispatcher": ("webhooks", "run"),
}


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def send(instance: TxmailInstance, messages: int, sessions: int, size: int) -> None:
    before = sent_lines(instance.maillog)
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-l",
            str(size),
            "-m",
            str(messages),
            "-f",
            "app@bench.example",
            "-t",
            "rcpt@dest.test",
            "-M",
            "client.test",
            f"127.0.0.1:{instance.port}",
        ],
        check=True,
    )
    wait_for(lambda: queue_empty(instance.spool), 600, what="an empty queue")
    wait_for(lambda: sent_lines(instance.maillog) - before >= messages, 60, what="the sent lines")


def rep(instance: TxmailInstance, args: argparse.Namespace) -> dict[str, float]:
    client = instance.stack.redis()
    redis_pid = int(client.info("server")["process_id"])
    pids = {name: instance.stack.pids_of(*command) for name, command in PROCESSES.items()}
    pids["redis"] = [redis_pid]
    before_stats = commandstats(client)
    before_cpu = {name: process_cpu(p) for name, p in pids.items()}
    before_machine = machine_cpu()
    started = time.monotonic()
    send(instance, args.messages, args.sessions, args.size)
    # The follower turns each delivery into an event (XADD) a little after it: wait for all of
    # them, so that every rep counts the same messages' work.
    wait_for(
        lambda: commandstats(client).get("xadd", 0) - before_stats.get("xadd", 0) >= args.messages,
        120,
        what="the follower's events",
    )
    time.sleep(1)
    elapsed = time.monotonic() - started
    after_machine = machine_cpu()
    after_cpu = {name: process_cpu(p) for name, p in pids.items()}
    after_stats = commandstats(client)
    n = args.messages
    delta = {k: v - before_stats.get(k, 0) for k, v in after_stats.items()}
    delta.pop("info", None)  # the bench's own
    delta = {k: v for k, v in delta.items() if v > 0}
    figures: dict[str, float] = {
        name: (after_cpu[name] - before_cpu[name]) * 1000 / n for name in pids
    }
    figures["msg/s"] = n / elapsed  # until the queue is empty and every event is in
    figures["machine"] = (after_machine - before_machine) * 1000 / n
    figures["commands"] = sum(delta.values()) / n
    for name, count in sorted(delta.items(), key=lambda kv: -kv[1]):
        figures[f"cmd:{name}"] = count / n
    return figures


def monitor_one(instance: TxmailInstance) -> None:
    """The commands Redis runs for one message sent alone, from MAIL FROM to its events."""
    lines: list[str] = []
    client = instance.stack.redis()

    def watch() -> None:
        with client.monitor() as m:
            for entry in m.listen():
                command = entry["command"]
                if command == f"ECHO {MARKER}":  # the main thread's: every command before
                    return  # it has been read, however far behind this thread was
                if not command.startswith(("INFO", "PING")):
                    lines.append(
                        f"{entry['client_address']}:{entry['client_port']} {command[:160]}"
                    )

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(1)
    send(instance, 1, 1, 2048)
    time.sleep(2)  # the follower's event of the delivery
    client.echo(MARKER)
    thread.join(60)
    print(f"MONITOR, one message ({len(lines)} commands, background polling included):")
    for line in lines:
        print("   ", line)


def start(sink_port: int, python: str, size: int) -> TxmailInstance:
    """A txmail instance whose processes run `python` (another checkout's venv, or this
    one's), warmed up."""
    saved, here = harness.TXMAIL[0], Path.cwd()
    # Stack runs `python -m txmail ...` and txmail up runs its daemons the same way; -m puts
    # the working directory first on sys.path, so they must start in that python's checkout.
    harness.TXMAIL[0] = python
    os.chdir(Path(python).absolute().parents[2])
    try:
        instance = TxmailInstance(sink_port)
        instance.start(dkim=True)
    finally:
        harness.TXMAIL[0] = saved
        os.chdir(here)
    send(instance, 50, 5, size)  # warm: caches, scripts, connections
    return instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--monitor", action="store_true")
    parser.add_argument(
        "--against",
        metavar="PYTHON",
        help="also run an instance on another checkout (its venv's python), rep by rep "
        "in alternating order, and print this one's figures over that one's",
    )
    args = parser.parse_args()

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"])
    instances: dict[str, TxmailInstance] = {}
    try:
        instances["this"] = start(sink_port, sys.executable, args.size)
        if args.against:
            instances["other"] = start(sink_port, args.against, args.size)
        for name, instance in instances.items():
            if args.monitor:
                print(f"{name}:", end=" ")
                monitor_one(instance)
            print(
                f"{name} pids: "
                + " ".join(
                    f"{label}={','.join(map(str, instance.stack.pids_of(*command)))}"
                    for label, command in PROCESSES.items()
                ),
                flush=True,
            )
        reps: dict[str, list[dict[str, float]]] = {name: [] for name in instances}
        for number in range(1, args.reps + 1):
            order = list(instances) if number % 2 else list(reversed(instances))
            for name in order:
                figures = rep(instances[name], args)
                reps[name].append(figures)
                print(
                    f"rep {number} {name} ({load()}): {figures['msg/s']:.1f} msg/s, commands "
                    f"{figures['commands']:.1f}/msg; CPU ms/msg "
                    + ", ".join(f"{key} {figures[key]:.2f}" for key in SHOWN),
                    flush=True,
                )
        keys = sorted({k for r in reps["this"] for k in r}, key=lambda k: (k.startswith("cmd:"), k))
        print(f"medians of {args.reps} reps, per message ({load()}):")
        print(f"  {'':28} {'this':>8}" + (f" {'other':>8} {'ratio':>6}" if args.against else ""))
        for key in keys:
            ours = statistics.median(r.get(key, 0.0) for r in reps["this"])
            line = f"  {key:28} {ours:8.2f}"
            if args.against:
                theirs = statistics.median(r.get(key, 0.0) for r in reps["other"])
                line += f" {theirs:8.2f} {ours / theirs if theirs else float('nan'):6.2f}"
            print(line)
    finally:
        for instance in instances.values():
            instance.close()
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
