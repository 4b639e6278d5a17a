"""accounts.cache: what a daemon knows of the accounts, read from Redis once, kept until it changes.

The milter needs the logged-in account at every MAIL FROM (status, domains, settings), policyd
at every policy request. Reading the account's hash each time costs a Redis round trip and a
parse; instead each keeps the accounts it has read in one AccountCache, unknown accounts too
(None), and drops an account the moment it hears that it changed. A read that was under way
when a change was announced is not kept, so what is kept is never older than the last change.

The cache hears of changes one of two ways:

  listen()   the milter (threads): a thread subscribed to `PREFIX accounts:changed`, on which
             Accounts publishes the account's name on every change (settings, suspension,
             password, domains). While it is not subscribed (at start, or after losing Redis)
             nothing is kept and every lookup goes to Redis, so no change is ever missed;
             entries also expire after MAX_AGE seconds as a second line of defence.
  refresh()  policyd (asyncio): asks for `PREFIX accounts:version`, which every change moves,
             every policyd.settings_refresh seconds, and drops every account when it moved.

find() reads through Accounts (blocking, for the milter's threads); get() through the daemon's
own asyncio reader, which builds what the daemon keeps (policyd: its AccountState).

Reads:  PREFIX {ACCOUNT}:account, PREFIX accounts:version, the PREFIX accounts:changed channel.
Fails:  StoreUnavailable or redis.RedisError from the lookup itself (the daemon answers 451
        4.3.0); the listener retries with a pause and never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis

from txmail.accounts.records import Accounts

MAX_AGE = 60.0
MAX_ENTRIES = 10_000

Entry = TypeVar("Entry")


class AccountCache(Generic[Entry]):
    """Accounts (or what a daemon makes of them) by name, each kept until it changes.

    `AccountCache(accounts)` is the milter's: read with find(), kept while listen() is
    subscribed, for at most `max_age` seconds and `max_entries` accounts (then all are
    dropped). `AccountCache.polling(read, version)` is policyd's: read with get(), kept from
    the start, with no age or size limit, dropped when refresh() sees the version move.
    """

    def __init__(
        self,
        accounts: Accounts | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_age: float | None = MAX_AGE,
        max_entries: int | None = MAX_ENTRIES,
        log: logging.Logger | None = None,
    ) -> None:
        self.accounts = accounts
        self.clock = clock
        self.max_age = max_age
        self.max_entries = max_entries
        self.log = log or logging.getLogger("txmail.accounts")
        self.live = threading.Event()  # changes reach the cache: it may keep what it reads
        self.read: Callable[[str], Awaitable[Entry | None]] | None = None
        self.version: Callable[[], Awaitable[str | None]] | None = None
        self.seen_version: str | None = None
        self.generation = 0  # moves with every change heard of
        self._entries: dict[str, tuple[float, Entry | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def polling(
        cls,
        read: Callable[[str], Awaitable[Entry | None]],
        version: Callable[[], Awaitable[str | None]],
    ) -> AccountCache[Entry]:
        """policyd's cache: `read` makes the entry of a name, `version` reads
        PREFIX accounts:version for refresh()."""
        cache: AccountCache[Entry] = cls(max_age=None, max_entries=None)
        cache.read = read
        cache.version = version
        cache.live.set()  # refresh() hears of every change, however late it starts
        return cache

    # -- lookups --------------------------------------------------------------------------

    def find(self, name: str) -> Entry | None:
        """The account named `name` (None: there is none), through Accounts when not kept."""
        found, entry = self._kept(name)
        if found:
            return entry
        assert self.accounts is not None, "find() reads through Accounts"
        generation = self.generation
        entry = self.accounts.find(name)  # type: ignore[assignment]
        self._keep(name, entry, generation)
        return entry

    async def get(self, name: str) -> Entry | None:
        """What the reader makes of the account named `name`, read when not kept."""
        found, entry = self._kept(name)
        if found:
            return entry
        assert self.read is not None, "get() reads through AccountCache.polling's reader"
        generation = self.generation
        entry = await self.read(name)
        self._keep(name, entry, generation)
        return entry

    def _kept(self, name: str) -> tuple[bool, Entry | None]:
        if not self.live.is_set():
            return False, None
        with self._lock:
            hit = self._entries.get(name)
        if hit is None or (self.max_age is not None and self.clock() - hit[0] >= self.max_age):
            return False, None
        return True, hit[1]

    def _keep(self, name: str, entry: Entry | None, generation: int) -> None:
        with self._lock:
            # A change announced while we were reading makes what we read stale: keep nothing.
            if self.live.is_set() and generation == self.generation:
                if self.max_entries is not None and len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[name] = (self.clock(), entry)

    def forget(self, name: str | None = None) -> None:
        """Drop one account (None: all of them)."""
        with self._lock:
            self.generation += 1
            if name is None:
                self._entries.clear()
            else:
                self._entries.pop(name, None)

    # -- hearing of changes: polling the version (policyd) ---------------------------------

    async def refresh(self) -> None:
        """Drop every account if PREFIX accounts:version moved since the last look."""
        assert self.version is not None, "refresh() reads through AccountCache.polling's version"
        version = await self.version()
        if version != self.seen_version:
            self.seen_version = version
            self.forget()

    # -- hearing of changes: the change channel (the milter) -------------------------------

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.listen, name="account-changes", daemon=True)
        thread.start()
        return thread

    def listen(self, stop: threading.Event | None = None) -> None:
        assert self.accounts is not None, "listen() subscribes through Accounts' client"
        channel = self.accounts.keys.accounts_changed
        while stop is None or not stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self.accounts.client.pubsub()
                pubsub.subscribe(channel)
                while stop is None or not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        pubsub.check_health()
                        continue
                    if message["type"] == "subscribe":
                        self.forget()
                        self.live.set()
                    elif message["type"] == "message":
                        self.forget(str(message["data"]))
            except (redis.RedisError, OSError) as exc:
                if self.live.is_set():
                    self.log.warning(
                        "account changes: lost the subscription (%s); reading every "
                        "account from Redis until it is back",
                        exc.__class__.__name__,
                    )
                self.live.clear()
                self.forget()
                time.sleep(1.0)
            finally:
                self.live.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (redis.RedisError, OSError):
                        pass
