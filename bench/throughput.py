"""bench/throughput: messages per second through txmail against a bare Postfix, in one run.

The instances are rendered from the same templates and settings; the bare one has no milter
and no policy service. Postfix's own smtp-source injects N messages of S bytes over C sessions
into each instance's trusted listener (mail from 127.0.0.0/8, no login, sent as account
`bench`), all relay to Postfix's smtp-sink, and the clock runs until the queue is empty; for
txmail, until its maillog follower has also recorded all N deliveries and its webhooks
dispatcher has finished with every event (read and acknowledged), so none of its work is left
to run in the next instance's window; its CPU is read then too. Every run checks that the
maillog has N `status=sent` lines. The repetitions alternate between the instances, in an
order that rotates each repetition, so that a busy moment on the machine hits them alike.

With --baselines, two more bare instances each get one of bench/milters.py's reference
milters: `passthrough` (the milter protocol and pymilter alone) and `dkim` (a milter that only
signs, as txmail signs). They show what the protocol and the signing cost by themselves, so
what is left between them and txmail is txmail's own work.

With --peer, one more instance: the stack a mail admin builds by hand instead of txmail. The
same bare Postfix with Debian's OpenDKIM as its milter (RSA-2048, relaxed/relaxed, the headers
txmail signs, each once more than it occurs) and Debian's postfwd2 as its policy service at
RCPT (smtpd_recipient_restrictions, one per-sender rate-limit rule set far above the load), both
daemons started here from their own configuration files in their own folder and stopped by
PID. Before the timed runs one probe message goes through the peer to a sink of its own and its
DKIM-Signature is verified against the peer's public key; after each of them postfwd2's rate
counter for the sender must have grown by the messages sent. Otherwise the comparison would not
be honest, and the bench stops.

    .venv/bin/python bench/throughput.py [--messages 5000] [--sessions 10] [--size 5120]
                                         [--reps 3] [--no-dkim] [--baselines] [--peer]

Prints one line per run and a summary with the medians and their ratios to bare Postfix (and
txmail's to the peer), each milter's peak resident memory, the CPU a message per process group
of every instance (Postfix's daemons together, the milter, the policy service, Redis, the
maillog follower, the webhooks dispatcher, the tracker, the rest), and the Redis commands and
bytes a message through txmail (INFO commandstats and INFO stats deltas over its runs). The CPU
of smtp-source and smtp-sink, which every instance shares, is in no group; the machine's total
also holds whatever else the machine runs.

Needs: postfix, redis-server; for --peer opendkim, opendkim-tools and postfwd (Makefile's
DEB_PACKAGES). Runs as root.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import dkim

from txmail import config as config_mod
from txmail import store
from txmail.bounce_pipe.server import check_start
from txmail.events import WEBHOOK_GROUP
from txmail.milter.dkim import SIGNED_HEADERS
from txmail.stack import render, supervisor
from txmail_testing.harness import Sink, Stack, free_port, port_free, process_cpu, wait_for

BENCH = Path(__file__).resolve().parent

QUEUES = ("incoming", "active", "deferred", "maildrop", "hold")


def trusted_port() -> int:
    while True:
        port = free_port()
        if port_free(port):
            return port


def configure_trusted(config_file: Path, port: int) -> config_mod.Settings:
    settings = config_mod.load(config_file)
    settings = dataclasses.replace(
        settings,
        trusted=config_mod.TrustedSettings(port=port, networks=["127.0.0.0/8"], account="bench"),
    )
    config_file.write_text(config_mod.to_toml(settings))
    return settings


# -- CPU per process group -------------------------------------------------------------------

GROUPS = ("postfix", "milter", "policy", "redis", "follower", "dispatcher", "tracker", "others")
# txmail's component commands (`txmail --config FILE COMMAND ...`) and their groups.
COMPONENT_GROUPS = {
    "milter": "milter",
    "policyd": "policy",
    "maillog": "follower",
    "webhooks": "dispatcher",
    "tracker": "tracker",
}


@dataclasses.dataclass(frozen=True)
class Proc:
    ppid: int
    argv: tuple[str, ...]
    ticks: int  # its own CPU and that of the children it has reaped, in clock ticks


def read_procs() -> dict[int, Proc]:
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            procs[int(entry.name)] = Proc(
                ppid=int(fields[1]),
                argv=tuple(a for a in argv if a),
                ticks=sum(int(v) for v in fields[11:15]),  # utime stime cutime cstime
            )
    return procs


def group_ticks(procs: Mapping[int, Proc], roots: Mapping[int, str]) -> dict[str, int]:
    """Clock ticks per group: each process counts to the group of the nearest of `roots` it
    descends from (itself included); processes under no root count nowhere. A process that
    exited was reaped by its parent, whose children's time then holds it, so the sum over a
    group moves only by the CPU its processes used (a short-lived smtpd stays in Postfix's)."""
    totals: dict[str, int] = {}
    for pid, proc in procs.items():
        ancestor, seen = pid, 0
        while ancestor not in roots and ancestor in procs and seen < 64:
            ancestor, seen = procs[ancestor].ppid, seen + 1
        if ancestor in roots:
            group = roots[ancestor]
            totals[group] = totals.get(group, 0) + proc.ticks
    return totals


def component_group(argv: Iterable[str]) -> str:
    """The group of one process `txmail up` started, by its command line."""
    words = list(argv)
    # redis-server rewrites its command line: "redis-server unixsocket:PATH" in one word.
    if words and Path(words[0].split()[0]).name == "redis-server":
        return "redis"
    if "--config" in words:
        rest = words[words.index("--config") + 2 :]
        if rest:
            return COMPONENT_GROUPS.get(rest[0], "others")
    return "others"


def query_postfwd_cache(path: Path, command: str = "CMD=DC;") -> list[str]:
    """postfwd2's cache daemon's answer to `command`, one line a list item."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(str(path))
        client.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip().split("///:::")


def rate_count(dump: list[str], sender: str) -> int:
    """The @count of `sender`'s rate entry in a postfwd2 cache dump (-1: none)."""
    for line in dump:
        found = re.search(r"%sender=(\S+) -> %\S+ -> @count\s+-> '(\d+)'", line)
        if found and found.group(1) == sender:
            return int(found.group(2))
    return -1


def master_pid(spool: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int((spool / "pid/master.pid").read_text().split()[0])
    return 0


def session_members(leader: int) -> list[int]:
    """Processes in the session `leader` leads (postfwd2 daemonises into its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == leader:
                    found.append(int(entry.name))
    return found


def cpu_seconds(roots: Mapping[int, str]) -> dict[str, float]:
    ticks = group_ticks(read_procs(), roots)
    return {group: n / os.sysconf("SC_CLK_TCK") for group, n in ticks.items()}


# -- the instances ----------------------------------------------------------------------------


class BareInstance:
    """The same rendered Postfix, started alone, with smtpd_milters emptied, or with one of the
    reference milters of bench/milters.py in their place (`milter`: passthrough or dkim)."""

    def __init__(self, sink_port: int, milter: str = "", name: str = "") -> None:
        self.milter = milter
        self.milter_proc: subprocess.Popen[bytes] | None = None
        self.cpu_ms: list[list[float]] = []  # per run: machine, milter (run_once)
        self.groups_ms: list[dict[str, float]] = []  # per run: CPU a message per group
        self.stack = Stack(relay_port=sink_port, name=f"bench-{name or milter or 'bare'}")
        self.port = trusted_port()
        self.settings = configure_trusted(self.stack.config, self.port)
        supervisor.prepare(self.settings, self.stack.config, (check_start,))
        self.etc = render.postfix_config_dir(self.settings)
        self.milter_socket = self.stack.state / "run/milter/reference.sock"
        # Same settings, but nothing of txmail's in the path: no milter, no policy service, no
        # socketmap (which needs a running txmail to answer).
        milters = f"unix:{self.milter_socket}" if milter else ""
        subprocess.run(
            [
                "postconf",
                "-c",
                str(self.etc),
                "-e",
                f"smtpd_milters = {milters}",
                "smtpd_recipient_restrictions =",
                "smtpd_end_of_data_restrictions =",
                f"relay_domains = {self.settings.bounce_domain}",
                f"transport_maps = texthash:{self.etc}/transport",
            ],
            check=True,
        )
        self.spool = self.stack.state / "postfix/spool"
        self.maillog = self.settings.path(self.settings.postfix.maillog)

    def start(self) -> None:
        if self.milter:
            command = [
                sys.executable,
                str(BENCH / "milters.py"),
                self.milter,
                str(self.milter_socket),
            ]
            if self.milter == "dkim":
                command += [
                    str(self.stack.state / "reference-dkim/key.pem"),
                    "bench.example",
                    "bench",
                ]
            self.milter_proc = subprocess.Popen(command, start_new_session=True)
            wait_for(self.milter_socket.exists, 20, what=f"{self.milter} milter")
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True)
        wait_for(lambda: not port_free(self.port), 20, what="bare postfix")

    def milter_pids(self) -> list[int]:
        return [self.milter_proc.pid] if self.milter_proc else []

    def group_roots(self) -> dict[int, str]:
        roots = {pid: "milter" for pid in self.milter_pids()}
        roots[master_pid(self.spool)] = "postfix"
        return roots

    def close(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, capture_output=True)
        if self.milter_proc is not None:
            self.milter_proc.terminate()
            self.milter_proc.wait(10)
        self.stack.close()


class PeerInstance(BareInstance):
    """What a mail admin builds instead of txmail: the same bare Postfix, OpenDKIM as its
    milter and postfwd2 as its policy service, each a daemon with its own configuration file.

    OpenDKIM signs mail From the sending domain (bench.example, selector `peer`) with an
    RSA-2048 key, relaxed/relaxed, over txmail's header list, each header once more than it
    occurs (OversignHeaders), as txmail signs. postfwd2 has one rule: a per-sender rate limit,
    asked at RCPT, set far above what the bench sends so every message passes."""

    DOMAIN, SELECTOR = "bench.example", "peer"
    RATE = 10_000_000  # messages per sender per hour

    def __init__(self, sink_port: int, probe_port: int) -> None:
        super().__init__(sink_port, name="peer")
        self.dir = self.stack.state / "peer"
        self.dir.mkdir()
        self.dir.chmod(0o755)
        self.opendkim_proc: subprocess.Popen[bytes] | None = None
        self.postfwd_leader = 0
        # OpenDKIM: its key, its configuration, a socket folder Postfix's group can enter.
        keys = self.dir / "keys"
        keys.mkdir()
        subprocess.run(
            ["opendkim-genkey", "-b", "2048", "-d", self.DOMAIN, "-s", self.SELECTOR],
            cwd=keys,
            check=True,
        )
        self.key = keys / f"{self.SELECTOR}.private"
        self.dns_record = (keys / f"{self.SELECTOR}.txt").read_text()
        shutil.chown(keys, "opendkim", "opendkim")
        shutil.chown(self.key, "opendkim", "opendkim")
        self.key.chmod(0o600)
        run = self.dir / "opendkim"
        run.mkdir()
        shutil.chown(run, "opendkim", "postfix")
        run.chmod(0o750)
        self.milter_socket = run / "opendkim.sock"
        self.opendkim_conf = self.dir / "opendkim.conf"
        headers = ",".join(SIGNED_HEADERS)
        self.opendkim_conf.write_text(
            "# The peer's signer, as a mail admin writes it (bench/throughput.py --peer).\n"
            "Syslog no\n"
            "Mode s\n"
            f"Domain {self.DOMAIN}\n"
            f"Selector {self.SELECTOR}\n"
            f"KeyFile {self.key}\n"
            # The key is under /tmp, which other users can write: OpenDKIM refuses such a
            # path unless told (a mail admin's key lives in /etc/opendkim/keys).
            "RequireSafeKeys false\n"
            "Canonicalization relaxed/relaxed\n"
            f"SignHeaders {headers}\n"
            f"OversignHeaders {headers}\n"
            "InternalHosts 127.0.0.1\n"
            "UserID opendkim:postfix\n"
            "UMask 007\n"
            f"Socket local:{self.milter_socket}\n"
            f"PidFile {run / 'opendkim.pid'}\n"
        )
        # postfwd2: one rule file, its own sockets and pid file.
        self.postfwd_dir = self.dir / "postfwd"
        self.postfwd_dir.mkdir()
        self.postfwd_dir.chmod(0o777)  # postfwd2 drops to nobody and writes its sockets here
        self.postfwd_port = free_port()
        self.rules = self.postfwd_dir / "postfwd.cf"
        self.rules.write_text(
            "# One per-sender rate limit (bench/throughput.py --peer).\n"
            f"id=RATE01; action=rate(sender/{self.RATE}/3600/450 4.7.1 sender rate limit "
            "reached, send more slowly)\n"
        )
        self.rules.chmod(0o644)
        self.cache_socket = self.postfwd_dir / "cache.sock"
        self.postfwd_pidfile = self.postfwd_dir / "postfwd.pid"
        # Postfix: the milter, the policy service at RCPT, and a route for the probe alone.
        transport = self.etc / "transport"
        transport.write_text(transport.read_text() + f"probe.test smtp:[127.0.0.1]:{probe_port}\n")
        subprocess.run(
            [
                "postconf",
                "-c",
                str(self.etc),
                "-e",
                f"smtpd_milters = unix:{self.milter_socket}",
                "smtpd_recipient_restrictions = "
                f"check_policy_service inet:127.0.0.1:{self.postfwd_port}",
            ],
            check=True,
        )

    def start(self) -> None:
        log = (self.dir / "opendkim.out").open("wb")
        self.opendkim_proc = subprocess.Popen(
            ["opendkim", "-f", "-x", str(self.opendkim_conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self.milter_socket.exists, 20, what="opendkim's socket")
        # Its log goes to syslog, which this machine may not run. (-L would send the log lines
        # into the policy connection itself.) The cache socket is its own: the default path is
        # shared by every postfwd2 on the machine; unix::PATH since postfwd2 splits at colons.
        with (self.postfwd_dir / "postfwd.out").open("wb") as out:
            subprocess.run(
                [
                    "postfwd2",
                    "--file",
                    str(self.rules),
                    "--server_socket",
                    f"tcp:127.0.0.1:{self.postfwd_port}",
                    "--cache_socket",
                    f"unix::{self.cache_socket}",
                    "--pidfile",
                    str(self.postfwd_pidfile),
                    "--nodns",
                    "-u",
                    "nobody",
                    "-g",
                    "nogroup",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=30,
            )
        wait_for(
            lambda: self.postfwd_pidfile.exists() and not port_free(self.postfwd_port),
            30,
            what="postfwd2",
        )
        self.postfwd_leader = int(self.postfwd_pidfile.read_text().strip())
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True)
        wait_for(lambda: not port_free(self.port), 20, what="the peer's postfix")

    def milter_pids(self) -> list[int]:
        return [self.opendkim_proc.pid] if self.opendkim_proc else []

    def group_roots(self) -> dict[int, str]:
        roots = super().group_roots()
        roots.update({pid: "policy" for pid in session_members(self.postfwd_leader)})
        return roots

    def probe(self, sink: Sink) -> str:
        """Sends one message through the peer to `sink` and verifies its DKIM signature with
        the peer's public key; returns the DKIM-Signature header. Raises SystemExit when the
        peer does not sign."""
        message = EmailMessage()
        message["From"] = f"App <app@{self.DOMAIN}>"
        message["To"] = "check@probe.test"
        message["Subject"] = "peer probe"
        message["Date"] = formatdate()
        message["Message-ID"] = make_msgid(domain=self.DOMAIN)
        message.set_content("Does the peer sign?\n")
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.send_message(message, f"app@{self.DOMAIN}", ["check@probe.test"])
        received = sink.wait(1, timeout=60)[-1]
        data = received.data
        record = "".join(re.findall(r'"([^"]*)"', self.dns_record)).encode()

        def dns(name: bytes, timeout: int = 5) -> bytes:
            return record if name.startswith(f"{self.SELECTOR}._domainkey.".encode()) else b""

        signature = re.search(rb"^DKIM-Signature:.*?(?=^\S)", data, re.M | re.S)
        if signature is None or not dkim.verify(data, dnsfunc=dns):
            raise SystemExit("the peer's OpenDKIM did not sign the probe message (or badly)")
        return signature.group(0).decode().strip()

    def rate_count(self) -> int:
        """The count postfwd2's rate rule keeps for the bench's sender (-1: none): Postfix asked
        postfwd once for each message the count grew by. Read from its cache daemon's socket
        (the command `postfwd2 --dumpcache` sends, which refuses a cache socket named on its
        command line under Perl's taint checks)."""
        return rate_count(query_postfwd_cache(self.cache_socket), f"app@{self.DOMAIN}")

    def close(self) -> None:
        super().close()
        if self.opendkim_proc is not None:
            self.opendkim_proc.terminate()
            self.opendkim_proc.wait(10)
        for _ in range(3):
            members = session_members(self.postfwd_leader) if self.postfwd_leader else []
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(1)
        for pid in session_members(self.postfwd_leader):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class TxmailInstance:
    def __init__(self, sink_port: int, appendfsync: str = "always") -> None:
        self.stack = Stack(relay_port=sink_port, name="bench-txmail")
        self.stack.configure("redis", appendfsync=appendfsync)
        self.cpu_ms: list[list[float]] = []  # per run: machine, milter (run_once)
        self.groups_ms: list[dict[str, float]] = []  # per run: CPU a message per group
        self.redis_ms: list[dict[str, float]] = []  # per run: Redis commands, bytes a message
        self.port = trusted_port()
        self.settings = configure_trusted(self.stack.config, self.port)
        self.spool = self.stack.state / "postfix/spool"
        self.maillog = self.settings.path(self.settings.postfix.maillog)

    def start(self, dkim: bool) -> None:
        self.stack.start()
        # Unlimited, no warm-up: the benchmark measures the work per message, not the quotas.
        limits = [
            f"{k}=0"
            for k in (
                "messages_per_minute",
                "messages_per_hour",
                "messages_per_day",
                "recipients_per_minute",
                "recipients_per_hour",
                "recipients_per_day",
                "bytes_per_day",
            )
        ]
        self.stack.add_account("bench", "bench.example", settings=[*limits, "warmup=false"])
        if dkim:
            self.stack.txmail(
                "domains",
                "add",
                "bench.example",
                "--account",
                "bench",
                "--force-sign",
                "--force-return-path",
            )
            time.sleep(3)  # the signer caches "no key" for 2 s

    def milter_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if str(self.stack.config).encode() in cmd and b"milter" in cmd:
                    pids.append(int(entry.name))
        return pids

    def group_roots(self) -> dict[int, str]:
        """`txmail up` (others) and each process it started, by its command line; Postfix's
        master daemonises away from it and is found by its pid file."""
        procs = read_procs()
        supervisor_pid = self.stack.proc.pid if self.stack.proc else 0
        roots = {
            pid: component_group(proc.argv)
            for pid, proc in procs.items()
            if proc.ppid == supervisor_pid
        }
        roots[supervisor_pid] = "others"
        roots[master_pid(self.spool)] = "postfix"
        return roots

    def redis_counts(self) -> dict[str, int]:
        """Redis's command counts by command, and its network bytes in and out, so far."""
        client = store.connect(self.settings)
        counts = {"bytes in": 0, "bytes out": 0}
        for name, stats in client.info("commandstats").items():
            counts[name.removeprefix("cmdstat_")] = int(stats["calls"])
        info = client.info("stats")
        counts["bytes in"] = int(info["total_net_input_bytes"])
        counts["bytes out"] = int(info["total_net_output_bytes"])
        client.close()
        return counts

    def txmail_work(self) -> tuple[int, int]:
        """(delivery events the follower recorded for the bench account so far, events of its
        stream the webhooks dispatcher has not finished: not yet read, or read and not
        acknowledged)."""
        client = store.connect(self.settings)
        keys = store.Keys(self.settings.redis.prefix)
        try:
            delivered = int(client.hget(keys.event_totals("bench"), "delivery") or 0)
            unfinished = 0
            stream = keys.events("bench")
            if client.exists(stream):
                for group in client.xinfo_groups(stream):
                    name = group["name"]
                    if (name.decode() if isinstance(name, bytes) else name) != WEBHOOK_GROUP:
                        continue
                    lag = group.get("lag")
                    unfinished = int(group["pending"]) + (
                        int(lag) if lag is not None else int(client.xlen(stream))
                    )
        finally:
            client.close()
        return delivered, unfinished

    def close(self) -> None:
        self.stack.close()


def queue_empty(spool: Path) -> bool:
    for name in QUEUES:
        for _root, _dirs, files in os.walk(spool / name):
            if files:
                return False
    return True


def sent_lines(maillog: Path) -> int:
    if not maillog.exists():
        return 0
    return len(re.findall(rb"status=sent", maillog.read_bytes()))


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> float:
    """CPU seconds all cores have spent busy so far (everything in /proc/stat but idle and
    iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def per_message(
    after: Mapping[str, float], before: Mapping[str, float], messages: int, scale: float = 1.0
) -> dict[str, float]:
    """(after - before) * scale / messages for every key of either."""
    return {
        key: (after.get(key, 0) - before.get(key, 0)) * scale / messages
        for key in {*after, *before}
    }


def run_once(instance: BareInstance | TxmailInstance, args: argparse.Namespace) -> float:
    """Messages per second; also adds the CPU per message (the whole machine's, the milter's)
    to instance.cpu_ms, per process group to instance.groups_ms, and for txmail Redis's
    commands and bytes a message to instance.redis_ms."""
    before = sent_lines(instance.maillog)
    peak = 0
    milter = instance.milter_pids()
    redis_before = instance.redis_counts() if isinstance(instance, TxmailInstance) else {}
    asked_before = instance.rate_count() if isinstance(instance, PeerInstance) else 0
    groups_before = cpu_seconds(instance.group_roots())
    cpu_before = (machine_cpu(), process_cpu(milter))
    delivered_before = instance.txmail_work()[0] if isinstance(instance, TxmailInstance) else 0
    start = time.monotonic()
    source = subprocess.Popen(
        [
            "smtp-source",
            "-s",
            str(args.sessions),
            "-l",
            str(args.size),
            "-m",
            str(args.messages),
            "-f",
            "app@bench.example",
            "-t",
            "rcpt@dest.test",
            "-M",
            "client.test",
            f"127.0.0.1:{instance.port}",
        ]
    )
    while source.poll() is None:
        peak = max([peak] + [rss_kb(p) for p in milter])
        time.sleep(0.1)
    if source.returncode != 0:
        raise SystemExit(f"smtp-source failed with status {source.returncode}")
    while not queue_empty(instance.spool):
        peak = max([peak] + [rss_kb(p) for p in milter])
        time.sleep(0.05)
    if isinstance(instance, TxmailInstance):
        # txmail's work ends when the follower has recorded every delivery and the webhooks
        # dispatcher has finished with every event, not when Postfix's queue is empty: what
        # is left would run in the next instance's window and be charged to it.
        wanted = delivered_before + args.messages
        deadline = time.monotonic() + 300
        while True:
            delivered, unfinished = instance.txmail_work()
            if delivered >= wanted and unfinished == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"txmail recorded {delivered - delivered_before} of {args.messages} "
                    f"deliveries, and {unfinished} events wait for the dispatcher, 300 s "
                    "after Postfix's queue emptied"
                )
            peak = max([peak] + [rss_kb(p) for p in milter])
            time.sleep(0.05)
    elapsed = time.monotonic() - start
    cpu_ms = [
        (after - earlier) * 1000 / args.messages
        for after, earlier in zip((machine_cpu(), process_cpu(milter)), cpu_before, strict=True)
    ]
    instance.cpu_ms.append(cpu_ms)
    instance.groups_ms.append(
        per_message(cpu_seconds(instance.group_roots()), groups_before, args.messages, 1000)
    )
    if isinstance(instance, TxmailInstance):
        instance.redis_ms.append(per_message(instance.redis_counts(), redis_before, args.messages))
    if isinstance(instance, PeerInstance):
        asked = instance.rate_count() - asked_before
        if asked != args.messages:
            raise SystemExit(f"postfwd counted {asked} of {args.messages} messages: not asked")
    deadline = time.monotonic() + 10
    while sent_lines(instance.maillog) - before < args.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    sent = sent_lines(instance.maillog) - before
    if sent != args.messages:
        raise SystemExit(f"expected {args.messages} status=sent lines, found {sent}")
    if milter:
        instance.peak_rss_kb = max(getattr(instance, "peak_rss_kb", 0), peak)  # type: ignore[union-attr]
    return args.messages / elapsed


def group_table(columns: Mapping[str, list[dict[str, float]]]) -> str:
    """CPU a message per process group (rows) and instance (columns), the median over the
    runs, in ms; a group an instance does not have is blank."""
    names = list(columns)
    lines = [
        "| CPU a message, ms (median) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for group in (*GROUPS, "all groups"):
        cells = []
        for name in names:
            runs = columns[name]
            values = [
                sum(run.values()) if group == "all groups" else run.get(group, 0.0) for run in runs
            ]
            present = group == "all groups" or any(group in run for run in runs)
            cells.append(f"{statistics.median(values):.2f}" if runs and present else "")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def redis_table(runs: list[dict[str, float]], top: int = 12) -> str:
    """Redis's commands a message by command (the median over the runs), its network bytes a
    message, and the total."""
    keys = {key for run in runs for key in run}
    median = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in keys}
    commands = sorted(
        ((k, v) for k, v in median.items() if not k.startswith("bytes ") and v > 0),
        key=lambda kv: -kv[1],
    )
    lines = ["| Redis, a message through txmail (median) | |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in commands[:top]]
    rest = sum(v for _k, v in commands[top:])
    if rest:
        lines.append(f"| other commands | {rest:.2f} |")
    lines.append(
        f"| all commands, those scripts run included | {sum(v for _k, v in commands):.2f} |"
    )
    # (Redis 7 counts a script's own commands in total_commands_processed too, so the commands
    # clients sent cannot be told from INFO; the script calls can.)
    scripts = sum(median.get(k, 0.0) for k in ("eval", "evalsha", "fcall"))
    lines.append(f"| of them script calls (EVAL, EVALSHA) | {scripts:.2f} |")
    lines.append(
        f"| bytes in / out | {median.get('bytes in', 0):.0f} / {median.get('bytes out', 0):.0f} |"
    )
    return "\n".join(lines)


def geometric_mean(values: list[float]) -> float:
    return statistics.geometric_mean(values) if values else 0.0


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--no-dkim", action="store_true", help="Do not set up a DKIM key for the sending domain."
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="Also measure bare Postfix with each reference milter of "
        "bench/milters.py (passthrough, dkim).",
    )
    parser.add_argument(
        "--appendfsync",
        choices=config_mod.APPENDFSYNC,
        default="always",
        help="redis.appendfsync of the txmail instance's Redis.",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="Also measure the stack a mail admin builds by hand: Postfix, OpenDKIM, postfwd2.",
    )
    args = parser.parse_args()
    if args.peer:
        missing = [c for c in ("opendkim", "opendkim-genkey", "postfwd2") if not shutil.which(c)]
        if missing:
            raise SystemExit(
                f"--peer needs {', '.join(missing)}: apt-get install -y opendkim opendkim-tools "
                "postfwd (or make system-deps)"
            )

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"])
    probe_sink = Sink().start() if args.peer else None
    instances: dict[str, BareInstance | TxmailInstance] = {}
    results: dict[str, list[float]] = {}
    try:
        # Each starts before the next is made: their ports are picked free as they are made.
        names = (
            "bare",
            *(("passthrough", "dkim") if args.baselines else ()),
            *(("peer",) if args.peer else ()),
            "txmail",
        )
        for name in names:
            if name == "txmail":
                txmail = instances[name] = TxmailInstance(sink_port, args.appendfsync)
                txmail.start(dkim=not args.no_dkim)
            elif name == "peer":
                assert probe_sink is not None
                peer = instances[name] = PeerInstance(sink_port, probe_sink.port)
                peer.start()
                print(f"peer signs: {peer.probe(probe_sink).splitlines()[0]} ...", flush=True)
            else:
                bare = instances[name] = BareInstance(sink_port, "" if name == "bare" else name)
                bare.start()
        results = {name: [] for name in instances}
        print(
            f"throughput: {args.messages} messages x {args.size} bytes, {args.sessions} "
            f"sessions, {args.reps} repetitions, {os.cpu_count()} cores, every rule, "
            f"policyd, {'no DKIM' if args.no_dkim else 'DKIM'}; {load()}",
            flush=True,
        )
        order = list(instances)
        for rep in range(1, args.reps + 1):
            # The order rotates each repetition, so no instance always runs after another one
            # (whose leftover work, or its page cache, would weigh on it).
            shift = (rep - 1) % len(order)
            for name in order[shift:] + order[:shift]:
                instance = instances[name]
                rate = run_once(instance, args)
                results[name].append(rate)
                machine, milter = instance.cpu_ms[-1]
                print(
                    f"  rep {rep} {name:11} {rate:7.1f} msg/s  CPU a message: "
                    f"{machine:5.2f} ms in all, {milter:4.2f} ms milter  ({load()})",
                    flush=True,
                )
        if args.peer:
            print(
                f"postfwd was asked for every message: its rate count for the sender is "
                f"{peer.rate_count()} (the probe and {args.reps} x {args.messages})",
                flush=True,
            )
    finally:
        for instance in instances.values():
            instance.close()
        sink.terminate()
        sink.wait(10)
        if probe_sink is not None:
            probe_sink.stop()
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    for name, median in medians.items():
        machine, milter = (
            statistics.median(run[i] for run in instances[name].cpu_ms) for i in (0, 1)
        )
        print(
            f"{name:11} median {median:7.1f} msg/s  CPU a message: {machine:5.2f} ms in all, "
            f"{milter:4.2f} ms milter"
        )
    for name in instances:
        if name == "bare":
            continue
        per_rep = " ".join(
            f"{t / b:.2f}" for t, b in zip(results[name], results["bare"], strict=True)
        )
        print(f"ratio       {name}/bare {medians[name] / medians['bare']:.2f} (per rep: {per_rep})")
    if "peer" in results:
        ratios = [t / b for t, b in zip(results["txmail"], results["peer"], strict=True)]
        print(
            f"ratio       txmail/peer {medians['txmail'] / medians['peer']:.2f} (per rep: "
            f"{' '.join(f'{r:.2f}' for r in ratios)}; geometric mean {geometric_mean(ratios):.2f})"
        )
    for name, instance in instances.items():
        if hasattr(instance, "peak_rss_kb"):
            print(f"{name:11} milter peak RSS {getattr(instance, 'peak_rss_kb', 0) / 1024:.1f} MB")
    print()
    print(group_table({name: inst.groups_ms for name, inst in instances.items()}))
    print()
    print(redis_table(instances["txmail"].redis_ms))  # type: ignore[union-attr]
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
