"""bench/throughput: messages per second through txmail against a bare Postfix, in one run.

Both instances are rendered from the same templates and settings; the bare one has no milter
and no policy service. Postfix's own smtp-source injects N messages of S bytes over C sessions
into each instance's trusted listener (mail from 127.0.0.0/8, no login, sent as account
`bench`), both relay to Postfix's smtp-sink, and the clock runs until the queue is empty. Every
run checks that the maillog has N `status=sent` lines. The repetitions alternate between the
two instances so that a busy moment on the machine hits both alike.

    .venv/bin/python bench/throughput.py [--messages 5000] [--sessions 10] [--size 5120]
                                         [--reps 3]

Prints one line per run and a summary with the medians and their ratio (txmail / bare), plus
the milter's peak resident memory.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import Stack, free_port, port_free, wait_for  # noqa: E402
from txmail import config as config_mod  # noqa: E402
from txmail.stack import render, supervisor  # noqa: E402

QUEUES = ("incoming", "active", "deferred", "maildrop", "hold")


def trusted_port() -> int:
    while True:
        port = free_port()
        if port_free(port):
            return port


def configure_trusted(config_file: Path, port: int) -> config_mod.Settings:
    settings = config_mod.load(config_file)
    settings = dataclasses.replace(settings, trusted=config_mod.TrustedSettings(
        port=port, networks=["127.0.0.0/8"], account="bench"))
    config_file.write_text(config_mod.to_toml(settings))
    return settings


class BareInstance:
    """The same rendered Postfix, started alone, with smtpd_milters emptied."""

    def __init__(self, sink_port: int) -> None:
        self.stack = Stack(relay_port=sink_port, name="bench-bare")
        self.port = trusted_port()
        self.settings = configure_trusted(self.stack.config, self.port)
        supervisor.prepare(self.settings, self.stack.config)
        self.etc = render.postfix_config_dir(self.settings)
        # Same settings, but nothing of txmail's in the path: no milter, no policy service, no
        # socketmap (which needs a running txmail to answer).
        subprocess.run(["postconf", "-c", str(self.etc), "-e", "smtpd_milters =",
                        "smtpd_recipient_restrictions =", "smtpd_end_of_data_restrictions =",
                        f"relay_domains = {self.settings.bounce_domain}",
                        f"transport_maps = texthash:{self.etc}/transport"], check=True)
        self.spool = self.stack.state / "postfix/spool"
        self.maillog = self.settings.path(self.settings.postfix.maillog)

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True)
        wait_for(lambda: not port_free(self.port), 20, what="bare postfix")

    def close(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False,
                       capture_output=True)
        self.stack.close()


class TxmailInstance:
    def __init__(self, sink_port: int) -> None:
        self.stack = Stack(relay_port=sink_port, name="bench-txmail")
        self.port = trusted_port()
        self.settings = configure_trusted(self.stack.config, self.port)
        self.spool = self.stack.state / "postfix/spool"
        self.maillog = self.settings.path(self.settings.postfix.maillog)

    def start(self, dkim: bool) -> None:
        self.stack.start()
        # Unlimited, no warm-up: the benchmark measures the work per message, not the quotas.
        limits = [f"{k}=0" for k in ("messages_per_minute", "messages_per_hour",
                                     "messages_per_day", "recipients_per_minute",
                                     "recipients_per_hour", "recipients_per_day",
                                     "bytes_per_day")]
        self.stack.add_account("bench", "bench.example", settings=[*limits, "warmup=false"])
        if dkim:
            self.stack.txmail("domains", "add", "bench.example", "--account", "bench",
                              "--force-sign", "--force-return-path")
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


def run_once(instance: BareInstance | TxmailInstance, args: argparse.Namespace) -> float:
    before = sent_lines(instance.maillog)
    peak = 0
    milter = instance.milter_pids() if isinstance(instance, TxmailInstance) else []
    start = time.monotonic()
    source = subprocess.Popen(
        ["smtp-source", "-s", str(args.sessions), "-l", str(args.size), "-m",
         str(args.messages), "-f", "app@bench.example", "-t", "rcpt@dest.test",
         "-M", "client.test", f"127.0.0.1:{instance.port}"])
    while source.poll() is None:
        peak = max([peak] + [rss_kb(p) for p in milter])
        time.sleep(0.1)
    if source.returncode != 0:
        raise SystemExit(f"smtp-source failed with status {source.returncode}")
    while not queue_empty(instance.spool):
        peak = max([peak] + [rss_kb(p) for p in milter])
        time.sleep(0.05)
    elapsed = time.monotonic() - start
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
    parser.add_argument("--no-dkim", action="store_true",
                        help="Do not set up a DKIM key for the sending domain.")
    args = parser.parse_args()

    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"])
    bare = BareInstance(sink_port)
    txmail = TxmailInstance(sink_port)
    results: dict[str, list[float]] = {"bare": [], "txmail": []}
    try:
        bare.start()
        txmail.start(dkim=not args.no_dkim)
        print(f"throughput: {args.messages} messages x {args.size} bytes, {args.sessions} "
              f"sessions, {args.reps} repetitions, {os.cpu_count()} cores, every rule, "
              f"policyd, {'no DKIM' if args.no_dkim else 'DKIM'}", flush=True)
        for rep in range(1, args.reps + 1):
            for name, instance in (("bare", bare), ("txmail", txmail)):
                rate = run_once(instance, args)
                results[name].append(rate)
                print(f"  rep {rep} {name:7} {rate:7.1f} msg/s", flush=True)
    finally:
        txmail.close()
        bare.close()
        sink.terminate()
        sink.wait(10)
    bare_median = statistics.median(results["bare"])
    txmail_median = statistics.median(results["txmail"])
    per_rep = " ".join(f"{t / b:.2f}" for t, b in zip(results["txmail"], results["bare"],
                                                       strict=True))
    print(f"bare    median {bare_median:7.1f} msg/s")
    print(f"txmail  median {txmail_median:7.1f} msg/s")
    print(f"ratio   txmail/bare {txmail_median / bare_median:.2f} (per rep: {per_rep})")
    print(f"milter  peak RSS {getattr(txmail, 'peak_rss_kb', 0) / 1024:.1f} MB")


if __name__ == "__main__":
    main()
