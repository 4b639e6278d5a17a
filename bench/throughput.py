"""bench/throughput: messages per second through txmail against a bare Postfix, in one run.

The instances are rendered from the same templates and settings; the bare one has no milter
and no policy service. Postfix's own smtp-source injects N messages of S bytes over C sessions
into each instance's trusted listener (mail from 127.0.0.0/8, no login, sent as account
`bench`), all relay to Postfix's smtp-sink, and the clock runs until the queue is empty. Every
run checks that the maillog has N `status=sent` lines. The repetitions alternate between the
instances so that a busy moment on the machine hits them alike.

With --baselines, two more bare instances each get one of bench/milters.py's reference
milters: `passthrough` (the milter protocol and pymilter alone) and `dkim` (a milter that only
signs, as txmail signs). They show what the protocol and the signing cost by themselves, so
what is left between them and txmail is txmail's own work.

    .venv/bin/python bench/throughput.py [--messages 5000] [--sessions 10] [--size 5120]
                                         [--reps 3] [--no-dkim] [--baselines]

Prints one line per run and a summary with the medians and their ratios to bare Postfix, plus
each milter's peak resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from txmail import config as config_mod
from txmail.bounce_pipe.server import check_start
from txmail.stack import render, supervisor
from txmail_testing.harness import Stack, free_port, port_free, process_cpu, wait_for

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


class BareInstance:
    """The same rendered Postfix, started alone, with smtpd_milters emptied, or with one of the
    reference milters of bench/milters.py in their place (`milter`: passthrough or dkim)."""

    def __init__(self, sink_port: int, milter: str = "") -> None:
        self.milter, self.milter_proc = milter, None
        self.cpu_ms: list[list[float]] = []  # per run: machine, milter (run_once)
        self.stack = Stack(relay_port=sink_port, name=f"bench-{milter or 'bare'}")
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

    def close(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, capture_output=True)
        if self.milter_proc is not None:
            self.milter_proc.terminate()
            self.milter_proc.wait(10)
        self.stack.close()


class TxmailInstance:
    def __init__(self, sink_port: int, appendfsync: str = "always") -> None:
        self.stack = Stack(relay_port=sink_port, name="bench-txmail")
        self.stack.configure("redis", appendfsync=appendfsync)
        self.cpu_ms: list[list[float]] = []  # per run: machine, milter (run_once)
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


def run_once(instance: BareInstance | TxmailInstance, args: argparse.Namespace) -> float:
    """Messages per second; also adds the CPU per message (the whole machine's, the milter's)
    to instance.cpu_ms."""
    before = sent_lines(instance.maillog)
    peak = 0
    milter = instance.milter_pids()
    cpu_before = (machine_cpu(), process_cpu(milter))
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
    elapsed = time.monotonic() - start
    cpu_ms = [
        (after - earlier) * 1000 / args.messages
        for after, earlier in zip((machine_cpu(), process_cpu(milter)), cpu_before, strict=True)
    ]
    instance.cpu_ms.append(cpu_ms)
    deadline = time.monotonic() + 10
    while sent_lines(instance.maillog) - before < args.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    sent = sent_lines(instance.maillog) - before
    if sent != args.messages:
        raise SystemExit(f"expected {args.messages} status=sent lines, found {sent}")
    if milter:
        instance.peak_rss_kb = max(getattr(instance, "peak_rss_kb", 0), peak)  # type: ignore[union-attr]
    return args.messages / elapsed


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
    args = parser.parse_args()

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"])
    instances: dict[str, BareInstance | TxmailInstance] = {}
    try:
        # Each starts before the next is made: their ports are picked free as they are made.
        for name in ("bare", *(("passthrough", "dkim") if args.baselines else ()), "txmail"):
            if name == "txmail":
                txmail = instances[name] = TxmailInstance(sink_port, args.appendfsync)
                txmail.start(dkim=not args.no_dkim)
            else:
                bare = instances[name] = BareInstance(sink_port, "" if name == "bare" else name)
                bare.start()
        results: dict[str, list[float]] = {name: [] for name in instances}
        print(
            f"throughput: {args.messages} messages x {args.size} bytes, {args.sessions} "
            f"sessions, {args.reps} repetitions, {os.cpu_count()} cores, every rule, "
            f"policyd, {'no DKIM' if args.no_dkim else 'DKIM'}",
            flush=True,
        )
        for rep in range(1, args.reps + 1):
            for name, instance in instances.items():
                rate = run_once(instance, args)
                results[name].append(rate)
                machine, milter = instance.cpu_ms[-1]
                print(
                    f"  rep {rep} {name:11} {rate:7.1f} msg/s  CPU a message: "
                    f"{machine:5.2f} ms in all, {milter:4.2f} ms milter",
                    flush=True,
                )
    finally:
        for instance in instances.values():
            instance.close()
        sink.terminate()
        sink.wait(10)
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
    for name, instance in instances.items():
        if hasattr(instance, "peak_rss_kb"):
            print(f"{name:11} milter peak RSS {getattr(instance, 'peak_rss_kb', 0) / 1024:.1f} MB")


if __name__ == "__main__":
    main()
