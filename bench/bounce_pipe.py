"""bench/bounce_pipe: returned mails per second through the bounce pipe command, handed to
`txmail bounces serve` (root), whose parser workers (the txmail user, no key) parse each mail.

Runs `python -m txmail.bounce_pipe` as master.cf does, N times, C at a time (pipe(8)'s
maxproc is 10), on a DSN from the public corpus addressed to an unknown bounce token (so each
is parsed, matched, and kept for `txmail bounces unparsed`), and reads the CPU the pipe
processes, the recorder and its parser workers used. (Before issue 15's finding 8 the pipe
could also parse in its own process, about 3 mails a second per core at 266-344 ms of CPU a
mail; it cannot any more: it holds no key.)

    .venv/bin/python bench/bounce_pipe.py [--mails 100] [--concurrency 1,10] [--reps 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from txmail_testing.harness import Stack, free_port, process_cpu

BENCH = Path(__file__).resolve().parent

CORPUS = BENCH.parent.parent / "shared/corpus/bounces"
SAMPLE = "flufl-bounce_02.eml"


def run(config: Path, mail: bytes, mails: int, concurrency: int) -> tuple[float, float]:
    """(mails per second, CPU of the pipe processes per mail in ms)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def one(n: int) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "txmail.bounce_pipe",
                "--config",
                str(config),
                "--",
                "MAILER-DAEMON@example.net",
                f"bounces+bench{n}@bounces.example",
            ],
            input=mail,
            env=env,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the pipe exited {done.returncode}: {done.stderr[-300:]!r}")

    start = time.monotonic()
    cpu_before = os.times()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(mails)))
    elapsed = time.monotonic() - start
    cpu_after = os.times()
    children = (
        cpu_after.children_user
        + cpu_after.children_system
        - cpu_before.children_user
        - cpu_before.children_system
    )
    return mails / elapsed, children / mails * 1000


def workers_of(server: int) -> list[int]:
    """The recorder's parser workers (they are replaced when they time out or retire)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{server}\n" in status and b"txmail.bounce_pipe.worker" in argv:
            found.append(int(entry.name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=100)
    parser.add_argument("--concurrency", default="1,10")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    mail = (CORPUS / SAMPLE).read_bytes()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(BENCH.parent / "txmail")], check=True
    )  # as `make run` does: the pipe's user cannot write __pycache__
    stack = Stack(relay_port=free_port(), name="bench-bounce-pipe")
    stack.start()
    results: dict[int, list[tuple[float, float]]] = {}
    try:
        server = stack.pid_of("bounces", "serve")
        print(
            f"bounce pipe: {args.mails} mails of {len(mail)} bytes ({SAMPLE}), "
            f"{args.reps} repetitions, {os.cpu_count()} cores",
            flush=True,
        )
        for rep in range(1, args.reps + 1):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                workers = workers_of(server)
                server_before = process_cpu([server]) + process_cpu(workers)
                rate, pipe_ms = run(stack.config, mail, args.mails, concurrency)
                server_ms = (
                    (process_cpu([server]) + process_cpu(workers) - server_before)
                    / args.mails
                    * 1000
                )
                results.setdefault(concurrency, []).append((rate, pipe_ms + server_ms))
                print(
                    f"  rep {rep} {concurrency:2} at once: {rate:6.1f} mails/s  CPU a mail "
                    f"{pipe_ms:5.0f} ms pipe + {server_ms:4.1f} ms recorder and parsers",
                    flush=True,
                )
    finally:
        stack.close()
    for concurrency, runs in results.items():
        print(
            f"{concurrency:2} at once: {statistics.median(r for r, _ in runs):6.1f} mails/s, "
            f"{statistics.median(c for _, c in runs):.0f} ms CPU a mail"
        )


if __name__ == "__main__":
    main()
