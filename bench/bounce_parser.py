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
The target is 2,000 files/s or more for the parser in one process. The first pass, untimed
before, is printed too: it pays what a fresh process pays once (regular expressions compiled
on first use, codecs imported for the charsets met).

    .venv/bin/python bench/bounce_parser.py --cli [--corpus DIR] [--passes 7] [--repeat 3]

runs the command line instead, `txmail bounces parse FILE...` (the .venv's txmail beside this
script), as separate processes: each run parses the corpus's files --repeat times over in one
process, and a run on a single file measures what starting the command costs (Python, click,
and every txmail.cli module it imports). Prints the median wall and CPU time (user + system of
the child) of each, the rate of a whole run (startup included), and the rate per file beyond
the startup (the difference of the two medians), the figure the 2,000 files/s target is for.

    .venv/bin/python bench/bounce_parser.py --cv [--corpus DIR]

scores the parser against the corpus's expected.jsonl (Sisimai's results, the corpus README's
rules) and measures how well the reason generalises: for each MTA family as the corpus labels
it, the reason accuracy of the family's recipients as parsed (plain), and again with the reason
tables of every detector that answered for that family switched off (leave-one-family-out,
LOFO), so only the structural rules (status code, reply code, SMTP command) and the shared
wording act. A family whose LOFO figure falls far below its plain one is carried by phrases
written for it. Prints one row per family (recipients, plain, LOFO) and the overall figures;
--confusions adds the LOFO confusions (expected -> given, count) and --misses every recipient
whose LOFO reason is wrong (family, file, recipient, expected, given, our diagnostic), for the
families named after it (all when none are).
"""

from __future__ import annotations

import argparse
import email
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from pathlib import Path

from txmail.bounce_pipe.parse import parse_message, parse_report
from txmail.outcomes.findings import BounceEvent
from txmail.outcomes.reasons import tables_switched_off
from txmail_testing.corpus_scores import Scores, corpus_rows, score

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


# ---------------------------------------------------------------------------
# Scores against the corpus's expected.jsonl (txmail_testing/corpus_scores.py, which the
# corpus test shares)


@dataclass
class FamilyRow:
    family: str
    recipients: int
    plain: float
    lofo: float
    owners: tuple[str, ...]


@dataclass
class CrossValidation:
    plain: Scores
    lofo: Scores
    families: list[FamilyRow]

    def table(self) -> str:
        lines = [f"{'family':<26} {'recipients':>10} {'reason plain':>13} {'reason LOFO':>12}"]
        for row in self.families:
            lines.append(
                f"{row.family:<26} {row.recipients:>10} {row.plain:>13.3f} {row.lofo:>12.3f}"
                f"  (off: {', '.join(row.owners) or '-'})"
            )
        lines.append(
            f"{'overall':<26} {self.plain.compared:>10} {self.plain.reason:>13.3f} "
            f"{self.lofo.reason:>12.3f}"
        )
        lines.append(f"plain: {self.plain.summary()}")
        lines.append(f"LOFO:  {self.lofo.summary()}")
        weak = [r.family for r in self.families if r.recipients >= 5 and r.lofo < 0.90]
        lines.append(f"families with >= 5 recipients and LOFO reason < 0.90: {weak or 'none'}")
        return "\n".join(lines)


def cross_validate(corpus: Path, by: str = "corpus") -> CrossValidation:
    """Per-family reason accuracy, plain and with that family's reason tables switched off.

    by="corpus" groups files by the corpus's family label (lhost-postfix, rhost-google, ...);
    by="detector" by the detector of ours that answered (its events' detector name).
    """
    rows = corpus_rows(corpus)
    raws = {row["file"]: (corpus / row["file"]).read_bytes() for row in rows}
    plain_results: dict[str, list[BounceEvent]] = {}
    owners: dict[str, set[str]] = defaultdict(set)
    families: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        report = parse_report(raws[row["file"]])
        plain_results[row["file"]] = report.events
        if by == "detector":
            family = report.events[0].detector or "-" if report.events else "(none)"
        else:
            family = row["family"]
        families[family].append(row)
        if report.detector:
            owners[family].add(report.detector)
    lofo_results: dict[str, list[BounceEvent]] = {}
    table: list[FamilyRow] = []
    for family, members in families.items():
        with tables_switched_off(owners[family]):
            for row in members:
                lofo_results[row["file"]] = parse_message(raws[row["file"]])
        plain = score(members, plain_results)
        lofo = score(members, lofo_results)
        if plain.compared:
            table.append(
                FamilyRow(
                    family, plain.compared, plain.reason, lofo.reason, tuple(sorted(owners[family]))
                )
            )
    table.sort(key=lambda r: (-r.recipients, r.family))
    return CrossValidation(score(rows, plain_results), score(rows, lofo_results), table)


# ---------------------------------------------------------------------------
# The command line, as separate processes

TXMAIL = Path(__file__).resolve().parents[1] / ".venv/bin/txmail"


def cli_run(paths: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `txmail bounces parse` over paths."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [str(TXMAIL), "bounces", "parse", *paths],
        stdout=subprocess.DEVNULL,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cli_figures(paths: list[str], passes: int, repeat: int) -> str:
    """The command's startup, whole-run and per-file rates (medians of passes runs)."""
    batch = paths * repeat
    cli_run(paths[:1])  # the first start reads the .pyc files from disk
    single: list[tuple[float, float]] = []
    whole: list[tuple[float, float]] = []
    for _ in range(passes):
        single.append(cli_run(paths[:1]))
        whole.append(cli_run(batch))
    start_wall = statistics.median(w for w, _ in single)
    start_cpu = statistics.median(c for _, c in single)
    run_wall = statistics.median(w for w, _ in whole)
    run_cpu = statistics.median(c for _, c in whole)
    extra = len(batch) - 1
    return "\n".join(
        [
            f"txmail bounces parse, medians of {passes} runs:",
            f"  startup (one file): wall {start_wall:.3f} s  cpu {start_cpu:.3f} s",
            f"  {len(paths)} files x {repeat} in one process: wall {run_wall:.3f} s  "
            f"cpu {run_cpu:.3f} s",
            f"  whole run: {len(batch) / run_wall:.0f} files/s wall, "
            f"{len(batch) / run_cpu:.0f} files/s cpu",
            f"  per file beyond the startup: "
            f"{extra / max(run_wall - start_wall, 1e-9):.0f} files/s wall, "
            f"{extra / max(run_cpu - start_cpu, 1e-9):.0f} files/s cpu",
            "target: >= 2000 files/s per file beyond the startup",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .eml files")
    parser.add_argument("--passes", type=int, default=7, help="timed passes of each (default 7)")
    parser.add_argument(
        "--cv", action="store_true", help="score against expected.jsonl, leave-one-family-out"
    )
    parser.add_argument(
        "--by",
        choices=("corpus", "detector"),
        default="corpus",
        help="with --cv: families as the corpus labels them or as our detectors classify them",
    )
    parser.add_argument(
        "--confusions", action="store_true", help="with --cv: list the LOFO reason confusions"
    )
    parser.add_argument(
        "--misses",
        nargs="*",
        metavar="FAMILY",
        help="with --cv: list every recipient whose LOFO reason is wrong (of these families)",
    )
    parser.add_argument(
        "--cli", action="store_true", help="time `txmail bounces parse` as separate processes"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="with --cli: the corpus's files this many times"
    )
    args = parser.parse_args()
    if args.cv:
        if not (args.corpus / "expected.jsonl").is_file():
            print(f"bounce_parser: no expected.jsonl in {args.corpus}", file=sys.stderr)
            return 2
        result = cross_validate(args.corpus, args.by)
        print(result.table())
        if args.confusions:
            ranked = sorted(result.lofo.confusions.items(), key=lambda item: -item[1])
            for (expected, given), count in ranked:
                print(f"  {expected:>16} -> {given:<16} {count}")
        if args.misses is not None:
            wanted = set(args.misses)
            for family, name, recipient, expected, given, diagnostic in sorted(result.lofo.misses):
                if not wanted or family in wanted:
                    print(f"  {family} {name} {recipient}: {expected} -> {given}  [{diagnostic}]")
        return 0
    paths = sorted(args.corpus.glob("*.eml"))
    if not paths:
        print(f"bounce_parser: no .eml files in {args.corpus}", file=sys.stderr)
        return 2
    if args.cli:
        if not TXMAIL.is_file():
            print(f"bounce_parser: no {TXMAIL} (make venv)", file=sys.stderr)
            return 2
        print(cli_figures([str(p) for p in paths], args.passes, args.repeat))
        return 0
    messages = [p.read_bytes() for p in paths]
    # One pass of each warms imports, regex compilation and caches; the parser's is shown.
    first = files_per_second(parse_message, messages)
    files_per_second(stdlib_parse, messages)
    print(f"first pass (cold): parser {first:.0f} files/s")
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
    ours_line = f"parser median {statistics.median(ours):.0f} (best {max(ours):.0f}) files/s"
    stdlib = (
        f"stdlib email.message_from_bytes median {statistics.median(baseline):.0f} "
        f"(best {max(baseline):.0f}) files/s"
    )
    print(f"{len(messages)} files x {args.passes} passes: {ours_line}; {stdlib}; ratio {ratio:.2f}")
    print("target: parser >= 2000 files/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
