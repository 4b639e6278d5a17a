"""The milter's view of the accounts: read from Redis once, kept until the account changes.

Every MAIL FROM needs the logged-in account (status, domains, settings). Reading its hash for
every message costs a Redis round trip and a parse; instead the milter keeps the accounts it has
read, and a thread subscribed to `PREFIX accounts:changed` (Accounts publishes the account's
name on every change: settings, suspension, password, domains) drops an account the moment it
changes. While that thread is not subscribed (at start, or after losing Redis) nothing is kept
and every lookup goes to Redis, so no change is ever missed; entries also expire after
MAX_AGE seconds as a second line of defence.

Reads:  PREFIX {ACCOUNT}:account through Accounts; the PREFIX accounts:changed channel.
Fails:  StoreUnavailable from the lookup itself (the milter answers 451 4.3.0); the listener
        retries with a pause and never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from txmail.store.accounts import Account, Accounts

log = logging.getLogger("txmail.milter")

MAX_AGE = 60.0
MAX_ENTRIES = 10_000


class AccountCache:
    def __init__(self, accounts: Accounts, clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = accounts
        self.clock = clock
        self.live = threading.Event()
        self._entries: dict[str, tuple[float, Account | None]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def find(self, name: str) -> Account | None:
        if self.live.is_set():
            with self._lock:
                hit = self._entries.get(name)
            if hit is not None and self.clock() - hit[0] < MAX_AGE:
                return hit[1]
        generation = self._generation
        account = self.accounts.find(name)
        with self._lock:
            # A change announced while we were reading makes what we read stale: keep nothing.
            if self.live.is_set() and generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[name] = (self.clock(), account)
        return account

    def forget(self, name: str | None = None) -> None:
        """Drop one account (None: all of them)."""
        with self._lock:
            self._generation += 1
            if name is None:
                self._entries.clear()
            else:
                self._entries.pop(name, None)

    # -- the listener ---------------------------------------------------------------------

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.listen, name="account-changes", daemon=True)
        thread.start()
        return thread

    def listen(self, stop: threading.Event | None = None) -> None:
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
                    log.warning(
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
