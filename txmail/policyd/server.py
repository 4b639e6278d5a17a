"""txmail policyd: the asyncio server Postfix's check_policy_service talks to.

Listens on the UNIX socket policyd.socket (and on policyd.listen over TCP when set), bound once
and served by policyd.workers processes, each on a uvloop event loop (one by default: it answers
thousands of requests a second, and on a 2-core node a second worker made the stack slower, not
faster). Each connection carries many requests, one after another (Postfix keeps its policy
connections open); each request gets one decision: decide.plan(), one atomic call of
policy_check.lua (over link.Link; the calls of one loop turn go out in one write), and
decide.verdict(). One log line per refusal or tempfail, starting with the queue id as Postfix's
own do; one per permit too with policyd.log_permits (or --verbose). /metrics counts every
decision.

Remembers per account the room its last check left, so that most RCPT requests of a busy
account are answered without Redis (decide.Room; END-OF-MESSAGE always asks Redis). Remembers
per connection the recipients let through in the current transaction (so the RCPT
check asks room for one more) and the message it passed last at END-OF-MESSAGE: when the same
Postfix process sends its next request or closes, that message's fate is sealed, so a hold the
milter did not turn into counted usage (the message was refused after all) is given back.

Keeps accounts in the shared accounts.cache and drops them whenever PREFIX accounts:version moves
(checked every policyd.settings_refresh seconds).

Fails: Redis down or slow, or any bug: `451 4.3.0` (never a permit, never a 5xx). Garbage, an
attribute over 512 characters, a block without request=smtpd_access_policy, a request over 32 KB
or a silent peer: a warning and the connection is closed. Nothing a peer sends stops the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import uvloop
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from txmail import store
from txmail.accounts import usage
from txmail.accounts.cache import AccountCache
from txmail.config import Settings
from txmail.policyd import decide, link, protocol
from txmail.store import Keys, scripts
from txmail.store.keys import ACCOUNT_NAME

log = logging.getLogger("txmail.policyd")

AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
Call = tuple[Any, list[str], list[Any], "asyncio.Future[Any]"]  # script, keys, args, answer
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def connect(settings: Settings) -> AsyncClient:
    """An asyncio client for the configured Redis or Redis Cluster, failing fast."""
    url = store.effective_url(settings)
    timeout = settings.redis.timeout
    if settings.redis.cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    # One immediate retry, as store.connect(): Redis down means 451 now, not after 4 s.
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=AsyncRetry(NoBackoff(), 1),
    )


class ScriptBatch:
    """Lua script calls through redis-py, for a Redis Cluster or a Redis over TLS (a single
    plain Redis gets a link.Link instead): one pipeline at a time per worker, the calls that
    arrive while a batch is out forming the next one. The cluster pipeline routes each call to
    the node of its account's slot. Each call is still its own atomic script run. A server that
    lost a script (restarted, flushed) gets it again, as Script.__call__ does.
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.pending: list[Call] = []
        self.running = False

    def __call__(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((script, keys, args, future))
        if not self.running:
            self.running = True  # the task starts a turn later: concurrent calls join in
            loop.create_task(self._drain()).add_done_callback(_consume)
        return future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await self._run(batch)
        finally:
            self.running = False

    async def _run(self, batch: list[Call]) -> None:
        try:
            if len(batch) == 1:
                script, keys, args, _ = batch[0]
                results = [await script(keys=keys, args=args)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            for n, result in enumerate(results):
                if isinstance(result, redis.exceptions.NoScriptError):
                    script, keys, args, _ = batch[n]
                    results[n] = await script(keys=keys, args=args)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure, nobody hangs
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Nothing of its own to close: the calls use the client's connections."""


class LinkScripts:
    """Lua script calls over a link.Link to a single Redis: EVALSHA, and EVAL with the
    script's text when the server has lost it (restarted, flushed)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.link = link.Link(url, timeout)

    async def __call__(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.link.call(
                link.command("EVALSHA", script.sha, str(len(keys)), *keys, *args)
            )
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.link.call(
            link.command("EVAL", script.script, str(len(keys)), *keys, *args)
        )

    def close(self) -> None:
        self.link.close()


def scripts_for(settings: Settings, client: AsyncClient) -> ScriptBatch | LinkScripts:
    url = store.effective_url(settings)
    if settings.redis.cluster or not link.Link.usable(url):
        return ScriptBatch(client)
    return LinkScripts(url, settings.redis.timeout)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


@dataclass(eq=False)
class Connection:
    """What policyd remembers about one Postfix policy connection."""

    writer: asyncio.StreamWriter
    peer: str
    last_request: float  # loop time
    instance: str = ""
    transaction_recipients: int = 0
    passed: tuple[str, str] | None = None  # (account, queue id) passed last at END-OF-MESSAGE


class PolicyServer:
    def __init__(
        self, settings: Settings, client: AsyncClient, keys: Keys, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.client = client
        self.keys = keys
        self.clock = clock
        self.accounts: AccountCache[decide.AccountState] = AccountCache.polling(
            self._read_account, lambda: client.get(keys.accounts_version)
        )
        self.rooms: dict[str, decide.Room] = {}  # by account: what its last check left free
        self.decisions: collections.Counter[str] = collections.Counter()  # by verb, not yet
        # added to PREFIX stats:policy (flush_decisions)
        self.scripts = scripts_for(settings, client)
        self.check_script = scripts.get(client, "policy_check")
        self.release_script = scripts.get(client, "policy_release")
        self.hold_seconds = settings.policyd.hold_seconds
        self.idle_timeout = settings.policyd.idle_timeout
        self.log_permits = settings.policyd.log_permits
        self.trusted_port = settings.trusted.port
        self.trusted_account = settings.trusted.account
        self.background: set[asyncio.Task[Any]] = set()  # hold releases under way
        self.sessions: set[asyncio.Task[Any]] = set()  # one per connection
        self.connections: set[Connection] = set()

    # -- one connection -------------------------------------------------------------------

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        peer = _peer(writer)
        connection = Connection(writer, peer, loop.time())
        self.connections.add(connection)
        try:
            while True:
                try:
                    block = await reader.readuntil(protocol.SEPARATOR)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        log.warning("%s: connection closed in the middle of a request", peer)
                    return
                except asyncio.LimitOverrunError:
                    log.warning(
                        "%s: request over %d bytes; disconnecting", peer, protocol.MAX_REQUEST
                    )
                    return
                connection.last_request = loop.time()
                try:
                    request = protocol.parse_request(block)
                except protocol.ProtocolError as exc:
                    log.warning("%s: %s; disconnecting", peer, exc)
                    return
                action = await self.answer(request, connection)
                writer.write(protocol.encode_action(action.text))
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection lost: %s", peer, exc)
        finally:
            self.connections.discard(connection)
            if connection.passed is not None:
                self._release_later(*connection.passed)
            writer.close()

    async def _read_account(self, name: str) -> decide.AccountState | None:
        raw = await self.client.hgetall(self.keys.account(name))
        return decide.AccountState.from_hash(name, raw) if raw else None

    async def answer(self, request: decide.Request, connection: Connection) -> decide.Action:
        """The action for one request; never raises."""
        request = request.sent_as(self.trusted_port, self.trusted_account)
        if request.instance != connection.instance:
            connection.instance = request.instance
            connection.transaction_recipients = 0
        try:
            account_state = None
            if request.sasl_username and ACCOUNT_NAME.match(request.sasl_username):
                account_state = await self.accounts.get(request.sasl_username)
            plan = decide.plan(
                request, account_state, self.clock(), connection.transaction_recipients
            )
            room = (
                self.rooms.get(plan.account.name)
                if isinstance(plan, decide.Check) and not plan.hold
                else None
            )
            if room is not None and room.fits(plan):
                # Answered from the room the last check left (decide.py): no Redis. A hold
                # waiting to be given back stays for the next check that asks Redis.
                connection.transaction_recipients += 1
                action = decide.DUNNO
            else:
                action = await self._check(request, plan, connection)
        except redis.RedisError as exc:
            log.warning(
                "%s: tempfail: Redis unavailable (%s: %s)",
                request.queue_id or "NOQUEUE",
                exc.__class__.__name__,
                exc,
            )
            self.decisions[decide.TEMPFAIL.verb] += 1
            return decide.TEMPFAIL
        except Exception:  # noqa: BLE001 - a bug must cost a retry, never a permit or a crash
            log.exception("%s: tempfail: internal error", request.queue_id or "NOQUEUE")
            self.decisions[decide.TEMPFAIL.verb] += 1
            return decide.TEMPFAIL
        self.decisions[action.verb] += 1
        # A permit is two lines a message: logged on request (policyd.log_permits) or with
        # --verbose; /metrics counts them either way.
        say = log.info if self.log_permits or not action.permits else log.debug
        say(
            "%s: %s: %s account=%s recipient=<%s> nrcpt=%d size=%d%s",
            request.queue_id or "NOQUEUE",
            request.protocol_state.lower(),
            action.verb,
            request.sasl_username or "-",
            request.recipient,
            request.recipient_count,
            request.size,
            "" if action.permits else f": {action.text}",
        )
        return action

    async def _check(
        self, request: decide.Request, plan: decide.Check | decide.Action, connection: Connection
    ) -> decide.Action:
        """Ask Redis (policy_check.lua), giving back on the way the hold of the message this
        connection passed last if the milter did not count it."""
        release = ""
        if connection.passed is not None:
            account, queue_id = connection.passed
            connection.passed = None
            if account == request.sasl_username and isinstance(plan, decide.Check):
                release = queue_id  # same slot: given back inside the check, for free
            else:
                self._release_later(account, queue_id)
        if isinstance(plan, decide.Action):
            return plan
        result = await self.scripts(
            self.check_script,
            keys=usage.check_keys(self.keys, plan.account.name, plan.windows),
            args=plan.script_args(plan.windows.now + self.hold_seconds, release),
        )
        action = decide.verdict(plan, result)
        room = decide.room_left(plan, result)
        if room is not None:
            self.rooms[plan.account.name] = room
        else:
            self.rooms.pop(plan.account.name, None)
        if action.permits:
            if request.protocol_state == decide.RCPT:
                connection.transaction_recipients += 1
            else:
                connection.passed = (plan.account.name, plan.hold)
        return action

    def _release_later(self, account: str, queue_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(account, queue_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _release(self, account: str, queue_id: str) -> None:
        try:
            if await self.scripts(
                self.release_script,
                keys=[self.keys.holds(account), self.keys.holds_expiry(account)],
                args=[queue_id],
            ):
                log.info(
                    "%s: released: account=%s: not counted (refused after end of data)",
                    queue_id,
                    account,
                )
        except redis.RedisError as exc:
            log.warning(
                "%s: cannot give back the hold (%s); it lapses after %d s",
                queue_id,
                exc.__class__.__name__,
                self.hold_seconds,
            )

    async def accept(self, listener: socket.socket) -> None:
        """Take connections one at a time (asyncio's own servers take all that are waiting),
        so that the workers sharing `listener` share the connections too: a worker busy
        deciding is not waiting here, and an idle one takes the next connection."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            try:
                peer, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, a connection reset at once
                log.warning("accept: %s", exc)
                await asyncio.sleep(0.1)
                continue
            reader = asyncio.StreamReader(limit=protocol.MAX_REQUEST)
            stream = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(lambda s=stream: s, peer)
            writer = asyncio.StreamWriter(transport, stream, reader, loop)
            task = loop.create_task(self.serve_connection(reader, writer))
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    async def close_idle(self) -> None:
        """Close connections silent for longer than policyd.idle_timeout (one timer for all,
        rather than one per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_timeout / 4, 30.0))
            for connection in list(self.connections):
                if loop.time() - connection.last_request > self.idle_timeout:
                    log.info(
                        "%s: silent for %.0f s; disconnecting", connection.peer, self.idle_timeout
                    )
                    connection.writer.close()

    # -- decisions by outcome, for /metrics -----------------------------------------------

    async def flush_decisions(self) -> None:
        """Add the decisions counted since the last flush to PREFIX stats:policy, which the
        tracker's /metrics reads (txmail_policy_decisions). Counting in memory and flushing
        every policyd.metrics_interval seconds keeps Redis out of each decision's path; counts
        that cannot be written stay for the next flush, and a worker killed with -9 loses at
        most one interval of them."""
        counts, self.decisions = self.decisions, collections.Counter()
        if not counts:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for verb, count in counts.items():
                pipe.hincrby(self.keys.policy_stats, verb, count)
            await pipe.execute()
        except redis.RedisError as exc:
            log.debug("cannot write the decision counts yet: %s", exc)
            self.decisions.update(counts)

    async def count_decisions(self) -> None:
        while True:
            await asyncio.sleep(self.settings.policyd.metrics_interval)
            await self.flush_decisions()

    # -- account changes ------------------------------------------------------------------

    async def watch_accounts(self) -> None:
        while True:
            generation = self.accounts.generation
            try:
                await self.accounts.refresh()
            except redis.RedisError as exc:
                log.debug("cannot check for account changes: %s", exc)
                self.accounts.forget()  # serve nothing stale while Redis is away
                self.rooms.clear()
            if self.accounts.generation != generation:  # limits may have changed
                self.rooms.clear()
            await asyncio.sleep(self.settings.policyd.settings_refresh)


class TurnBufferedStream:
    """Stands in for a log handler's stream while the event loop runs: the lines logged in one
    loop turn go out in one write() at the start of the next. With policyd.log_permits, one line
    per decision is thousands of lines a second, and a write() each was a tenth of a worker's
    CPU. A worker killed with -9 loses at most the lines of its last turn."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        if not self.lines:
            self.loop.call_soon(self.write_out)
        self.lines.append(text)

    def flush(self) -> None:
        """StreamHandler flushes after each line; the turn's end does it instead."""

    def write_out(self) -> None:
        text, self.lines = "".join(self.lines), []
        with contextlib.suppress(OSError, ValueError):  # stderr gone: nowhere left to say it
            self.stream.write(text)
            self.stream.flush()


@contextlib.contextmanager
def turn_buffered_logs(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Buffer the root logger's stream handlers per loop turn (TurnBufferedStream)."""
    handlers = [
        h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler
    ]  # not FileHandler: it reopens its own
    for handler in handlers:
        handler.setStream(TurnBufferedStream(handler.stream, loop))
    try:
        yield
    finally:
        for handler in handlers:
            buffered = handler.setStream(handler.stream.stream)
            if isinstance(buffered, TurnBufferedStream):
                buffered.write_out()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return f"unix:{writer.get_extra_info('sockname') or '?'}"


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.policyd.socket)


def listen(settings: Settings) -> list[tuple[str, socket.socket]]:
    """The listening sockets, bound before any worker starts so that all of them share them."""
    path = socket_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen(1024)
    sockets = [(f"unix:{path}", unix)]
    if settings.policyd.listen:
        host, _, port = settings.policyd.listen.rpartition(":")
        tcp = socket.create_server((host.strip("[]"), int(port)), backlog=1024)
        sockets.append((f"inet:{settings.policyd.listen}", tcp))
    return sockets


async def run(
    settings: Settings,
    sockets: list[tuple[str, socket.socket]],
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve on `sockets` until SIGTERM or SIGINT."""
    with turn_buffered_logs(asyncio.get_running_loop()):
        await _serve(settings, sockets, ready)


async def _serve(
    settings: Settings, sockets: list[tuple[str, socket.socket]], ready: Callable[[], None] | None
) -> None:
    client = connect(settings)
    server = PolicyServer(
        settings, client, Keys(settings.redis.prefix), clock=lambda: usage.clock(settings)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchers = [
        loop.create_task(server.watch_accounts()),
        loop.create_task(server.close_idle()),
        loop.create_task(server.count_decisions()),
    ]
    watchers += [loop.create_task(server.accept(sock)) for _, sock in sockets]
    log.info("listening on %s (pid %d)", ", ".join(w for w, _ in sockets), os.getpid())
    if ready is not None:
        ready()
    await stop.wait()
    for watcher in watchers:
        watcher.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*server.background), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.flush_decisions(), 2)
    server.scripts.close()
    await client.aclose()


def workers(settings: Settings) -> int:
    return settings.policyd.workers or os.cpu_count() or 1


def serve(settings: Settings) -> None:
    """Bind the sockets, then serve them from policyd.workers processes until SIGTERM.

    With one worker the process serves itself. With more, this process forks them, restarts
    one that dies, and on SIGTERM stops them all. A connection stays with the worker that
    accepted it, so what policyd remembers per connection needs no sharing; each worker has
    its own Redis connections and account cache.
    """
    # Log lines can be thousands a second (policyd.log_permits): skip looking up the caller's
    # file and line, as the Logging HOWTO's "Optimization" section describes; the format never
    # shows it.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    sockets = listen(settings)
    try:
        if workers(settings) == 1:
            uvloop.run(run(settings, sockets))
        else:
            _supervise(settings, sockets, workers(settings))
    finally:
        socket_path(settings).unlink(missing_ok=True)
        log.info("stopped")


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM when the parent dies, so that a killed policyd leaves no
    workers behind that would keep answering after the supervisor started a new one."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _supervise(settings: Settings, sockets: list[tuple[str, socket.socket]], count: int) -> None:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    parent = os.getpid()

    def fork() -> int:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with(parent)
            code = 0
            try:
                uvloop.run(run(settings, sockets))
            except BaseException:  # noqa: BLE001 - the parent logs the exit and restarts us
                log.exception("worker %d failed", os.getpid())
                code = 1
            os._exit(code)
        return pid

    children: set[int] = set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        children.add(fork())
    log.info("%d workers", count)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        if not stopping:
            log.warning("worker %d exited (status %d); starting another", pid, status)
            time.sleep(0.5)
            children.add(fork())
