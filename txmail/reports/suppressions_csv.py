"""Suppression lists as CSV, and a bounded search of them (the console's suppressions page).

    rows = search(lists, account, "gmail", list_name=None, limit=200, scan=50_000)
    for line in export_csv(lists.entries(account)): ...
    count = import_csv(lists, account, text, default_list="bounce", max_rows=10_000)

CSV columns: list, recipient, reason, created_at, expires_at (ISO 8601 UTC, empty for never).
import_csv takes export's files, or one address a row (with or without the header row
"recipient"), turns each row into the JSON line Suppressions.import_lines reads, and lets it
check every row before anything is written: the same rules as `txmail suppressions import`.
A cell that a spreadsheet would run as a formula (starting with = + - @ or a tab) is written
with a leading apostrophe, which import takes off again.

Fails: UsageError naming the row for bad input or too many rows; StoreUnavailable.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from txmail.errors import UsageError
from txmail.store.suppressions import LISTS, SuppressionEntry, Suppressions

COLUMNS = ("list", "recipient", "reason", "created_at", "expires_at")
FORMULA = ("=", "+", "-", "@", "\t", "\r")
LINE_ERROR = re.compile(r"line ([0-9]+): (.*)", re.DOTALL)  # Suppressions.import_lines's


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _seconds(text: str, row: int, column: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise UsageError(
            f"row {row}: {column} {text[:40]!r} is not a time like 2026-01-31T12:00:00Z"
        ) from None


def _cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:2] in FORMULA and text[1:2] else text


def export_csv(entries: Iterable[SuppressionEntry]) -> Iterator[str]:
    """The header, then one CSV line per entry."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield out.getvalue()
    for entry in entries:
        out.seek(0)
        out.truncate()
        writer.writerow(
            [
                entry.list,
                _cell(entry.recipient),
                _cell(entry.reason),
                _iso(entry.created_at),
                _iso(entry.expires_at),
            ]
        )
        yield out.getvalue()


def import_csv(
    lists: Suppressions,
    account: str,
    text: str,
    default_list: str | None,
    max_rows: int,
    reason: str = "imported in the console",
) -> int:
    """Add the CSV's entries to the account's lists; how many. Nothing is written unless
    every row is right."""
    if default_list is not None and default_list not in LISTS:
        raise UsageError(f"list {default_list!r} is not one of {', '.join(LISTS)}")
    rows = csv.reader(io.StringIO(text, newline=""))
    lines: list[str] = []
    rows_of: list[int] = []  # the CSV row of each line
    header: list[str] | None = None
    for number, row in _rows(rows):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if header is None and number == 1 and "recipient" in [c.lower() for c in cells]:
            header = [c.lower() for c in cells]
            continue
        if len(lines) >= max_rows:
            raise UsageError(f"the file has more than {max_rows} rows; split it into smaller files")
        values = dict(zip(header or ["recipient"], cells, strict=False))
        recipient = _uncell(values.get("recipient", ""))
        if not recipient:
            raise UsageError(f"row {number}: no recipient")
        rows_of.append(number)
        lines.append(
            json.dumps(
                {
                    "list": values.get("list") or default_list or "",
                    "recipient": recipient,
                    "reason": _uncell(values.get("reason", "")) or reason,
                    "expires_at": _seconds(values.get("expires_at", ""), number, "expires_at"),
                    "created_at": _seconds(values.get("created_at", ""), number, "created_at"),
                }
            )
        )
    if not lines:
        raise UsageError("the file holds no addresses")
    try:
        return lists.import_lines(account, lines, default_list=default_list, reason=reason)
    except UsageError as exc:
        # import_lines numbers the JSON lines made here; say the CSV row each came from
        found = LINE_ERROR.match(str(exc))
        if found is None or not 1 <= int(found.group(1)) <= len(rows_of):
            raise
        raise UsageError(f"row {rows_of[int(found.group(1)) - 1]}: {found.group(2)}") from None


def _rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of each CSV row; a row csv cannot read (a field over its size
    limit, a stray quote) is a UsageError naming the row."""
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UsageError(
                f"row {number}: {exc} (a field may be longer than {csv.field_size_limit()} "
                "characters, or a quote is not closed); fix the row and import again"
            ) from None
        yield number, row


@dataclass(frozen=True)
class Found:
    """What search() found: the entries, and whether it stopped before the end of the lists."""

    entries: list[SuppressionEntry]
    complete: bool


def search(
    lists: Suppressions,
    account: str,
    text: str,
    list_name: str | None,
    limit: int,
    scan: int,
) -> Found:
    """The newest `limit` live entries whose address contains `text` (any, when empty), of one
    list or both, reading no more than `scan` entries (expired ones and the other list's
    count too)."""
    text = text.strip().lower()
    found: list[SuppressionEntry] = []
    for entry in lists.entries(account, list_name, max_read=scan):
        if not text or text in entry.recipient:
            found.append(entry)
            if len(found) >= limit:
                return Found(found, False)
    return Found(found, lists.count(account) <= scan)
