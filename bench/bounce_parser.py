"""bench/bounce_parser: files per second of the bounce parser over the corpus, in one process.

Reads every .eml of the public bounce corpus (../shared/corpus/bounces beside the repository,
or --corpus DIR) into memory once, then times several passes of
txmail.bounce_pipe.parse.parse_message over all of them, and as a baseline in the same run
the same passes of a trivial parse (the stdlib email.message_from_bytes of every file), so the
ratio says what the detectors cost on top of MIME parsing. The passes alternate between the
two so that a busy moment on the machine hits both alike.

    .venv/bin/python bench/bounce_parser.py [--corpus DIR] [--passes 7]

Rates are files per second of this process's CPU time, so other load on a shared machine
disturbs them less than wall-clock time would. Prints one line per pass and a summary: the
median and best files/s of each, and the median of the per-pass ratios (parser / stdlib).
The target is 2,000 files/s or more for the parser in one process.
"""

from __future__ import annotations

import argparse
import email
import statistics
import sys
import time
from collections.abc import Callable
from email import policy
from pathlib import Path

from txmail.bounce_pipe.parse import parse_message

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared/corpus/bounces"


def stdlib_parse(raw: bytes) -> object:
    """The baseline: what reading the MIME structure alone costs."""
    return email.message_from_bytes(raw, policy=policy.compat32)


def files_per_second(parse: Callable[[bytes], object], messages: list[bytes]) -> float:
    # CPU time of this process: a busy neighbour on a shared machine slows
    # the wall clock but not this measure (much).
    started = time.process_time()
    for raw in messages:
        parse(raw)
    return len(messages) / max(time.process_time() - started, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .eml files")
    parser.add_argument("--passes", type=int, default=7, help="timed passes of each (default 7)")
    args = parser.parse_args()
    paths = sorted(args.corpus.glob("*.eml"))
    if not paths:
        print(f"bounce_parser: no .eml files in {args.corpus}", file=sys.stderr)
        return 2
    messages = [p.read_bytes() for p in paths]
    # One untimed pass of each warms imports, regex compilation and caches.
    files_per_second(parse_message, messages)
    files_per_second(stdlib_parse, messages)
    ours: list[float] = []
    baseline: list[float] = []
    for number in range(1, args.passes + 1):
        ours.append(files_per_second(parse_message, messages))
        baseline.append(files_per_second(stdlib_parse, messages))
        print(
            f"pass {number}: parser {ours[-1]:8.0f} files/s   "
            f"stdlib email {baseline[-1]:8.0f} files/s   ratio {ours[-1] / baseline[-1]:.2f}"
        )
    # Each pass pairs the two runs back to back, so the per-pass ratio is the
    # figure least disturbed by other load on the machine.
    ratio = statistics.median(o / b for o, b in zip(ours, baseline, strict=True))
    parser = f"parser median {statistics.median(ours):.0f} (best {max(ours):.0f}) files/s"
    stdlib = (
        f"stdlib email.message_from_bytes median {statistics.median(baseline):.0f} "
        f"(best {max(baseline):.0f}) files/s"
    )
    print(f"{len(messages)} files x {args.passes} passes: {parser}; {stdlib}; ratio {ratio:.2f}")
    print("target: parser >= 2000 files/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
