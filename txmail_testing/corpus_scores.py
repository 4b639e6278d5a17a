"""Scores of the bounce parser against the public bounce corpus's expected.jsonl, by the corpus
README's rules: one implementation for tests/unit/bounce_pipe/test_corpus.py (the thresholds)
and bench/bounce_parser.py (the figures, --cv).

Recipient precision/recall/F1 over (file, recipient) pairs of the `parsed` and `not_bounce`
files; kind, hard-vs-soft, reason and status accuracy over the recipients both sides found
(`parsed` and `disputed` files); events emitted for `not_bounce` files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from txmail.outcomes.findings import BounceEvent


def corpus_rows(corpus: Path) -> list[dict]:
    with open(corpus / "expected.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def by_recipient(events: list[dict]) -> dict[str, dict]:
    """Events keyed by recipient as the README compares them (first wins)."""
    keyed: dict[str, dict] = {}
    for event in events:
        keyed.setdefault(event["recipient"].strip().strip("<>").lower(), event)
    return keyed


@dataclass
class Scores:
    """The corpus README's measures over some rows, with the mismatches kept for messages."""

    true_pos: int = 0
    false_pos: int = 0
    false_neg: int = 0
    compared: int = 0
    kind_ok: int = 0
    hard_soft_compared: int = 0
    hard_soft_ok: int = 0
    reason_ok: int = 0
    status_compared: int = 0
    status_ok: int = 0
    not_bounce_events: int = 0
    confusions: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    # (family, file, recipient, expected reason, given reason, our diagnostic)
    misses: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    # "FILE: recipients EXPECTED != GOT" for each file whose recipients differ
    recipient_misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_pos / max(1, self.true_pos + self.false_pos)

    @property
    def recall(self) -> float:
        return self.true_pos / max(1, self.true_pos + self.false_neg)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def kind(self) -> float:
        return self.kind_ok / max(1, self.compared)

    @property
    def hard_soft(self) -> float:
        return self.hard_soft_ok / max(1, self.hard_soft_compared)

    @property
    def reason(self) -> float:
        return self.reason_ok / max(1, self.compared)

    @property
    def status(self) -> float:
        return self.status_ok / max(1, self.status_compared)

    def summary(self) -> str:
        return (
            f"recipients F1 {self.f1:.3f} (P {self.precision:.4f} R {self.recall:.4f})  "
            f"kind {self.kind:.3f}  hard/soft {self.hard_soft:.3f}  "
            f"reason {self.reason:.3f}  status {self.status:.3f}  "
            f"events on non-bounces {self.not_bounce_events}"
        )


def score(rows: list[dict], results: dict[str, list[BounceEvent]]) -> Scores:
    """The scores of `results` (file name -> the parser's events) against `rows`."""
    scores = Scores()
    for row in rows:
        category = row["category"]
        got = by_recipient([e.summary() for e in results[row["file"]]])
        expected = by_recipient(row["events"])
        if category == "not_bounce":
            scores.not_bounce_events += len(got)
        if category in ("parsed", "not_bounce"):
            scores.true_pos += len(got.keys() & expected.keys())
            scores.false_pos += len(got.keys() - expected.keys())
            scores.false_neg += len(expected.keys() - got.keys())
            if got.keys() != expected.keys():
                scores.recipient_misses.append(
                    f"{row['file']}: recipients {sorted(expected)} != {sorted(got)}"
                )
        if category not in ("parsed", "disputed"):
            continue
        for recipient in got.keys() & expected.keys():
            mine, theirs = got[recipient], expected[recipient]
            scores.compared += 1
            scores.kind_ok += mine["kind"] == theirs["kind"]
            if theirs["kind"] in ("bounce", "soft_bounce"):
                scores.hard_soft_compared += 1
                scores.hard_soft_ok += mine["kind"] == theirs["kind"]
            scores.reason_ok += mine["reason"] == theirs["reason"]
            if mine["reason"] != theirs["reason"]:
                scores.confusions[(theirs["reason"], mine["reason"])] += 1
                scores.misses.append(
                    (
                        row["family"],
                        row["file"],
                        recipient,
                        theirs["reason"],
                        mine["reason"],
                        " ".join(mine["diagnostic"].split())[:160],
                    )
                )
            if theirs["status"] is not None:
                scores.status_compared += 1
                scores.status_ok += mine["status"] == theirs["status"]
    return scores
