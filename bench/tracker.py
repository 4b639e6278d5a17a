"""bench/tracker: requests per second and latency of `txmail tracker`, measured with wrk.

A private Redis and one `txmail tracker` process run on loopback (the same process and
settings `txmail up` starts). Debian's wrk then drives, for D seconds each with C connections:

    baseline  GET /healthz          the same server answering without a token or Redis
    click     GET /c/TOKEN          verify the signed token, answer 302, record a click
    open      GET /o/TOKEN.gif      verify, answer the GIF, record an open

so the cost of tracking is read against a baseline measured in the same run. After each
tracked run the bench waits until the clicks (opens) counted in Redis equal the requests wrk
made, and prints how many were recorded: an answer that was not recorded would show here.

    .venv/bin/python bench/tracker.py [--seconds 10] [--connections 32] [--threads 2] [--reps 3]

Prints one line per run (requests/s, p50, p99) and a summary of the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from txmail import config as config_mod
from txmail.stack.components import can_connect_tcp
from txmail.tokens.links import LinkSigner, Mark
from txmail_testing.harness import RedisServer, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
TXMAIL = [sys.executable, "-m", "txmail"]
ACCOUNT = "bench"
QUEUE_ID = "4jXBENCH00000001"


def wrk_ms(text: str) -> float:
    """A wrk latency such as 812.00us, 1.23ms or 1.02s in milliseconds."""
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, seconds: int, connections: int, threads: int) -> dict[str, float]:
    result = subprocess.run(
        ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rate": rate,
        "total": total,
        "p50": p50,
        "p99": p99,
        "bad": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/tracker: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="txmail-bench-tracker-"))
    redis_server = RedisServer().start()
    tracker: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        subprocess.run(
            [*TXMAIL, "init", "--state-dir", str(state)], check=True, capture_output=True
        )
        config = state / "txmail.toml"
        text = config.read_text()
        text = re.sub(r'(?m)^url = ""', f'url = "{redis_server.url}"', text, count=1)
        text = re.sub(r"(?m)^http = \d+", f"http = {port}", text, count=1)
        config.write_text(text)
        settings = config_mod.load(config)
        signer = LinkSigner(settings.read_secret("tracking_key_file"))
        sent_at = int(time.time()) - 3600  # an hour ago: a person, not "too-soon"
        click = signer.sign(
            Mark(
                "click",
                ACCOUNT,
                QUEUE_ID,
                "reader@example.net",
                0,
                "https://shop.example.com/order?id=7",
                sent_at,
            )
        )
        pixel = signer.sign(Mark("open", ACCOUNT, QUEUE_ID, "reader@example.net", sent_at=sent_at))
        log = (state / "tracker.log").open("ab")
        tracker = subprocess.Popen(
            [*TXMAIL, "--config", str(config), "tracker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        wait_for(lambda: can_connect_tcp("127.0.0.1", port), 30, what="the tracker")
        client = redis_server.client()
        counts = f"txmail:{{{ACCOUNT}}}:counts:{time.strftime('%Y%m%d', time.gmtime())}"
        base = f"http://127.0.0.1:{port}"
        targets = [
            ("baseline", f"{base}/healthz", None),
            ("click", f"{base}/c/{click}", "click"),
            ("open", f"{base}/o/{pixel}.gif", "open"),
        ]
        print(
            f"txmail tracker on {base}: wrk -t{args.threads} -c{args.connections} "
            f"-d{args.seconds}s, {args.reps} repetitions, {os.cpu_count()} cores"
        )
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        for rep in range(1, args.reps + 1):
            for name, url, kind in targets:
                before = int(client.hget(counts, kind) or 0) if kind else 0
                figures = run_wrk(url, args.seconds, args.connections, args.threads)
                recorded = ""
                if kind:
                    # wrk counts completed answers; let the background writer catch up
                    expected = before + int(figures["total"])
                    start = time.monotonic()
                    while (
                        int(client.hget(counts, kind) or 0) < expected
                        and time.monotonic() - start < 60
                    ):
                        time.sleep(0.1)
                    got = int(client.hget(counts, kind) or 0) - before
                    recorded = f"  recorded {got}/{int(figures['total'])}"
                results[name].append(figures)
                print(
                    f"rep {rep} {name:8} {figures['rate']:9.0f} req/s  p50 "
                    f"{figures['p50']:6.2f} ms  p99 {figures['p99']:6.2f} ms  non-2xx/3xx "
                    f"{int(figures['bad'])}{recorded}"
                    + (
                        f"  socket errors: {figures['socket_errors']}"
                        if figures["socket_errors"]
                        else ""
                    ),
                    flush=True,
                )
        print("medians:")
        for name, runs in results.items():
            rate = statistics.median(r["rate"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            p50 = statistics.median(r["p50"] for r in runs)
            base_rate = statistics.median(r["rate"] for r in results["baseline"])
            print(
                f"  {name:8} {rate:9.0f} req/s ({rate / base_rate:4.2f} of baseline)  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            )
    finally:
        if tracker is not None:
            tracker.send_signal(signal.SIGTERM)
            try:
                tracker.wait(15)
            except subprocess.TimeoutExpired:
                tracker.kill()
                tracker.wait(5)
        redis_server.close()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
