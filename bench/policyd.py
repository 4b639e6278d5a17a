"""bench/policyd: policy decisions per second and their latency, txmail policyd against postfwd.

Both servers get the same requests from the same client in the same run. The client keeps C
persistent connections, as Postfix's smtpd processes do, and on each plays SMTP sessions of a
few messages for one account: a RCPT request, then an END-OF-MESSAGE request with a new queue
id. txmail policyd checks every limit of the account and, at END-OF-MESSAGE, holds the message
(one atomic Lua call per request, its own Redis on loopback); Debian's postfwd2 runs the
equivalent rate-limit rule, `rate(sasl_username/1000000/60/...)` at END-OF-MESSAGE, counting
per account in its cache daemon. No limit is reached: the bench measures the cost of deciding.

  max/Nc  closed loop for --seconds over N connections (--max-connections, 8 and 32): each
          connection sends its next request as soon as the last answer is in. With 8 the
          client waits on the round trips; 32 is closer to a busy Postfix (up to 100 smtpd
          processes, each with its own policy connection). Decisions per second.
  LOAD/s  open loop over --connections (8): requests fall due at a fixed rate, spread over
          the connections. p50 and p99 of the round trip, from writing the request to reading
          the answer (what a Postfix smtpd waits). Also the p99 counted from when the request
          fell due, so a server that falls behind shows it; that one also holds the client's
          own lateness in waking up.

The closed loop's client is one asyncio process on uvloop; the open loop's is a thread per
connection, each sleeping until its next request is due with the OS's clock (an event loop's
timers tick in whole milliseconds, which showed as a millisecond of "latency" in the p99 from
due). The servers' CPU per decision is read from /proc (policyd: its processes and its Redis;
postfwd: every process of its session).

policyd is measured over TCP (as postfwd) and over its UNIX socket (as txmail runs it). With
--stack, the stack's own throughput with the policy service on and off is measured too, with
bench/throughput.py's instance (smtp-source into the trusted listener, to smtp-sink); "off"
empties smtpd_recipient_restrictions and smtpd_end_of_data_restrictions (the milter's count at
end of message stays in both). Each rep runs on and off back to back, in alternating order;
besides the ratio of the medians it prints the geometric mean of the per-rep ratios, which
cancels the machine's drift over a run better.

    .venv/bin/python bench/policyd.py [--connections 8] [--max-connections 8,32]
                                      [--seconds 5] [--loads 500,1000,2000] [--reps 3]
                                      [--workers N] [--stack] [--stack-messages 3000]

Needs: postfwd (apt-get install -y postfwd), redis-server; run as root (postfwd drops to
nobody).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from txmail.store import Keys
from txmail_testing.harness import RedisServer, free_port, process_cpu, wait_for

BENCH = Path(__file__).resolve().parent

ACCOUNTS = 100
SESSION_MESSAGES = 5
HIGH = 1_000_000  # every limit of the bench accounts: never reached


# -- the requests -------------------------------------------------------------------------


def request(
    stage: str, account: str, instance: str, queue_id: str, recipient: str, count: int
) -> bytes:
    """A request as Postfix 3.7 sends it (SMTPD_POLICY_README), TLS attributes included."""
    return (
        "request=smtpd_access_policy\n"
        f"protocol_state={stage}\nprotocol_name=ESMTP\nclient_address=127.0.0.1\n"
        "client_name=localhost\nclient_port=41234\nreverse_client_name=localhost\n"
        "server_address=127.0.0.1\nserver_port=587\nhelo_name=app.example\n"
        f"sender=app@{account}.example\nrecipient={recipient}\nrecipient_count={count}\n"
        f"queue_id={queue_id}\ninstance={instance}\nsize={5120 if count else 0}\n"
        "etrn_domain=\nstress=\nsasl_method=PLAIN\n"
        f"sasl_username={account}\nsasl_sender=\nccert_subject=\nccert_issuer=\n"
        "ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\n"
        "encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n"
        "policy_context=\ncompatibility_level=3.6\nmail_version=3.7.11\n\n"
    ).encode()


def stream(connection: int) -> Iterator[bytes]:
    """What one Postfix process would send: sessions of a few messages, one account each."""
    for session in itertools.count():
        account = f"bench{(connection * 7 + session) % ACCOUNTS}"
        for message in range(SESSION_MESSAGES):
            instance = f"{connection:x}.{session:x}.{message:x}"
            queue_id = f"4jB{connection:02d}{session:06d}{message}"
            recipient = f"user{message}@example.net"
            yield request("RCPT", account, instance, "", recipient, 0)
            yield request("END-OF-MESSAGE", account, instance, queue_id, recipient, 1)


# -- the client ---------------------------------------------------------------------------


@dataclass
class Result:
    answered: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # from when each request fell due
    round_trips: list[float] = field(default_factory=list)  # from writing it
    refusals: int = 0

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile(self, p: float, from_due: bool = False) -> float:
        ordered = sorted(self.latencies if from_due else self.round_trips)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def open_connection(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("unix:"):
        return await asyncio.open_unix_connection(address[5:])
    host, port = address.removeprefix("inet:").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def drive(address: str, connections: int, seconds: float) -> Result:
    """The closed loop: each connection sends its next request as soon as the last answer is
    in, for `seconds`."""
    result = Result()
    pairs = [await open_connection(address) for _ in range(connections)]
    start = time.monotonic()
    deadline = start + seconds

    async def one(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = stream(n + int(start * 1000) % 10_000 * connections)
        while (sent := time.monotonic()) < deadline:
            writer.write(next(requests))
            answer = await reader.readuntil(b"\n\n")
            answered = time.monotonic()
            result.latencies.append(answered - sent)
            result.round_trips.append(answered - sent)
            result.answered += 1
            if not answer.startswith((b"action=DUNNO", b"action=dunno", b"action=OK")):
                result.refusals += 1

    await asyncio.gather(*(one(n, r, w) for n, (r, w) in enumerate(pairs)))
    result.seconds = time.monotonic() - start
    for _, writer in pairs:
        writer.close()
    return result


def connect(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[5:])
        return sock
    host, port = address.removeprefix("inet:").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def drive_paced(address: str, connections: int, seconds: float, load: float) -> Result:
    """The open loop at `load` requests per second, one thread per connection: each waits for
    its next request's time with the OS's sleep, precise to microseconds, where an event loop's
    timers tick in whole milliseconds and the client's lateness would count as the server's."""
    result = Result()
    lock = threading.Lock()
    sockets = [connect(address) for _ in range(connections)]
    start = time.monotonic() + 0.05
    deadline = start + seconds

    def one(n: int, sock: socket.socket) -> None:
        requests = stream(n + int(start * 1000) % 10_000 * connections)
        latencies, round_trips, refusals, pending = [], [], 0, b""
        for k in itertools.count():
            due = start + (k * connections + n) / load
            if due >= deadline:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent = time.monotonic()
            sock.sendall(next(requests))
            while b"\n\n" not in pending:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError(f"{address} closed the connection")
                pending += data
            answer, _, pending = pending.partition(b"\n\n")
            answered = time.monotonic()
            latencies.append(answered - due)
            round_trips.append(answered - sent)
            if not answer.startswith((b"action=DUNNO", b"action=dunno", b"action=OK")):
                refusals += 1
        with lock:
            result.latencies += latencies
            result.round_trips += round_trips
            result.answered += len(latencies)
            result.refusals += refusals

    threads = [threading.Thread(target=one, args=(n, sock)) for n, sock in enumerate(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - start
    for sock in sockets:
        sock.close()
    return result


# -- the servers --------------------------------------------------------------------------


def session_members(leader: int) -> list[int]:
    """Processes of the session `leader` started (postfwd2 daemonises into its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == leader:
                    found.append(int(entry.name))
    return found


class Policyd:
    name = "policyd"

    def __init__(self, redis: RedisServer, workdir: Path, workers: int = 1) -> None:
        self.state = workdir / "policyd"
        self.state.mkdir()
        self.port = free_port()
        self.config = self.state / "txmail.toml"
        self.config.write_text(
            f'state_dir = "{self.state}"\n[redis]\nurl = "{redis.url}"\n'
            f'[policyd]\nlisten = "127.0.0.1:{self.port}"\n'
            f"workers = {workers}\n"
        )
        self.redis = redis
        self.socket = self.state / "run/policyd/policyd.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from txmail.accounts.records import Accounts

        accounts = Accounts(self.redis.client(), Keys())
        limits = {
            name: HIGH
            for name in (
                "messages_per_minute",
                "messages_per_hour",
                "messages_per_day",
                "recipients_per_minute",
                "recipients_per_hour",
                "recipients_per_day",
            )
        }
        for n in range(ACCOUNTS):
            if accounts.find(f"bench{n}") is None:
                accounts.add(
                    f"bench{n}",
                    [f"bench{n}.example"],
                    "bench-password-1",
                    settings={"warmup": False, **limits},
                )
        log = (self.state / "policyd.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "txmail", "--config", str(self.config), "policyd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(lambda: self.socket.exists() and probe(f"unix:{self.socket}"), 20, what="policyd")

    def pids(self) -> list[int]:
        """policyd's processes (it forks a worker per core) and its Redis."""
        if self.proc is None or self.redis.proc is None:
            return []
        return [*session_members(self.proc.pid), self.redis.proc.pid]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


class Postfwd:
    name = "postfwd"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "postfwd"
        self.dir.mkdir()
        self.dir.chmod(0o777)  # postfwd2 drops to nobody and writes its sockets here
        self.port = free_port()
        self.rules = self.dir / "postfwd.cf"
        self.rules.write_text(
            "id=RATE01; protocol_state==END-OF-MESSAGE; "
            f"action=rate(sasl_username/{HIGH}/60/450 4.7.1 rate limit "
            "reached)\n"
        )
        self.rules.chmod(0o644)
        self.pidfile = self.dir / "postfwd.pid"
        self.leader = 0

    def start(self) -> None:
        # Its own cache socket (the default path is shared by every postfwd2 on the machine),
        # written unix::PATH since postfwd2 splits the value at every colon. Its log goes to
        # syslog, which this machine does not run: postfwd is spared the cost of logging.
        # (-L would send the log lines into the policy connection itself.)
        with (self.dir / "postfwd.log").open("wb") as log:
            subprocess.run(
                [
                    "postfwd2",
                    "--file",
                    str(self.rules),
                    "--server_socket",
                    f"tcp:127.0.0.1:{self.port}",
                    "--cache_socket",
                    f"unix::{self.dir / 'cache.sock'}",
                    "--pidfile",
                    str(self.pidfile),
                    "--nodns",
                    "-u",
                    "nobody",
                    "-g",
                    "nogroup",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=30,
            )
        wait_for(
            lambda: self.pidfile.exists() and probe(f"inet:127.0.0.1:{self.port}"),
            30,
            what="postfwd2",
        )
        self.leader = int(self.pidfile.read_text().strip())

    def pids(self) -> list[int]:
        return session_members(self.leader)

    def stop(self) -> None:
        for _ in range(3):
            members = session_members(self.leader) if self.leader else []
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(1)
        for pid in session_members(self.leader):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def probe(address: str) -> bool:
    async def ask() -> bytes:
        reader, writer = await open_connection(address)
        writer.write(request("RCPT", "bench0", "probe", "", "probe@example.net", 0))
        try:
            return await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        finally:
            writer.close()

    try:
        return asyncio.run(ask()).startswith(b"action=")
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return False


# -- the run ------------------------------------------------------------------------------


def measure(
    label: str,
    address: str,
    pids: list[int],
    args: argparse.Namespace,
    load: float | None,
    connections: int,
) -> Result:
    before = process_cpu(pids)
    if load is None:
        result = uvloop.run(drive(address, connections, args.seconds))
    else:
        result = drive_paced(address, connections, args.seconds, load)
    cpu = process_cpu(pids) - before
    per = cpu / result.answered * 1e6 if result.answered else 0.0
    what = f"max/{connections}c" if load is None else f"{load:.0f}/s"
    print(
        f"  {label:14} {what:>8}  {result.rate:8.0f} decisions/s  p50 "
        f"{result.percentile(50):7.2f} ms  p99 {result.percentile(99):8.2f} ms  (from due "
        f"{result.percentile(99, from_due=True):7.2f} ms)  server CPU {per:5.0f} us/decision"
        f"  refused {result.refusals}",
        flush=True,
    )
    return result


def decisions(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-policyd-"))
    workdir.chmod(0o755)
    redis = RedisServer().start()
    policyd = Policyd(redis, workdir, args.workers)
    postfwd = Postfwd(workdir)
    loads = [float(x) for x in args.loads.split(",") if x]
    maxima = [int(x) for x in args.max_connections.split(",") if x]
    results: dict[tuple[str, str], list[Result]] = {}
    try:
        policyd.start()
        postfwd.start()
        targets = [
            ("postfwd (tcp)", f"inet:127.0.0.1:{postfwd.port}", postfwd.pids),
            ("policyd (tcp)", f"inet:127.0.0.1:{policyd.port}", policyd.pids),
            ("policyd (unix)", f"unix:{policyd.socket}", policyd.pids),
        ]
        print(
            f"policy decisions: {args.connections} connections at fixed loads, "
            f"{args.max_connections} for the maxima, {args.seconds:.0f} s a "
            f"measurement, {args.reps} repetitions, {os.cpu_count()} cores; requests: "
            f"RCPT + END-OF-MESSAGE per message, {ACCOUNTS} accounts",
            flush=True,
        )
        for _, address, _ in targets:  # warm up: connections, caches, scripts
            uvloop.run(drive(address, args.connections, 1.0))
        for rep in range(args.reps):
            print(f"rep {rep + 1}", flush=True)
            order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
            runs = [(None, c) for c in maxima] + [(load, args.connections) for load in loads]
            for load, connections in runs:
                for label, address, pids in order:
                    key = (label, f"max/{connections}c" if load is None else f"{load:.0f}")
                    results.setdefault(key, []).append(
                        measure(label, address, pids(), args, load, connections)
                    )
    finally:
        postfwd.stop()
        policyd.stop()
        redis.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary(results, maxima)


def summary(results: dict[tuple[str, str], list[Result]], maxima: list[int]) -> None:
    print("\nmedians over the repetitions")
    print(
        f"  {'server':14} {'load':>8}  {'decisions/s':>11}  {'p50 ms':>7}  {'p99 ms':>8}  "
        f"{'p99 from due':>12}"
    )
    for (label, load), runs in results.items():
        print(
            f"  {label:14} {load:>8}  {statistics.median(r.rate for r in runs):11.0f}  "
            f"{statistics.median(r.percentile(50) for r in runs):7.2f}  "
            f"{statistics.median(r.percentile(99) for r in runs):8.2f}  "
            f"{statistics.median(r.percentile(99, from_due=True) for r in runs):12.2f}"
        )
    for connections in maxima:
        key = f"max/{connections}c"
        postfwd_max = statistics.median(r.rate for r in results[("postfwd (tcp)", key)])
        for label in ("policyd (tcp)", "policyd (unix)"):
            ours = statistics.median(r.rate for r in results[(label, key)])
            print(
                f"ratio   {label} / postfwd (tcp), max decisions/s with {connections} "
                f"connections: {ours / postfwd_max:.2f}"
            )


# -- the stack with the policy service on and off -----------------------------------------


def stack_throughput(args: argparse.Namespace) -> None:
    import throughput  # bench/throughput.py: a script's own folder is first on sys.path

    tp_args = argparse.Namespace(messages=args.stack_messages, sessions=10, size=5120)
    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"])
    instance = throughput.TxmailInstance(sink_port)
    etc = instance.stack.state / "postfix/etc"
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[list[float]]] = {"on": [], "off": []}  # ms a message: all, policyd, Redis
    try:
        instance.start(dkim=True)  # the whole stack as it runs, DKIM included
        instance.stack.txmail(
            "accounts",
            "set",
            "bench",
            "warmup=false",
            *[
                f"{n}={HIGH}"
                for n in (
                    "messages_per_minute",
                    "messages_per_hour",
                    "messages_per_day",
                    "recipients_per_minute",
                    "recipients_per_hour",
                    "recipients_per_day",
                )
            ],
        )
        saved = {
            name: subprocess.run(
                ["postconf", "-c", str(etc), "-h", name], capture_output=True, text=True, check=True
            ).stdout.strip()
            for name in ("smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions")
        }
        print(
            f"\nstack throughput: {tp_args.messages} messages x {tp_args.size} bytes, "
            f"{tp_args.sessions} sessions, policy service on and off, {args.reps} reps",
            flush=True,
        )
        time.sleep(2)  # let policyd see the new limits
        # A first run that is not counted: the first one after start-up was the slowest by far
        # (Postfix starting its processes, Python code run the first time), and it was always
        # one with the policy service on.
        throughput.run_once(instance, argparse.Namespace(messages=500, sessions=10, size=5120))
        policyd = instance.stack.pids_of("policyd")
        redis_pid = int(instance.stack.redis().info("server")["process_id"])
        for rep in range(args.reps):
            for state in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                values = saved if state == "on" else dict.fromkeys(saved, "")
                subprocess.run(
                    ["postconf", "-c", str(etc), "-e", *[f"{k} = {v}" for k, v in values.items()]],
                    check=True,
                )
                subprocess.run(
                    ["postfix", "-c", str(etc), "reload"], check=True, capture_output=True
                )
                time.sleep(1)
                before = process_cpu(policyd), process_cpu([redis_pid])
                rate = throughput.run_once(instance, tp_args)
                ms = [instance.cpu_ms[-1][0]] + [
                    (process_cpu(pids) - start) * 1000 / tp_args.messages
                    for pids, start in zip((policyd, [redis_pid]), before, strict=True)
                ]
                rates[state].append(rate)
                cpu[state].append(ms)
                print(
                    f"  rep {rep + 1} policy {state:3} {rate:7.1f} msg/s, CPU a message "
                    f"{ms[0]:5.2f} ms (policyd {ms[1]:4.2f}, Redis {ms[2]:4.2f})",
                    flush=True,
                )
        # policyd's own count of its permits (/metrics), written once a second
        time.sleep(2)
        decided = int(instance.stack.redis().hget(Keys().policy_stats, "dunno") or 0)
    finally:
        instance.close()
        sink.terminate()
        sink.wait(10)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    pairs = [a / b for a, b in zip(rates["on"], rates["off"], strict=True)]
    per_rep = " ".join(f"{ratio:.2f}" for ratio in pairs)
    on_cpu, off_cpu = (
        [statistics.median(ms[i] for ms in cpu[state]) for i in range(3)] for state in ("on", "off")
    )
    print(
        f"policy on   median {on:7.1f} msg/s, CPU a message {on_cpu[0]:5.2f} ms "
        f"(policyd {on_cpu[1]:4.2f}, Redis {on_cpu[2]:4.2f}; {decided} permits counted)"
    )
    print(
        f"policy off  median {off:7.1f} msg/s, CPU a message {off_cpu[0]:5.2f} ms "
        f"(Redis {off_cpu[2]:4.2f})"
    )
    print(
        f"ratio       on/off {on / off:.2f} (per rep: {per_rep}; geometric mean "
        f"{statistics.geometric_mean(pairs):.2f}); CPU a message off/on "
        f"{off_cpu[0] / on_cpu[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections", type=int, default=8, help="connections of the fixed-load runs"
    )
    parser.add_argument(
        "--max-connections", default="8,32", help="connection counts of the closed-loop (max) runs"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--loads", default="500,1000,2000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--stack",
        action="store_true",
        help="also the stack's throughput with the policy service on and off",
    )
    parser.add_argument("--stack-messages", type=int, default=3000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="policyd.workers (default 1, as txmail's; 0: one per core)",
    )
    parser.add_argument(
        "--no-decisions", action="store_true", help="skip the decision benchmark (with --stack)"
    )
    args = parser.parse_args()
    if shutil.which("postfwd2") is None and not args.no_decisions:
        raise SystemExit("postfwd2 is missing: apt-get install -y postfwd")
    if not args.no_decisions:
        decisions(args)
    if args.stack:
        stack_throughput(args)


if __name__ == "__main__":
    main()
