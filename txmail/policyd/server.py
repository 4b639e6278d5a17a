"""txmail policyd: the asyncio server Postfix's check_policy_service talks to.

Listens on the UNIX socket policyd.socket (and on policyd.listen over TCP when set). Each
connection carries many requests, one after another (Postfix keeps its policy connections
open); each request gets one decision: decide.plan(), one atomic call of policy_check.lua, and
decide.verdict(). One log line per decision, starting with the queue id as Postfix's own do.

Remembers per connection the recipients let through in the current transaction (so the RCPT
check asks room for one more) and the message it passed last at END-OF-MESSAGE: when the same
Postfix process sends its next request or closes, that message's fate is sealed, so a hold the
milter did not turn into counted usage (the message was refused after all) is given back.

Caches account settings in memory and drops the cache whenever PREFIX accounts:version moves
(checked every policyd.settings_refresh seconds).

Fails: Redis down or slow, or any bug: `451 4.3.0` (never a permit, never a 5xx). Garbage, an
attribute over 512 characters, a block without request=smtpd_access_policy, a request over 32 KB
or a silent peer: a warning and the connection is closed. Nothing a peer sends stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster

from txmail import store
from txmail.config import Settings
from txmail.policyd import decide, protocol, quota
from txmail.store import Keys, account_settings
from txmail.store.keys import ACCOUNT_NAME

log = logging.getLogger("txmail.policyd")

AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def connect(settings: Settings) -> AsyncClient:
    """An asyncio client for the configured Redis or Redis Cluster, failing fast."""
    url = store.effective_url(settings)
    timeout = settings.redis.timeout
    if settings.redis.cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, decode_responses=True, socket_timeout=timeout,
            socket_connect_timeout=timeout)
    return redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                        socket_connect_timeout=timeout)


class AccountCache:
    """Account status and settings by name, dropped whenever any account changes."""

    def __init__(self, client: AsyncClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.entries: dict[str, decide.AccountState | None] = {}
        self.version: str | None = None
        self.generation = 0

    async def get(self, name: str) -> decide.AccountState | None:
        try:
            return self.entries[name]
        except KeyError:
            pass
        if not ACCOUNT_NAME.match(name):
            return None
        generation = self.generation
        raw = await self.client.hgetall(self.keys.account(name))
        state = None
        if raw:
            state = decide.AccountState(
                name=name, status=raw.get("status", "active"),
                suspended_reason=raw.get("suspended_reason", ""),
                created_at=raw.get("created_at", ""),
                settings=account_settings.from_fields(raw))
        if generation == self.generation:  # no change was announced while reading
            self.entries[name] = state
        return state

    async def refresh(self) -> None:
        version = await self.client.get(self.keys.accounts_version)
        if version != self.version:
            self.version = version
            self.entries.clear()
            self.generation += 1


@dataclass
class Connection:
    """What policyd remembers about one Postfix policy connection."""

    instance: str = ""
    transaction_recipients: int = 0
    passed: tuple[str, str] | None = None  # (account, queue id) passed last at END-OF-MESSAGE


class PolicyServer:
    def __init__(self, settings: Settings, client: AsyncClient, keys: Keys,
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.client = client
        self.keys = keys
        self.clock = clock
        self.accounts = AccountCache(client, keys)
        self.check = quota.script(client, "policy_check")
        self.release_script = quota.script(client, "policy_release")
        self.hold_seconds = settings.policyd.hold_seconds
        self.idle_timeout = settings.policyd.idle_timeout
        self.background: set[asyncio.Task[Any]] = set()

    # -- one connection -------------------------------------------------------------------

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        connection = Connection()
        peer = _peer(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        block = await reader.readuntil(protocol.SEPARATOR)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        log.warning("%s: connection closed in the middle of a request", peer)
                    return
                except asyncio.LimitOverrunError:
                    log.warning("%s: request over %d bytes; disconnecting", peer,
                                protocol.MAX_REQUEST)
                    return
                except TimeoutError:
                    log.info("%s: silent for %.0f s; disconnecting", peer, self.idle_timeout)
                    return
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
            if connection.passed is not None:
                self._release_later(*connection.passed)
            writer.close()

    async def answer(self, request: decide.Request, connection: Connection) -> decide.Action:
        """The action for one request; never raises."""
        release = ""
        if connection.passed is not None:
            account, queue_id = connection.passed
            connection.passed = None
            if account == request.sasl_username:
                release = queue_id  # same slot: given back inside the check, for free
            else:
                self._release_later(account, queue_id)
        if request.instance != connection.instance:
            connection.instance = request.instance
            connection.transaction_recipients = 0
        try:
            account_state = None
            if request.sasl_username:
                account_state = await self.accounts.get(request.sasl_username)
            plan = decide.plan(request, account_state, self.clock(),
                               connection.transaction_recipients)
            if isinstance(plan, decide.Action):
                if release:
                    self._release_later(request.sasl_username, release)
                action = plan
            else:
                result = await self.check(
                    keys=quota.check_keys(self.keys, plan.account, plan.windows),
                    args=plan.script_args(plan.windows.now + self.hold_seconds, release))
                action = decide.verdict(plan, result)
                if action.permits:
                    if request.protocol_state == decide.RCPT:
                        connection.transaction_recipients += 1
                    else:
                        connection.passed = (plan.account, plan.hold)
        except redis.RedisError as exc:
            log.warning("%s: tempfail: Redis unavailable (%s: %s)",
                        request.queue_id or "NOQUEUE", exc.__class__.__name__, exc)
            return decide.TEMPFAIL
        except Exception:  # noqa: BLE001 - a bug must cost a retry, never a permit or a crash
            log.exception("%s: tempfail: internal error", request.queue_id or "NOQUEUE")
            return decide.TEMPFAIL
        log.info("%s: %s: %s account=%s recipient=<%s> nrcpt=%d size=%d%s",
                 request.queue_id or "NOQUEUE", request.protocol_state.lower(), action.verb,
                 request.sasl_username or "-", request.recipient, request.recipient_count,
                 request.size, "" if action.permits else f": {action.text}")
        return action

    def _release_later(self, account: str, queue_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(account, queue_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _release(self, account: str, queue_id: str) -> None:
        try:
            if await self.release_script(keys=[self.keys.holds(account),
                                               self.keys.holds_expiry(account)],
                                         args=[queue_id]):
                log.info("%s: released: account=%s: not counted (refused after end of data)",
                         queue_id, account)
        except redis.RedisError as exc:
            log.warning("%s: cannot give back the hold (%s); it lapses after %d s", queue_id,
                        exc.__class__.__name__, self.hold_seconds)

    # -- account changes ------------------------------------------------------------------

    async def watch_accounts(self) -> None:
        while True:
            try:
                await self.accounts.refresh()
            except redis.RedisError as exc:
                log.debug("cannot check for account changes: %s", exc)
                self.accounts.entries.clear()  # serve nothing stale while Redis is away
            await asyncio.sleep(self.settings.policyd.settings_refresh)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return f"unix:{writer.get_extra_info('sockname') or '?'}"


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.policyd.socket)


async def run(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    client = connect(settings)
    server = PolicyServer(settings, client, Keys(settings.redis.prefix),
                          clock=lambda: quota.clock(settings))
    path = socket_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listeners = [await asyncio.start_unix_server(server.serve_connection, path=str(path),
                                                 limit=protocol.MAX_REQUEST)]
    where = [f"unix:{path}"]
    if settings.policyd.listen:
        host, _, port = settings.policyd.listen.rpartition(":")
        listeners.append(await asyncio.start_server(
            server.serve_connection, host=host.strip("[]"), port=int(port),
            limit=protocol.MAX_REQUEST, reuse_address=True))
        where.append(f"inet:{settings.policyd.listen}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = loop.create_task(server.watch_accounts())
    log.info("listening on %s (pid %d)", ", ".join(where), os.getpid())
    if ready is not None:
        ready()
    await stop.wait()
    log.info("stopping")
    watcher.cancel()
    for listener in listeners:
        listener.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*server.background), 5)
    path.unlink(missing_ok=True)
    await client.aclose()
    log.info("stopped")


def serve(settings: Settings) -> None:
    asyncio.run(run(settings))
