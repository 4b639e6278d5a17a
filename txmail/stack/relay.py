"""`txmail up`: pass every component's output on, named, to where log.destination says.

Each child process (components.py) writes its standard output and error into a pipe; one
thread per child reads it line by line and writes each line
  - with log.destination = "stderr" (the default) to the supervisor's own standard error, so
    journald (systemd's StandardError=journal) and `docker compose logs` show it: a text line
    led by the component's name (`milter: 2026-12-07T20:13:03.123Z INFO ...`), a JSON line as
    the component wrote it (its "component" field names it);
  - with log.destination = "files" to STATE/log/NAME.log (0640), reopened as soon as the file
    was moved away or removed, so logrotate's default create-and-move loses nothing and needs
    no signal (contrib/logrotate/txmail).
When standard error is journald's (systemd sets JOURNAL_STREAM to its device and inode), each
line on it starts with the syslog priority of its level (`<4>` for a warning), which journald
takes as the entry's PRIORITY and strips, so `journalctl -p warning` finds the warnings of
every component; a line without a level of its own (Redis's, Dovecot's) stays info.
With log.format = "json", a line that is not a JSON object (Redis and Dovecot write their own
text; a crash prints a traceback) becomes one, of that component (logs.wrap_line), so every
line on the output parses.

The supervisor's own lines go the same way to standard error, as component "up". With
"stderr", Postfix's own log (maillog_file, postfix.maillog), which stays a file for the maillog
follower, is followed too (tail_file) and its new lines pass on as component "postfix"; a JSON
line of it carries the queue id the line begins with.

Fails: a line that cannot be written (standard error closed, the disk full) is dropped, as
there is nowhere left to say so; the child never blocks on a dead reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import BinaryIO

from txmail import logs

MAX_LINE = 65_536  # longer lines are cut into pieces of this many bytes
# "Dec 07 20:21:05 host txmail/smtp[123]: 4jjtlj52NHzKD4d: to=<...>": the queue id
POSTFIX_QUEUE_ID = re.compile(r"^\S+\s+\d+ [\d:]+ \S+ [^:\s]+\[\d+\]: ([0-9A-Za-z]{10,}): ")
# syslog priorities (RFC 5424) of the logging levels, for journald's level prefix
PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def stderr_is_journal(fd: int = 2) -> bool:
    """Whether `fd` is the journald stream systemd gave this service (sd_journal_stream_fd's
    JOURNAL_STREAM=DEVICE:INODE, as systemd.exec(5) says to check)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(fd)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def level_of(line: str, log_format: str) -> str | None:
    """The level a txmail line names (logs.py's formats), upper case; None for others."""
    if log_format == "json":
        try:
            fields = json.loads(line)
        except ValueError:
            return None
        level = fields.get("level") if isinstance(fields, dict) else None
        return level.upper() if isinstance(level, str) else None
    words = line.split(" ", 2)
    return words[1] if len(words) > 2 and words[0].endswith("Z") else None


class StderrSink:
    """The supervisor's standard error, written whole lines at a time by many threads."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        with self.lock, contextlib.suppress(OSError):
            while data:
                data = data[os.write(self.fd, data) :]


class LogFile:
    """STATE/log/NAME.log, appended to, reopened when the path no longer is the open file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.opened: tuple[int, int] | None = None

    def open(self) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.fchmod(fd, 0o640)  # logs name recipients and login names
        stat = os.fstat(fd)
        self.fd, self.opened = fd, (stat.st_dev, stat.st_ino)

    def moved(self) -> bool:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self.opened

    def write_line(self, line: str) -> None:
        with contextlib.suppress(OSError):
            if self.fd is None or self.moved():
                self.open()
            assert self.fd is not None
            data = (line + "\n").encode("utf-8", "replace")
            while data:
                data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None


class Routing:
    """Where the lines of each component go (log.format, log.destination)."""

    def __init__(
        self, log_format: str, destination: str, log_dir: Path, sink: StderrSink | None = None
    ) -> None:
        self.format = log_format
        self.destination = destination
        self.log_dir = log_dir
        self.sink = sink or StderrSink()
        self.threads: list[threading.Thread] = []
        self.level_prefix = destination == "stderr" and stderr_is_journal(self.sink.fd)
        self.stopping = threading.Event()

    def where(self, component: str) -> str:
        """Where an operator finds a component's lines, for error messages."""
        if self.destination == "files":
            return str(self.log_dir / f"{component}.log")
        return (
            f"the lines led by `{component}:` above"
            if self.format == "text"
            else (f'the lines with "component": "{component}" above')
        )

    def shaped(self, component: str, line: str) -> str:
        """`line` as it goes out: JSON always an object; text led by the name on stderr."""
        level = level_of(line, self.format) if self.level_prefix else None
        if self.format == "json":
            if not is_json_object(line):
                line = logs.wrap_line(line, component)
        elif self.destination == "stderr":
            line = f"{component}: {line}"
        return self.prefixed(line, level)

    def prefixed(self, line: str, level: str | None) -> str:
        """`line` led by journald's priority prefix when standard error is the journal."""
        if not self.level_prefix or level not in PRIORITIES:
            return line
        return f"<{PRIORITIES[level]}>{line}"

    def follow(self, component: str, pipe: BinaryIO) -> threading.Thread:
        """Start the thread that passes what `component` writes into `pipe` on."""
        out: StderrSink | LogFile = (
            LogFile(self.log_dir / f"{component}.log") if self.destination == "files" else self.sink
        )

        def run() -> None:
            try:
                for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    out.write_line(self.shaped(component, line))
            except (OSError, ValueError):
                pass  # the pipe broke: the child is gone
            finally:
                pipe.close()
                if isinstance(out, LogFile):
                    out.close()

        thread = threading.Thread(target=run, name=f"log-{component}", daemon=True)
        thread.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return thread

    def tail_file(self, component: str, path: Path, grace: float = 1.0) -> threading.Thread:
        """Pass on the lines appended to `path` from now on (Postfix's maillog_file), across
        its rotation: once the path names a new file, the old one is read to its end (the
        writer may still add to it until it reopens: `grace` seconds of nothing), then the
        new one from its start."""

        def shaped(line: str) -> str:
            if self.format != "json":
                return self.shaped(component, line)
            found = POSTFIX_QUEUE_ID.match(line)
            fields = json.loads(logs.wrap_line(line, component))
            if found:
                fields["queue_id"] = found.group(1)
            return self.prefixed(json.dumps(fields, ensure_ascii=False), None)

        first: BinaryIO | None = None
        with contextlib.suppress(OSError):  # from its end now, before anything more is logged
            first = path.open("rb")
            first.seek(0, os.SEEK_END)

        def run() -> None:
            current = first
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                if current is None:  # there was no file yet: read the first one whole
                    with contextlib.suppress(OSError):
                        current = path.open("rb")
                    idle_since = time.monotonic()
                data = current.readline(MAX_LINE) if current else b""
                if data.endswith(b"\n") or len(data) >= MAX_LINE:
                    text = data.decode("utf-8", "replace").rstrip("\r\n")
                    self.sink.write_line(shaped(text))
                    idle_since = time.monotonic()
                    continue
                if current is not None and data:  # half a line: wait for its end
                    current.seek(-len(data), os.SEEK_CUR)
                if current is not None and self.replaced(path, current):
                    if time.monotonic() - idle_since >= grace:
                        current.close()
                        current = path.open("rb") if path.exists() else None
                        idle_since = time.monotonic()
                        continue
                self.stopping.wait(0.2)
            if current is not None:
                current.close()

        thread = threading.Thread(target=run, name=f"log-{component}", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def replaced(path: Path, current: BinaryIO) -> bool:
        """Whether `path` no longer names the open file (moved away, or truncated)."""
        try:
            now, opened = os.stat(path), os.fstat(current.fileno())
        except OSError:
            return False  # not there yet: keep reading the old one
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return True
        if now.st_size < current.tell():  # truncated (copytruncate): from its start
            current.seek(0)
        return False

    def drain(self, timeout: float = 2.0) -> None:
        """Wait a little (`timeout` seconds in all) for the threads to pass on the last lines
        of stopped children."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def take_over_logging(self) -> None:
        """The supervisor's own lines go out through the sink too, as component "up"."""
        root = logging.getLogger()
        for old in root.handlers[:]:
            if old.get_name() == logs.HANDLER_NAME:
                root.removeHandler(old)
        root.addHandler(SinkHandler(self))


class SinkHandler(logging.Handler):
    def __init__(self, routing: Routing) -> None:
        super().__init__()
        self.routing = routing
        self.setFormatter(logs.formatter(routing.format, "up"))
        self.set_name(logs.HANDLER_NAME)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)
            return
        for line in text.split("\n"):
            # The supervisor's lines always reach its standard error, even with files.
            if self.routing.format == "json":
                shaped = line if is_json_object(line) else logs.wrap_line(line, "up")
            else:
                shaped = f"up: {line}"
            self.routing.sink.write_line(self.routing.prefixed(shaped, record.levelname))


def is_json_object(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
