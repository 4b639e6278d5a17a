"""Follow Postfix's entries in the systemd journal, by cursor, across restarts and vacuums.

DESCRIPTION
    JournalFollower runs `journalctl --follow --output=json` (maillog.journal_match selects
    Postfix's entries, by default the mail facility; maillog.journal_namespace a journald
    namespace) and turns each entry into the line a syslog file would hold,
    `IDENTIFIER[PID]: MESSAGE`, which txmail.maillog.lines parses as it parses a file's.
    Without a saved cursor (the first start) it reads from milter.message_ttl_days ago: an
    older line cannot name a message txmail still has a record of.
    It has the same interface as LogFollower: read_lines() never blocks, commit() saves the
    position once the lines returned so far were recorded, rewind() goes back to it.

    The position is the journal cursor of the last recorded entry. journalctl is started
    with `--cursor=SAVED` (not --after-cursor, which skips one entry more when the saved one
    is gone), so its first entry is the saved one again and is dropped. When the first entry
    is another, the saved one was removed (a vacuum, `journalctl --vacuum-*`, or a journal
    that was deleted): what was logged between it and the first entry still there cannot be
    read. That is logged once, and reading goes on from the oldest entry left.

    journalctl is an argument (`journalctl`), so tests run the follower on recorded output.

WRITES
    The position, JSON {"cursor": ...}: through `positions` (txmail.maillog.position), the
    position file replaced atomically or, in Redis, with the events of the lines before it.

FAILURE
    journalctl exits (journald restarted, bad cursor): its last words are logged and it is
    started again from the saved position after a pause; a cursor journalctl refuses is
    logged and reading starts from the oldest entry. Entries that are not JSON or have no
    MESSAGE are skipped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from txmail.maillog.position import FilePosition, Positions

log = logging.getLogger("txmail.maillog")

READ_SIZE = 1 << 20
RESTART_DELAY = 2.0
MAX_LINE = 65536


def command(
    journalctl: str,
    namespace: str,
    matches: Sequence[str],
    cursor: str | None,
    since_days: int = 0,
) -> list[str]:
    """The journalctl command line that follows the entries from `cursor`; without one, from
    `since_days` ago (no older line can name a message txmail still knows), 0: the oldest."""
    cmd = [journalctl, "--follow", "--no-tail", "--output=json", "--no-pager", "--quiet"]
    if namespace:
        cmd.append(f"--namespace={namespace}")
    if cursor:
        cmd.append(f"--cursor={cursor}")
    elif since_days:
        cmd.append(f"--since=-{since_days}d")
    for i, match in enumerate(matches):
        if i:
            cmd.append("+")  # journalctl ORs the groups around "+"
        cmd.append(match)
    return cmd


def _text(value: Any) -> str | None:
    """A journal field as text: a string, or the byte array journalctl gives for a value
    that is not UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
    return None


def entry_line(entry: dict[str, Any]) -> str | None:
    """`IDENTIFIER[PID]: MESSAGE` of one journal entry, as syslog would write it; None without
    a message."""
    message = _text(entry.get("MESSAGE"))
    if message is None:
        return None
    identifier = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM")) or "-"
    pid = _text(entry.get("SYSLOG_PID")) or _text(entry.get("_PID"))
    head = f"{identifier}[{pid}]" if pid else identifier
    return f"{head}: {message}"[:MAX_LINE]


class JournalFollower:
    def __init__(
        self,
        position_file: Path,
        namespace: str = "",
        matches: Sequence[str] = ("SYSLOG_FACILITY=2",),
        journalctl: str = "journalctl",
        clock: Callable[[], float] = time.monotonic,
        since_days: int = 0,
        positions: Positions | None = None,
    ) -> None:
        self.position_file = position_file
        self.positions = positions or FilePosition(position_file)
        self.since_days = since_days
        self.namespace = namespace
        self.matches = list(matches)
        self.journalctl = journalctl
        self.clock = clock
        self.process: subprocess.Popen[bytes] | None = None
        self.partial = b""
        self.cursor: str | None = None  # of the last entry returned
        self.started_from: str | None = None  # the cursor journalctl was started with
        self.first = True  # the next entry is the first of this journalctl
        self.not_before = 0.0  # no restart before this time (clock)
        self.vacuum_reported: str | None = None  # the lost cursor already reported
        self.stderr = b""  # the end of what journalctl said

    # -- position ------------------------------------------------------------------------

    def saved(self) -> str | None:
        try:
            cursor = json.loads(self.positions.read() or "")["cursor"]
        except (ValueError, KeyError, TypeError):
            return None
        return cursor if isinstance(cursor, str) and cursor else None

    def position(self) -> str | None:
        """The cursor of the last entry returned, as saved (None: none yet)."""
        return None if self.cursor is None else json.dumps({"cursor": self.cursor})

    def commit(self) -> None:
        """Remember that every line returned so far has been handled."""
        text = self.position()
        if text is not None:
            self.positions.write(text)

    def rewind(self) -> None:
        """Forget what was returned since the last commit (it could not be handled)."""
        self._stop()

    # -- reading -------------------------------------------------------------------------

    def _start(self) -> bool:
        if self.clock() < self.not_before:
            return False
        cursor = self.saved()
        cmd = command(self.journalctl, self.namespace, self.matches, cursor, self.since_days)
        try:
            self.process = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            log.error("cannot run %s: %s", self.journalctl, exc)
            self.not_before = self.clock() + RESTART_DELAY
            return False
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream in (self.process.stdout, self.process.stderr):
            fd = stream.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.partial, self.cursor, self.started_from, self.first = b"", cursor, cursor, True
        self.stderr = b""
        return True

    def _drain_stderr(self) -> None:
        """Keep the end of what journalctl says, so a full pipe never stops it."""
        assert self.process is not None and self.process.stderr is not None
        while True:
            try:
                chunk = os.read(self.process.stderr.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.stderr = (self.stderr + chunk)[-4096:]

    def _stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        self.process = None
        self.partial = b""

    def _exited(self) -> None:
        """journalctl ended: say why, and start it again later."""
        assert self.process is not None
        self._drain_stderr()
        words = self.stderr.decode("utf-8", "replace").strip()
        status = self.process.returncode
        if "cursor" in words.lower() and self.started_from:
            log.warning(
                "journalctl refused the saved cursor (%s); reading from the oldest entry",
                words[:200],
            )
            self.position_file.unlink(missing_ok=True)
        else:
            log.warning("journalctl exited with status %s: %s", status, words[:400] or "-")
        self._stop()
        self.not_before = self.clock() + RESTART_DELAY

    def _read_chunks(self) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        data = b""
        while len(data) < READ_SIZE:
            try:
                chunk = os.read(self.process.stdout.fileno(), READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:  # end of output: journalctl exited
                if self.process.poll() is None:
                    self.process.wait()
                break
            data += chunk
        return data

    def read_lines(self, limit: int = 5000) -> list[str]:
        """The lines of the entries journalctl printed since the last call (`limit` is
        LogFollower's; one call here reads at most READ_SIZE bytes, which bounds a batch)."""
        if self.process is None and not self._start():
            return []
        assert self.process is not None
        data = self.partial + self._read_chunks()
        self._drain_stderr()
        cut = data.rfind(b"\n")
        complete, self.partial = (data[: cut + 1], data[cut + 1 :]) if cut >= 0 else (b"", data)
        lines: list[str] = []
        for raw in complete.splitlines():
            line = self._entry(raw)
            if line is not None:
                lines.append(line)
        if not complete and self.process.poll() is not None:
            self._exited()
        return lines

    def _entry(self, raw: bytes) -> str | None:
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(entry, dict):
            return None
        cursor = entry.get("__CURSOR")
        first, self.first = self.first, False
        if first and self.started_from:
            if cursor == self.started_from:
                return None  # recorded before the restart
            if self.vacuum_reported != self.started_from:
                log.warning(
                    "NOQUEUE: the journal no longer holds the entry read up to (vacuumed or "
                    "deleted); entries logged between it and %s cannot be read; reading from "
                    "the oldest entry left",
                    _when(entry),
                )
                self.vacuum_reported = self.started_from
        if isinstance(cursor, str):
            self.cursor = cursor
        return entry_line(entry)

    def close(self) -> None:
        self._stop()


def _when(entry: dict[str, Any]) -> str:
    """The entry's time in UTC, for the log line about what was lost."""
    try:
        micro = int(entry["__REALTIME_TIMESTAMP"])
    except (KeyError, TypeError, ValueError):
        return "the oldest entry left"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(micro / 1e6))
