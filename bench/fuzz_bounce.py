"""bench/fuzz_bounce: coverage-guided fuzzing of the bounce parser with atheris (libFuzzer).

SYNOPSIS
    .venv/bin/python bench/fuzz_bounce.py [--seconds 300] [--runs N] [--corpus DIR]
                                          [--artifacts DIR] [-- LIBFUZZER-FLAGS...]
    make fuzz [FUZZ_SECONDS=300]

DESCRIPTION
    Feeds libFuzzer's inputs to txmail.bounce_pipe.parse.parse_report, with txmail's bounce
    code and the stdlib email package instrumented for coverage. The seeds are the public bounce
    corpus (../shared/corpus/bounces beside the repository, or --corpus DIR), copied at run time
    into a temporary folder that libFuzzer also grows with the new inputs it finds; the folder
    is removed at the end, so nothing is written into the repository.

    An input fails (a "crash" that stops the run and is saved under --artifacts, by default
    /tmp/txmail-fuzz-bounce/) when parse_report raises, when a detector raises (the parser
    swallows and logs that; here it counts as a bug), or when one input costs more than a second
    of CPU time. libFuzzer's own -timeout (10 s of wall-clock time) catches hangs.

    Needs atheris: `.venv/bin/pip install -e '.[fuzz]'` (make fuzz does it).

OUTPUT
    libFuzzer's progress lines, then one summary line:
    `fuzz_bounce: N executions in S s (R exec/s), coverage C, features F, corpus K inputs,
    crashes X`, with the path of every saved crash. Exits 1 if anything was found.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared/corpus/bounces"
DEFAULT_ARTIFACTS = Path(tempfile.gettempdir()) / "txmail-fuzz-bounce"
CPU_SECONDS = 1.0
FINDINGS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


class DetectorTripped(Exception):
    """A detector raised on the input; the parser logged and skipped it."""


class SlowInput(Exception):
    """One input cost more than CPU_SECONDS of CPU time."""


class _RaiseOnDetectorError(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            raise DetectorTripped(record.getMessage()) from record.exc_info[1]


def fuzz_child(libfuzzer_args: list[str]) -> None:
    """Run inside the libFuzzer process: instrument, then fuzz until libFuzzer stops."""
    import atheris

    with atheris.instrument_imports(include=["txmail.bounce_pipe", "email"]):
        import email  # noqa: F401
        import email.parser  # noqa: F401

        from txmail.bounce_pipe.parse import parse_report

    logger = logging.getLogger("txmail.bounce_pipe")
    logger.addHandler(_RaiseOnDetectorError())
    logger.setLevel(logging.WARNING)
    logger.propagate = False

    def one_input(data: bytes) -> None:
        started = time.process_time()
        parse_report(data)
        spent = time.process_time() - started
        if spent > CPU_SECONDS:
            raise SlowInput(f"{len(data)} bytes took {spent:.2f} s of CPU")

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def summary(output: str, seconds: float, findings: list[Path], corpus_size: int) -> str:
    runs = re.findall(r"^#(\d+)\s", output, re.M)
    done = re.search(r"Done (\d+) runs in (\d+) second", output)
    executions = int(done.group(1)) if done else int(runs[-1]) if runs else 0
    rate = re.search(r"average_exec_per_sec:\s+(\d+)", output)
    coverage = re.findall(r"\bcov: (\d+)", output)
    features = re.findall(r"\bft: (\d+)", output)
    line = (
        f"fuzz_bounce: {executions} executions in {seconds:.0f} s "
        f"({rate.group(1) if rate else round(executions / max(seconds, 1e-9))} exec/s), "
        f"coverage {coverage[-1] if coverage else '?'}, "
        f"features {features[-1] if features else '?'}, corpus {corpus_size} inputs, "
        f"crashes {len(findings)}"
    )
    return "\n".join([line, *(f"  found: {path}" for path in findings)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=int, default=300, help="stop after this many seconds (default 300)"
    )
    parser.add_argument(
        "--runs", type=int, default=-1, help="stop after this many executions (default: no limit)"
    )
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .eml seed files"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=DEFAULT_ARTIFACTS,
        help=f"where failing inputs are saved (default {DEFAULT_ARTIFACTS})",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --")
    args = parser.parse_args()
    if args.child:
        fuzz_child(args.libfuzzer)
        return 0
    seeds = sorted(args.corpus.glob("*.eml"))
    if not seeds:
        print(f"fuzz_bounce: no .eml seed files in {args.corpus}", file=sys.stderr)
        return 2
    try:
        import atheris  # noqa: F401
    except ImportError:
        print(
            "fuzz_bounce: atheris is not installed; run .venv/bin/pip install -e '.[fuzz]'",
            file=sys.stderr,
        )
        return 2
    args.artifacts.mkdir(parents=True, exist_ok=True)
    before = set(args.artifacts.iterdir())
    with tempfile.TemporaryDirectory(prefix="txmail-fuzz-seeds-") as work:
        for seed in seeds:
            shutil.copyfile(seed, Path(work) / seed.name)
        command = [
            sys.executable,
            __file__,
            "--child",
            "--",
            work,
            f"-max_total_time={args.seconds}",
            f"-runs={args.runs}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={args.artifacts}/",
            *args.libfuzzer,
        ]
        started = time.monotonic()
        child = subprocess.run(
            command, stderr=subprocess.PIPE, text=True, errors="replace", cwd=REPO, check=False
        )
        seconds = time.monotonic() - started
        corpus_size = sum(1 for _ in Path(work).iterdir())
    sys.stderr.write(child.stderr)
    findings = sorted(
        p for p in set(args.artifacts.iterdir()) - before if p.name.startswith(FINDINGS)
    )
    print(summary(child.stderr, seconds, findings, corpus_size))
    return 1 if findings or child.returncode not in (0,) else 0


if __name__ == "__main__":
    sys.exit(main())
