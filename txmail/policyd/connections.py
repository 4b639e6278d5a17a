"""policyd's service on its connections: each Postfix policy request in, one action out.

PolicyServer takes connections one at a time from the listening sockets (so that workers
sharing them share the connections too), reads the requests each carries one after another
(Postfix keeps its policy connections open) and answers each: decide.plan(), one atomic call
of policy_check.lua (scripts.py), decide.verdict(). One log line per refusal or tempfail,
starting with the queue id as Postfix's own do; one per permit too with policyd.log_permits
(or --verbose). Decisions are counted for /metrics.

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
import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from txmail import histograms, logs, store
from txmail.accounts import usage
from txmail.accounts.cache import AccountCache
from txmail.config import Settings
from txmail.policyd import decide, protocol
from txmail.policyd.scripts import AsyncClient, scripts_for
from txmail.store import Keys, scripts
from txmail.store.keys import ACCOUNT_NAME

log = logging.getLogger("txmail.policyd")


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
            self._read_account, self._accounts_version
        )
        self.rooms: dict[str, decide.Room] = {}  # by account: what its last check left free
        self.decisions: collections.Counter[str] = collections.Counter()  # by verb, not yet
        # added to PREFIX stats:policy (flush_decisions)
        self.observations = histograms.Observations("policyd")  # decision times, flushed with them
        self.histogram_key = keys.node_histograms(histograms.node_name(settings))
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
                self.observations.observe(
                    histograms.POLICY_DECISION, loop.time() - connection.last_request
                )
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
        raw = store.decoded_hash(await self.client.hgetall(self.keys.account(name)))
        return decide.AccountState.from_hash(name, raw) if raw else None

    async def _accounts_version(self) -> str | None:
        return store.decoded_or_none(await self.client.get(self.keys.accounts_version))

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
            if room is not None and isinstance(plan, decide.Check) and room.fits(plan):
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
                extra=about(request),
            )
            self.decisions[decide.TEMPFAIL.verb] += 1
            return decide.TEMPFAIL
        except Exception:  # noqa: BLE001 - a bug must cost a retry, never a permit or a crash
            log.exception(
                "%s: tempfail: internal error",
                request.queue_id or "NOQUEUE",
                extra=about(request),
            )
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
            extra=about(request),
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
                    extra=logs.about(queue_id, account),
                )
        except redis.RedisError as exc:
            log.warning(
                "%s: cannot give back the hold (%s); it lapses after %d s",
                queue_id,
                exc.__class__.__name__,
                self.hold_seconds,
                extra=logs.about(queue_id, account),
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
            transport, stream = await loop.connect_accepted_socket(
                functools.partial(asyncio.StreamReaderProtocol, reader), peer
            )
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
        tracker's /metrics reads (txmail_policy_decisions), and the decision times to this
        node's histograms (txmail/histograms.py), in one pipeline. Counting in memory and
        flushing every policyd.metrics_interval seconds keeps Redis out of each decision's
        path; counts that cannot be written stay for the next flush, and a worker killed with
        -9 loses at most one interval of them."""
        counts, self.decisions = self.decisions, collections.Counter()
        pipe = self.client.pipeline(transaction=histograms.transactional(self.client))
        undo = self.observations.queue(pipe, self.histogram_key)
        if not counts and undo is None:
            return
        for verb, count in counts.items():
            pipe.hincrby(self.keys.policy_stats, verb, count)
        try:
            await pipe.execute()
        except redis.RedisError as exc:
            log.debug("cannot write the decision counts yet: %s", exc)
            self.decisions.update(counts)
            if undo is not None:
                undo()

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


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return f"unix:{writer.get_extra_info('sockname') or '?'}"


def about(request: decide.Request) -> dict[str, str]:
    """The queue id and account of a decision's log line (logs.py); a login name that is no
    account name is left out of the field (the line's text still shows it)."""
    login = request.sasl_username
    return logs.about(request.queue_id, login if login and ACCOUNT_NAME.match(login) else None)
