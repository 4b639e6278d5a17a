"""txmail bounces serve: the recorder the bounce pipe hands returned mail to.

Runs as root, like the other daemons: it holds the bounce key (to check each bounce address's
token) and the Redis connection, and records, keeps and forwards each returned mail exactly as
main.process() says. It never parses a returned mail itself, nor takes it apart for RET=HDRS:
a small pool of long-running parser workers (worker.py) does both, as the unprivileged
settings.user, with no key, no Redis connection, no right to read the key files or the Redis
socket, and bounded CPU seconds and address space. The parser is imported once per worker,
not once per mail.

Listens on the UNIX socket bounce_pipe.socket, in a folder of group settings.user (mode 0750)
that Postfix's pipe processes (that user) can enter. Each connection carries one returned mail
(handoff.py) and gets one answer line once the mail has been recorded, kept or forwarded. A
thread per connection: pipe(8) runs at most a few at once (master.cf maxproc); a connection
waits for a free worker, then for Redis and the forwarding SMTP session.

Workers: bounce_pipe.parser_workers slots, each holding one worker (or none, when one could
not be started: the next mail in that slot starts it). Each mail has bounce_pipe.parser_timeout
seconds of wall-clock time, its hand-over to the worker included, and parser_cpu_seconds of
CPU. A worker that does not take the mail in time, or had died before, is killed and a fresh
one takes the mail. A worker that runs past the timeout, is killed by a limit (SIGXCPU, a
signal after running out of memory), answers garbage, or whose parser raises on the mail, has
failed on the mail itself: the mail would fail the same way on every retry, so it is kept
unparsed for `txmail bounces unparsed` (unparsed.Unreadable) and answered 0, and the worker
(but for a parser that raised) replaced. Trouble that may pass (the worker's DNS lookup timed
out, it exited without a signal, none can be started) is answered 75. A worker that retires
(worker.MAX_MAILS, its CPU lifetime) is replaced before the next mail.

Trust: a worker parses mail of every account, up to worker.MAX_MAILS mails in its life, so a
parser exploited by one mail keeps parsing the mails that follow it in that worker. What such
a worker can do, and what it cannot:
  - misreport the outcome of each mail it parses (a bounce that was none, none where there
    was one, another reason): each such lie is bounded by that mail's token, which vouches
    for the one recipient of its queue file; outcomes for any other address are untrusted
    and capped (main.process());
  - not vouch for a complaint: complaint events, BounceReport.dkim_domains (which make a
    complaint a feedback loop's) and original_headers (whose Return-Path then names the
    message) are believed only from a worker that parsed no other mail before: such a report
    from a worker that did is parsed again by a fresh one, and every worker that reported
    one is retired after it;
  - not change the headers of a forwarded RET=HDRS cut: a cut that is longer than the mail
    or does not start with the mail's header block byte for byte is ignored (the mail is
    forwarded as it came, never cut here) and the worker killed; what follows the header
    block it can still change, as it could the mail's report;
  - not reach the keys, Redis, the recorder's socket or the configuration;
  - but it has network access (DNS, which the DKIM check of complaints needs), so it could
    send the later mails it sees, of any account, elsewhere, until it retires.

Logs:  the decisions of main.process() on standard error (component bounce-pipe under
       `txmail up`), a warning for anything on the socket that is not a request, for each
       worker killed or that cannot start, for each mail kept unparsed, and the workers' own
       tracebacks.
Durability: Postfix delivers each returned mail to the pipe and forgets it once the pipe exits
       0, which it does only after the recorder has answered, that is after Redis acknowledged
       the events (or the mail was kept unparsed). A mail delivered again (the pipe died after
       the recording, a 75 answered after part of it) records nothing twice: its events have
       stable ids (txmail.events). A lost second has no such guard. With redis.appendfsync =
       "always" (the default) Redis acknowledges only what is fsynced, so nothing is lost. With
       "everysec", a crash of the machine, or a kill -9 of Redis while a slow fsync holds its
       AOF write back (up to 2 s), loses the last writes: a synchronous bounce is recorded
       again from the maillog (Postfix logged status=bounced and the follower's position rolls
       back with Redis), but the events of an asynchronous DSN or a complaint from that second
       are gone, and so is the count of a forward (the mail is not forwarded twice: it is
       gone too). README, "Durability".
Fails: a request it cannot read gets 75 and a warning; a mail the parser failed on is kept and
       answered 0 (above); a mail it cannot record, or that met temporary trouble, gets 75
       (Postfix keeps it and retries). Nothing a peer or a worker sends stops the server.
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

import txmail
from txmail import reach, store
from txmail.bounce_pipe import forward, handoff, unparsed, worker
from txmail.bounce_pipe.parse import BounceReport
from txmail.bounce_pipe.report import handle
from txmail.config import BouncePipeSettings, RedisSettings, Settings
from txmail.errors import ConfigError, TemporaryFailure
from txmail.store import secrets

log = logging.getLogger("txmail.bounce_pipe")

READ_TIMEOUT = 60.0  # seconds a pipe process may take to send its request
MAX_HEAD = 20  # bytes of a worker's answer header (the length, in digits) before its newline
MAX_ANSWER = 16 * 1024 * 1024  # bytes of one worker's report, besides the RET=HDRS cut


class ParserFailed(TemporaryFailure):
    """No worker could parse the mail for a reason that may pass (none can start, its DNS
    lookup timed out, it exited without a signal): exit 75."""


Take = Callable[[bytes, str, str], tuple[int, str]]  # (mail, sender, recipient) -> exit, why


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.bounce_pipe.socket)


class NotTaken(Exception):
    """The worker did not take the mail: it was gone, or did not read it in time."""


def judges_complaints(report: BounceReport) -> bool:
    """Whether the report says something only a worker that parsed nothing else is believed
    about: a complaint, or DKIM signatures that could make one a feedback loop's."""
    return bool(report.dkim_domains) or any(e.kind == "complaint" for e in report.events)


class Worker:
    """One parser worker process (worker.py) and the frames to and from it."""

    def __init__(self, argv: list[str], settings_frame: bytes, user: str | None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            **worker.process_options(user),
        )
        self.buffer = bytearray()
        self.mails = 0
        self.usable = True  # False once it failed, retires, or may be stuck mid-frame
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        try:
            worker.write_frame(self.stdin, settings_frame)
            os.set_blocking(self.stdin.fileno(), False)  # from now on: _write(), bounded
        except OSError:
            self.close(kill=True)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def parse(self, raw: bytes, timeout: float) -> tuple[BounceReport, bool]:
        """(the report, whether the worker exits now), within `timeout` seconds, the hand-over
        included. NotTaken when it did not take the mail; unparsed.Unreadable when the parser
        failed on the mail itself; ParserFailed for trouble that may pass. After any of them
        `usable` says whether the worker may take another mail."""
        deadline = time.monotonic() + timeout
        self.mails += 1
        try:
            self._write(worker.frame(raw), deadline)
            head = self._read_head(deadline)
            # a report, and the mail cut to its headers in base64 (at most 4/3 of the mail)
            if not head.isdigit() or int(head) > MAX_ANSWER + 2 * len(raw):
                raise unparsed.Unreadable(
                    f"the parser worker answered garbage ({bytes(self.buffer[:40])!r})"
                )
            size = len(head) + 1 + int(head)
            self._read_until(lambda: len(self.buffer) >= size, deadline)
            payload = bytes(self.buffer[len(head) + 1 : size])
            del self.buffer[:size]
            try:
                report, retiring = worker.read_answer(payload)
            except worker.FrameError as exc:
                raise unparsed.Unreadable(f"the parser worker answered garbage ({exc})") from None
        except worker.ErrorAnswer as exc:  # the parser raised: the worker goes on
            self.usable = not exc.retiring
            if exc.temporary:
                raise ParserFailed(f"the parser met trouble that may pass: {exc}") from None
            raise unparsed.Unreadable(f"the parser raised on this mail: {exc}") from None
        except BaseException:
            self.usable = False
            raise
        self.usable = not retiring
        return report, retiring

    def _write(self, frame: bytes, deadline: float) -> None:
        """Write `frame` while the worker reads it; NotTaken when it stops reading for longer
        than is left of the deadline (a write to a pipe blocks once 64 KiB wait in it)."""
        fd = self.stdin.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        view = memoryview(frame)
        while view:
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise NotTaken(f"{self.exit_status()} before it took the mail") from None
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise NotTaken("did not take the mail within the parser timeout")

    def _read_head(self, deadline: float) -> bytes:
        """The answer's header line (its length), without its newline. Past MAX_HEAD bytes
        with no newline it is garbage: a bad worker cannot grow this process's memory, nor
        send a number int() refuses. Only the bytes read since the last look are scanned."""
        scanned = 0
        while True:
            newline = self.buffer.find(b"\n", scanned, MAX_HEAD + 1)
            if newline >= 0:
                return bytes(self.buffer[:newline])
            if len(self.buffer) > MAX_HEAD:
                raise unparsed.Unreadable(
                    "the parser worker answered garbage (no length "
                    f"in {bytes(self.buffer[: MAX_HEAD + 1])!r})"
                )
            scanned = len(self.buffer)
            self._read_more(deadline)

    def _read_until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            self._read_more(deadline)

    def _read_more(self, deadline: float) -> None:
        """Read what the worker has written; Unreadable past the deadline or when a limit
        ended it, ParserFailed when it exited by itself."""
        fd = self.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise unparsed.Unreadable(
                "the parser took longer than its timeout (bounce_pipe.parser_timeout)"
            )
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            self._reap()
            code = self.proc.returncode
            if code is not None and code < 0:  # a limit (SIGXCPU, SIGKILL) or a crash
                raise unparsed.Unreadable(
                    f"the parser worker was {self.exit_status()} while it parsed this mail"
                )
            raise ParserFailed(f"the parser worker {self.exit_status()}")
        self.buffer += chunk

    def _reap(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass  # closed its output but lives on: exit_status() says so

    def exit_status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def close(self, kill: bool = False) -> None:
        """End the process: at end of its input, or by SIGKILL (a worker in a runaway parse
        may hold no lock or state worth a grace period)."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass  # a pipe whose reader is gone, or unflushed bytes of a killed one
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Slot:
    """A place for one worker; None while none could be started."""

    def __init__(self, worker: Worker | None) -> None:
        self.worker = worker


class ParserPool:
    """bounce_pipe.parser_workers slots; parse() takes a free one, waiting if all are busy.
    A slot always goes back with a worker that may take a mail, or with none (started by the
    next mail that takes the slot)."""

    def __init__(self, settings: Settings, user: str | None) -> None:
        pipe = settings.bounce_pipe
        self.timeout = pipe.parser_timeout
        self.user = user
        self.argv = worker.command(sys.executable, pipe)
        # Everything the parser may need but the Redis URL (it may hold a password).
        self.settings_frame = json.dumps(asdict(replace(settings, redis=RedisSettings()))).encode()
        self.lock = threading.Lock()
        self.workers: list[Worker] = []
        self.idle: queue.LifoQueue[Slot] = queue.LifoQueue()  # the warmest first
        for _ in range(pipe.parser_workers):
            self.idle.put(Slot(self._start()))

    def _start(self) -> Worker:
        started = Worker(self.argv, self.settings_frame, self.user)
        with self.lock:
            self.workers.append(started)
        return started

    def _ready(self, slot: Slot) -> Worker:
        """The slot's worker, started now if it has none; ParserFailed when none starts."""
        if slot.worker is None:
            try:
                slot.worker = self._start()
            except (OSError, KeyError, subprocess.SubprocessError) as exc:
                log.error(
                    "NOQUEUE: a parser worker could not be started: %s: %s",
                    exc.__class__.__name__,
                    exc,
                )
                raise ParserFailed(
                    f"no parser worker could be started: {exc.__class__.__name__}: {exc}"
                ) from None
        return slot.worker

    def _end(self, slot: Slot, kill: bool) -> None:
        """End the slot's worker and start its successor; when that fails the slot stays
        empty and the next mail in it tries again."""
        old, slot.worker = slot.worker, None
        if old is not None:
            old.close(kill=kill)
            with self.lock:
                self.workers.remove(old)
        try:
            self._ready(slot)
        except ParserFailed:
            pass  # logged; retried by the next mail in this slot

    def pids(self) -> list[int]:
        with self.lock:
            return [w.pid for w in self.workers]

    def parse(self, raw: bytes) -> BounceReport:
        """The report of one returned mail (see the module text); unparsed.Unreadable when
        the parser failed on the mail itself, ParserFailed for trouble that may pass."""
        slot = self.idle.get()
        try:
            report, first = self._parse_in(slot, raw)
            if judges_complaints(report):
                if not first:  # the worker parsed other mail before: ask one that did not
                    log.info(
                        "NOQUEUE: a complaint report from a parser worker that parsed "
                        "other mail before; parsed again by a fresh one"
                    )
                    self._end(slot, kill=True)  # no grace for a worker not believed
                    report, first = self._parse_in(slot, raw)
                if judges_complaints(report):
                    self._end(slot, kill=True)  # it may lie about no later mail
            return report
        finally:
            self.idle.put(slot)

    def _parse_in(self, slot: Slot, raw: bytes) -> tuple[BounceReport, bool]:
        """The report of the slot's worker, and whether that worker parsed no mail before."""
        for _attempt in (1, 2):
            current = self._ready(slot)
            try:
                report, _retiring = current.parse(raw, self.timeout)
            except NotTaken as exc:  # the mail was not parsed: a fresh worker takes it
                log.warning("NOQUEUE: parser worker %d %s; killed and replaced", current.pid, exc)
                self._end(slot, kill=True)
                continue
            except (unparsed.Unreadable, ParserFailed) as exc:
                if not current.usable:
                    log.warning(
                        "NOQUEUE: %s; parser worker %d killed and replaced", exc, current.pid
                    )
                    self._end(slot, kill=True)
                raise
            except BaseException:
                self._end(slot, kill=True)  # a bug here: never hand the worker on
                raise
            first = current.mails == 1
            if report.headers_only and not forward.cut_is_plausible(raw, report.headers_only):
                # an honest worker's cut keeps the mail's header block and is shorter
                log.warning(
                    "NOQUEUE: parser worker %d sent a RET=HDRS cut that cannot be the "
                    "mail's (longer than it, or its header block changed): ignored, "
                    "the mail is forwarded as it came; killed and replaced",
                    current.pid,
                )
                self._end(slot, kill=True)
                return replace(report, headers_only=b""), first
            if not current.usable:  # it retires
                self._end(slot, kill=False)
            return report, first
        raise ParserFailed("the parser workers do not take the mail (two tried)")

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
    if os.geteuid() == 0:
        user: str | None = settings.user
        group = pwd.getpwnam(settings.user).pw_gid
    else:  # a developer's own run: nobody to switch to
        user, group = None, -1
        log.warning(
            "not run as root: the parser workers run as this process's user, "
            "which can read the keys"
        )
    pool = ParserPool(settings, user)
    client = store.connect(settings)
    secrets.accepted(settings, client, "bounce_key_file")  # a key it cannot get: say so now

    def take(raw: bytes, sender: str, recipient: str) -> tuple[int, str]:
        return handle(settings, client, raw, sender, recipient, pool.parse)

    path = socket_path(settings)
    server = Server(path, take, settings.bounce_pipe.max_message_bytes, group)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "listening on unix:%s (pid %d); %d parser workers as %s (pids %s)",
        path,
        os.getpid(),
        len(pool.pids()),
        user or "this user",
        " ".join(str(p) for p in pool.pids()),
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        pool.close()
        client.close()
        log.info("stopped")


INTERPRETER_TIMEOUT = 60.0  # seconds a trial parser worker may take to load


def check_interpreter(
    user: str, python: str = sys.executable, pipe: BouncePipeSettings | None = None
) -> None:
    """Refuse to start when a bounce parser worker cannot start: start one exactly as `txmail
    bounces serve` does (worker.command() and worker.process_options(): the uid of `user`,
    group nogroup, no supplementary group, the worker's own limits), give it no mail, and
    require that it loads the parser and exits 0. Postfix's bounce pipe runs as `user` with
    its own group, which can reach at least what nogroup can."""
    check_interpreter_reach(user, python)
    argv = worker.command(python, pipe or BouncePipeSettings())
    try:
        done = subprocess.run(
            argv,
            input=b"",
            capture_output=True,
            timeout=INTERPRETER_TIMEOUT,
            check=False,
            **worker.process_options(user),
        )
    except OSError as exc:  # exec failed: the interpreter or a folder above it is closed
        raise ConfigError(
            f"the user {user} cannot run the Python interpreter {python} ({exc.strerror}), "
            "which Postfix's bounce pipe and the bounce parsers run as that user (the parsers "
            "with group nogroup): build the venv from a Python every user can run "
            "(`/usr/bin/python3 -m venv .venv`, as the Makefile does), not one under a "
            "mode-0700 home directory or a folder only some groups may enter"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"a bounce parser started as the user {user} with {python} had not loaded txmail "
            f"after {INTERPRETER_TIMEOUT:g} seconds: install the venv and txmail on a local "
            "disk every user can read, or find what makes that Python hang"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        last = (lines or [f"exit status {done.returncode}"])[-1]
        raise ConfigError(
            f"the user {user} can run {python} but a bounce parser started with it as that "
            f"user (group nogroup) fails ({last[:200]}): install txmail where every user can "
            "read it (not under a mode-0700 home directory)"
        )


def check_interpreter_reach(user: str, python: str = sys.executable) -> None:
    """Refuse, before starting anything, an interpreter, venv or txmail package behind a
    folder that `user` with group nogroup may not pass (reach.py), naming that folder: a
    checkout and its venv under /root, or a venv made from a pyenv Python there. Only
    folders are judged here (`txmail init` has no user to try it as yet); check_interpreter
    then tries a worker."""
    who = reach.passer(user, worker.nogroup())
    run_as = (
        "which Postfix's bounce pipe and the bounce parsers run as that user (the parsers "
        "with group nogroup)"
    )
    ours = [python]
    if python == sys.executable:  # what a worker imports: this venv and this txmail
        ours += [sys.prefix, str(Path(txmail.__file__).parent)]
    for path in ours:
        folder = reach.closed_folder(path, who)
        if folder is None:
            continue
        if any(reach.holds(folder, p) for p in ours[1:]):  # the checkout or its venv
            fix = (
                f"move the checkout and its venv out of {folder} (to /srv/txmail, say) or let "
                f"every user pass with `chmod o+x {folder}`"
            )
        else:  # only the Python the venv was made from (a pyenv under /root)
            fix = (
                "build the venv from a Python every user can run (`/usr/bin/python3 -m venv "
                ".venv`, as the Makefile does)"
            )
        if path == python:
            what = f"cannot run the Python interpreter {python}"
        else:
            what = f"cannot load txmail from {path}"
        raise ConfigError(
            f"the user {user} {what}, {run_as}, as it may not pass {reach.describe(folder)}: {fix}"
        )


def check_start(settings: Settings) -> None:
    """`txmail up`'s start-up check of the bounce parser (check_interpreter as the pipe's user)."""
    check_interpreter(settings.user, pipe=settings.bounce_pipe)
