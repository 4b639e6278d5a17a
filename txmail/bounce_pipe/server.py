"""txmail bounces serve: the recorder the bounce pipe hands returned mail to.

Runs as root, like the other daemons: it holds the bounce key (to check each bounce address's
token) and the Redis connection, and records, keeps and forwards each returned mail exactly as
main.process() says. It never parses a returned mail itself: a small pool of long-running
parser workers (worker.py) does, as the unprivileged settings.user, with no key, no Redis
connection, no right to read the key files or the Redis socket, and bounded CPU seconds and
address space. The parser is imported once per worker, not once per mail.

Listens on the UNIX socket bounce_pipe.socket, in a folder of group settings.user (mode 0750)
that Postfix's pipe processes (that user) can enter. Each connection carries one returned mail
(handoff.py) and gets one answer line once the mail has been recorded, kept or forwarded. A
thread per connection: pipe(8) runs at most a few at once (master.cf maxproc); a connection
waits for a free worker, then for Redis and the forwarding SMTP session.

Workers: bounce_pipe.parser_workers of them. Each mail has bounce_pipe.parser_timeout seconds
of wall-clock time and parser_cpu_seconds of CPU; a worker past either is killed and replaced,
and the mail answered 75. A worker that dies is replaced; one that retires (worker.MAX_MAILS,
its CPU lifetime) is replaced before the next mail.

Logs:  the decisions of main.process() on standard error (STATE/log/bounce-pipe.log under
       `txmail up`), a warning for anything on the socket that is not a request and for each
       worker killed, and the workers' own tracebacks.
Fails: a request it cannot read gets 75 and a warning; a mail it cannot parse (timeout, worker
       killed, parser bug) or record gets 75 (Postfix keeps it and retries). Nothing a peer
       sends stops the server.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import queue
import select
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from txmail import store
from txmail.bounce_pipe import handoff, worker
from txmail.bounce_pipe.main import handle
from txmail.bounce_pipe.parse import BounceReport
from txmail.config import RedisSettings, Settings
from txmail.errors import TemporaryFailure

log = logging.getLogger("txmail.bounce_pipe")

READ_TIMEOUT = 60.0  # seconds a pipe process may take to send its request
MAX_ANSWER = 16 * 1024 * 1024  # bytes of one worker's report


class ParserFailed(TemporaryFailure):
    """A worker did not return a report in time, died, or its parser raised: exit 75."""


class ParserRaised(ParserFailed):
    """The parser raised on this mail (a bug); the worker answered and goes on."""


Take = Callable[[bytes, str, str], tuple[int, str]]  # (mail, sender, recipient) -> exit, why


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.bounce_pipe.socket)


class Worker:
    """One parser worker process (worker.py) and the frames to and from it."""

    def __init__(self, argv: list[str], settings_frame: bytes, user: str | None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None, **worker.process_options(user))
        self.buffer = bytearray()
        self.mails = 0
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        try:
            worker.write_frame(self.stdin, settings_frame)
        except OSError:
            self.close(kill=True)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def parse(self, raw: bytes, timeout: float) -> tuple[BounceReport, bool]:
        """(the report, whether the worker exits now). ParserFailed when it takes longer than
        `timeout` seconds, dies, or its parser raises; BrokenPipeError when it was gone
        before it took the mail."""
        deadline = time.monotonic() + timeout
        worker.write_frame(self.stdin, raw)
        self.mails += 1
        line = self._read_until(lambda: b"\n" in self.buffer, deadline)
        head, _, _ = bytes(self.buffer).partition(b"\n")
        if not head.isdigit() or int(head) > MAX_ANSWER:
            raise ParserFailed(f"the parser worker sent no frame ({line[:40]!r})")
        size = len(head) + 1 + int(head)
        self._read_until(lambda: len(self.buffer) >= size, deadline)
        payload = bytes(self.buffer[len(head) + 1:size])
        del self.buffer[:size]
        try:
            return worker.read_answer(payload)
        except ValueError as exc:  # the parser raised on this mail: the worker goes on
            raise ParserRaised(str(exc)) from None

    def _read_until(self, done: Callable[[], bool], deadline: float) -> bytes:
        fd = self.stdout.fileno()
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ParserFailed("the parser worker took longer than its timeout")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise ParserFailed(f"the parser worker died ({self.exit_status()})")
            self.buffer += chunk
        return bytes(self.buffer[:60])

    def exit_status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def close(self, kill: bool = False) -> None:
        """End the process: at end of its input, or by SIGKILL (a worker in a runaway parse
        may hold no lock or state worth a grace period)."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass  # a pipe whose reader is gone
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class ParserPool:
    """bounce_pipe.parser_workers workers; parse() takes a free one, waiting if all are busy."""

    def __init__(self, settings: Settings, user: str | None) -> None:
        pipe = settings.bounce_pipe
        self.timeout = pipe.parser_timeout
        self.user = user
        self.argv = worker.command(sys.executable, pipe)
        # Everything the parser may need but the Redis URL (it may hold a password).
        self.settings_frame = json.dumps(asdict(replace(settings, redis=RedisSettings()))
                                         ).encode()
        self.lock = threading.Lock()
        self.workers: list[Worker] = []
        self.idle: queue.LifoQueue[Worker] = queue.LifoQueue()  # the warmest first
        for _ in range(pipe.parser_workers):
            self.idle.put(self._start())

    def _start(self) -> Worker:
        started = Worker(self.argv, self.settings_frame, self.user)
        with self.lock:
            self.workers.append(started)
        return started

    def _replace(self, old: Worker, kill: bool) -> Worker:
        old.close(kill=kill)
        with self.lock:
            self.workers.remove(old)
        return self._start()

    def pids(self) -> list[int]:
        with self.lock:
            return [w.pid for w in self.workers]

    def parse(self, raw: bytes) -> BounceReport:
        current = self.idle.get()
        try:
            for attempt in (1, 2):
                try:
                    report, retiring = current.parse(raw, self.timeout)
                except BrokenPipeError:  # it died between two mails: a fresh one takes it
                    log.warning("NOQUEUE: parser worker %d %s before it took a mail; "
                                "replaced", current.pid, current.exit_status())
                    current = self._replace(current, kill=True)
                    if attempt == 2:
                        raise ParserFailed("the parser workers die before they take a mail"
                                           ) from None
                    continue
                except ParserRaised:
                    raise
                except ParserFailed as exc:
                    log.warning("NOQUEUE: %s; parser worker %d killed and replaced", exc,
                                current.pid)
                    current = self._replace(current, kill=True)
                    raise
                if retiring:
                    current = self._replace(current, kill=False)
                return report
            raise ParserFailed("unreachable")
        finally:
            self.idle.put(current)

    def close(self) -> None:
        with self.lock:
            workers = list(self.workers)
        for each in workers:
            each.close()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, take: Take, max_bytes: int, group: int = -1) -> None:
        """Listen on `path`, a socket the pipe's user (`group`) may connect to, nobody else."""
        self.take = take
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        path.unlink(missing_ok=True)
        super().__init__(str(path), Handler)
        os.chown(path, -1, group)
        path.chmod(0o660)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug in one request: logged; its pipe process sees the connection close and exits
        75 (Postfix retries), and the server goes on."""
        log.exception("NOQUEUE: internal error while taking a returned mail")


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def setup(self) -> None:
        self.request.settimeout(READ_TIMEOUT)
        super().setup()

    def handle(self) -> None:
        try:
            sender, recipient, raw = handoff.read_request(self.rfile, self.server.max_bytes)
        except handoff.NoRequest:
            return  # `txmail up` checking that the socket answers
        except (handoff.BadRequest, OSError) as exc:
            log.warning("NOQUEUE: %s", exc)
            self._answer(handoff.EX_TEMPFAIL, str(exc))
            return
        self.request.settimeout(None)  # recording may wait on Redis or the forwarding SMTP
        code, why = self.server.take(raw, sender, recipient)
        self._answer(code, why)

    def _answer(self, code: int, why: str) -> None:
        try:
            self.wfile.write(handoff.answer(code, why))
        except OSError as exc:  # the pipe process went away: Postfix retries the mail
            log.warning("NOQUEUE: the pipe process left before its answer (%s)", exc)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    settings.read_secret("bounce_key_file")  # a key it cannot read: say so now, not per mail
    if os.geteuid() == 0:
        user: str | None = settings.user
        group = pwd.getpwnam(settings.user).pw_gid
    else:  # a developer's own run: nobody to switch to
        user, group = None, -1
        log.warning("not run as root: the parser workers run as this process's user, "
                    "which can read the keys")
    pool = ParserPool(settings, user)
    client = store.connect(settings)

    def take(raw: bytes, sender: str, recipient: str) -> tuple[int, str]:
        return handle(settings, client, raw, sender, recipient, pool.parse)

    path = socket_path(settings)
    server = Server(path, take, settings.bounce_pipe.max_message_bytes, group)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on unix:%s (pid %d); %d parser workers as %s (pids %s)", path,
             os.getpid(), len(pool.pids()), user or "this user",
             " ".join(str(p) for p in pool.pids()))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        pool.close()
        client.close()
        log.info("stopped")
