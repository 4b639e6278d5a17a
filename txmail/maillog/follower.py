"""Follow a log file across restarts and rotation, by inode and byte offset.

DESCRIPTION
    LogFollower reads complete lines appended to `path`. Its position is (device, inode, byte
    offset); the caller saves it with commit() after it has dealt with the lines it was given,
    so a restart resumes exactly after the last line that was handled (lines handled again
    after a crash are harmless: events are recorded once per message, recipient and kind).

    The file is Postfix's maillog_file or the file a syslog daemon writes mail to
    (/var/log/mail.log); see maillog.source and maillog.path.

    Rotation (`postfix logrotate`, logrotate's create mode): when `path` names another inode,
    the old file is read to its end through the descriptor still open, then the new file is
    read from its start. A logger that writes through its own descriptor (rsyslog until
    logrotate's postrotate HUP) may still add lines to the old file after the new one
    appeared, so the old one is left only once it is at its end and gave nothing for
    `rotate_grace` seconds (counted from the rotation being seen or from the last bytes it
    gave, whichever is later). The file left is watched for LEFT_WATCH seconds more: if it
    still grows, the follower says how many bytes it did not read. It does not go back for
    them: the lines of the new file after them were already handled and their position
    saved, so reading them then would give a message's events out of order, and the saved
    position (one file, one offset) cannot point back into them, so a rewind or a restart
    would lose them anyway.

    When the follower was down during a rotation, the saved inode is looked for among the
    files next to `path` whose names start with its name (Postfix renames maillog to
    maillog.YYYYMMDD-HHMMSS, logrotate mail.log to mail.log.1) and its rest is read first.
    A file that became shorter than the saved offset was truncated (copytruncate) and is
    read from its start.

    The saved position also holds a fingerprint of the bytes just before its offset (the last
    TAIL bytes read, their length and SHA-256). A machine crash can take back more of the log
    (not fsynced by postlogd or syslog) than of the position (Redis under appendfsync always
    or everysec), and Postfix may write new lines past the old offset before the follower
    starts: the file is then long enough, but other bytes stand before the offset. When the
    fingerprint does not match, the follower says so and reads the file from its start
    (replayed lines are recorded once: the event scripts' "seen" marks). A position saved
    before fingerprints were kept is trusted as it is.

WRITES
    The position, JSON {"device", "inode", "offset", "tail_len", "tail_sha256"}: through `positions`
    (txmail.maillog.position), by default the position file, replaced atomically (write and
    rename), so a crash never leaves half a position; in Redis, with the events of the lines
    before it.

FAILURE
    A missing log file is waited for (Postfix creates it on its first line). A rotated file
    that is gone (compressed, deleted) before the follower could finish it is logged: what it
    still held cannot be read. So is a rotated file that ends in half a line when it is left,
    or that grew after it was left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from txmail.maillog.position import FilePosition, Positions

log = logging.getLogger("txmail.maillog")

READ_SIZE = 1 << 20
TAIL = 256  # bytes before the offset whose fingerprint is saved with it (module text)
COMPRESSED = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"})
LEFT_WATCH = 30.0  # seconds a rotated file that was left is still watched for growth


@dataclass(frozen=True)
class Position:
    device: int
    inode: int
    offset: int
    tail_len: int = 0  # the fingerprint of the bytes before `offset` (0: none was saved)
    tail_sha256: str = ""


def fingerprint(tail: bytes) -> str:
    return hashlib.sha256(tail).hexdigest()


@dataclass
class LeftFile:
    """A rotated file the follower went on from, kept open to see whether it still grows."""

    handle: IO[bytes]
    position: Position  # the end of the last line read from it
    size: int  # what had been read of it when it was left
    left_at: float


class LogFollower:
    def __init__(
        self,
        path: Path,
        position_file: Path,
        rotate_grace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        positions: Positions | None = None,
    ) -> None:
        self.path = path
        self.position_file = position_file
        self.positions = positions or FilePosition(position_file)
        self.rotate_grace = rotate_grace
        self.clock = clock
        self.rotation_seen: float | None = None  # when `path` was seen naming another file
        self.last_data: float | None = None  # since the rotation: when the old file last gave bytes
        self.left: LeftFile | None = None
        self.pending: list[Path] = []  # rotated files to read after this one, before `path`
        self.handle: IO[bytes] | None = None
        self.device = 0
        self.inode = 0
        self.offset = 0  # of the first byte not yet returned as part of a complete line
        self.partial = b""
        self.tail = b""  # the last TAIL bytes before `offset` (module text)
        self.resumed = False  # said where it resumes (once a process, not after each rewind)

    # -- position ------------------------------------------------------------------------

    def saved(self) -> Position | None:
        text = self.positions.read()
        try:
            raw = json.loads(text or "")
            return Position(
                int(raw["device"]),
                int(raw["inode"]),
                int(raw["offset"]),
                int(raw.get("tail_len", 0)),
                str(raw.get("tail_sha256", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def position(self) -> str | None:
        """The position after the last line returned, as saved (None: no file open)."""
        if self.handle is None:
            return None
        return json.dumps(
            {
                "device": self.device,
                "inode": self.inode,
                "offset": self.offset,
                "tail_len": len(self.tail),
                "tail_sha256": fingerprint(self.tail),
            }
        )

    def commit(self) -> None:
        """Remember that every line returned so far has been handled."""
        text = self.position()
        if text is not None:
            self.positions.write(text)

    def rewind(self) -> None:
        """Forget what was returned since the last commit (it could not be handled)."""
        self._close()

    # -- reading -------------------------------------------------------------------------

    def _close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle = None
        self.partial = b""
        self.rotation_seen = None
        self.last_data = None

    def _leave(self) -> None:
        """Go on from the rotated file (at its end, quiet for `rotate_grace` seconds), keeping
        its descriptor to notice if the logger still writes to it."""
        assert self.handle is not None
        if self.partial:
            log.warning(
                "the rotated log (inode %d) ends in %d bytes without a line end at offset %d; "
                "they are not read",
                self.inode,
                len(self.partial),
                self.offset,
            )
        self._watch_left(stop=True)
        self.left = LeftFile(
            self.handle,
            Position(self.device, self.inode, self.offset),
            self.offset + len(self.partial),  # so bytes written since the last read count too
            self.clock(),
        )
        self.handle = None
        self._close()

    def _watch_left(self, stop: bool = False) -> None:
        """Say once if the file that was left grew; stop watching after LEFT_WATCH seconds."""
        if self.left is None:
            return
        left = self.left
        size = os.fstat(left.handle.fileno()).st_size
        if size > left.size:
            where = self._rotated_file(left.position)
            log.warning(
                "the rotated log %s (inode %d) grew after the follower had gone on to the next "
                "file: %d bytes after offset %d were not read; the logger wrote to it after "
                "more than maillog.rotate_grace (%g s) of silence: raise it, or make the "
                "logger reopen its log sooner after rotation",
                where or "(no longer next to the log)",
                left.position.inode,
                size - left.position.offset,
                left.position.offset,
                self.rotate_grace,
            )
        elif not stop and self.clock() - left.left_at < LEFT_WATCH:
            return
        left.handle.close()
        self.left = None

    def _open(self, path: Path, offset: int, saved: Position | None = None) -> bool:
        """Open `path` at `offset`; `saved`: the position it comes from, whose fingerprint
        the bytes before `offset` must match (module text)."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return False
        st = os.fstat(handle.fileno())
        tail = b""
        if st.st_size < offset:
            log.warning(
                "%s is shorter than the saved offset %d: truncated, reading it from the start",
                path,
                offset,
            )
            offset = 0
        elif offset > 0:
            size = min(offset, TAIL) if saved is None or not saved.tail_len else saved.tail_len
            handle.seek(offset - min(size, offset))
            tail = handle.read(min(size, offset))
            if (
                saved is not None
                and saved.tail_len
                and (saved.tail_len > offset or fingerprint(tail) != saved.tail_sha256)
            ):
                log.warning(
                    "%s does not hold, before the saved offset %d, the bytes last read there "
                    "(the log lost its end in a crash and was written again, or was replaced): "
                    "reading it from the start; lines already recorded are not recorded twice",
                    path,
                    offset,
                )
                offset, tail = 0, b""
        handle.seek(offset)
        self.handle, self.device, self.inode, self.offset = handle, st.st_dev, st.st_ino, offset
        self.partial = b""
        self.tail = tail[-TAIL:]
        return True

    def _rotated_file(self, position: Position) -> Path | None:
        """The renamed old log that still has inode `position.inode`."""
        for candidate in sorted(self.path.parent.glob(self.path.name + "*")):
            try:
                st = candidate.stat()
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (
                position.inode,
                position.device,
            ) and candidate != self.path:
                return candidate
        return None

    def _rotated_after(self, old: Path) -> list[Path]:
        """Files rotated after `old` and before the current log, oldest first: when the log
        was rotated twice while the follower was down (mail.log.1 became mail.log.2 and a
        new mail.log.1 came), the newer one is read after the rest of `old`. Compressed
        files (.gz, .xz, ...) cannot be followed and are left out."""
        try:
            since = old.stat().st_mtime
            current = self.path.stat()
        except OSError:
            return []
        found = []
        for candidate in self.path.parent.glob(self.path.name + "*"):
            if candidate in (old, self.path) or candidate.suffix in COMPRESSED:
                continue
            try:
                st = candidate.stat()
            except OSError:
                continue
            if st.st_mtime >= since and (st.st_ino, st.st_dev) != (current.st_ino, current.st_dev):
                found.append((st.st_mtime, candidate))
        return [path for _, path in sorted(found)]

    def _resume(self) -> bool:
        """Open the file the saved position points into (or the log itself)."""
        position = self.saved()
        self.pending = []
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if position is None:
            return self._open(self.path, 0)
        if st is not None and (st.st_ino, st.st_dev) == (position.inode, position.device):
            if not self.resumed:
                log.info("resuming %s at offset %d", self.path, position.offset)
                self.resumed = True
            return self._open(self.path, position.offset, position)
        old = self._rotated_file(position)
        if old is not None:
            log.info("resuming in the rotated log %s at offset %d", old, position.offset)
            self.pending = self._rotated_after(old)
            return self._open(old, position.offset, position)
        log.warning(
            "the log read up to offset %d (inode %d) is gone; lines it held after that "
            "offset cannot be read; reading %s from the start",
            position.offset,
            position.inode,
            self.path,
        )
        return self._open(self.path, 0)

    def _rotated_away(self) -> bool:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False  # renamed and not yet re-created: keep reading the old one
        return (st.st_ino, st.st_dev) != (self.inode, self.device)

    def read_lines(self, limit: int = 5000) -> list[str]:
        """Complete lines appended since the last call (at most about `limit`)."""
        self._watch_left()
        if self.handle is None and not self._resume():
            return []
        assert self.handle is not None
        if self.rotation_seen is None and self._rotated_away():
            self.rotation_seen = self.last_data = self.clock()
        consumed = self.offset + len(self.partial)
        lines = self._read_available(limit)
        if self.rotation_seen is not None and self.offset + len(self.partial) != consumed:
            self.last_data = self.clock()
        if lines:
            return lines
        if self.rotation_seen is not None:
            assert self.last_data is not None
            if self.clock() - self.last_data < self.rotate_grace:
                return []  # the logger may not have reopened the log yet
            # The old file is finished (at its end, quiet for a while): go on in the next one.
            self._leave()
            while self.pending:
                following = self.pending.pop(0)
                log.info("reading the rotated log %s from its start", following)
                if self._open(following, 0):
                    return self._read_available(limit)
            log.info("%s was rotated; reading the new file from its start", self.path)
            self._open(self.path, 0)
            return self._read_available(limit)
        st = os.fstat(self.handle.fileno())
        if st.st_size < self.offset + len(self.partial):
            log.warning("%s was truncated; reading it from the start", self.path)
            self.handle.seek(0)
            self.offset, self.partial, self.tail = 0, b"", b""
        return []

    def _read_available(self, limit: int) -> list[str]:
        assert self.handle is not None
        lines: list[str] = []
        while len(lines) < limit:
            chunk = self.handle.read(READ_SIZE)
            if not chunk:
                break
            data = self.partial + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                self.partial = data
                continue
            complete, self.partial = data[: cut + 1], data[cut + 1 :]
            self.offset += len(complete)
            self.tail = (self.tail + complete[-TAIL:])[-TAIL:]
            lines.extend(complete.decode("utf-8", "replace").splitlines())
        return lines

    def close(self) -> None:
        self._close()
        if self.left is not None:
            self.left.handle.close()
            self.left = None
