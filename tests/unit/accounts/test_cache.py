"""accounts.cache as policyd keeps it: read once, kept until PREFIX accounts:version moves.

(The milter's way, subscribed to the change channel, is tests/unit/milter/test_account_cache.py.)
"""

from __future__ import annotations

import asyncio

from txmail.accounts.cache import AccountCache


class Store:
    """Stands in for Redis: account names to what the reader makes of them, and the version."""

    def __init__(self) -> None:
        self.accounts = {"acme": "acme v1"}
        self.version: str | None = "1"
        self.reads: list[str] = []
        self.during_read: asyncio.Event | None = None

    async def read(self, name: str) -> str | None:
        self.reads.append(name)
        if self.during_read is not None:
            await self.during_read.wait()
        return self.accounts.get(name)

    async def get_version(self) -> str | None:
        return self.version


def test_kept_known_and_unknown_until_the_version_moves() -> None:
    async def run() -> None:
        store = Store()
        cache = AccountCache.polling(store.read, store.get_version)
        await cache.refresh()
        assert await cache.get("acme") == "acme v1"
        assert await cache.get("acme") == "acme v1"
        assert await cache.get("nobody") is None
        assert await cache.get("nobody") is None
        assert store.reads == ["acme", "nobody"]
        store.accounts["acme"] = "acme v2"
        await cache.refresh()  # same version: nothing changed as far as it knows
        assert await cache.get("acme") == "acme v1"
        store.version = "2"
        await cache.refresh()
        assert await cache.get("acme") == "acme v2"
        assert store.reads == ["acme", "nobody", "acme"]

    asyncio.run(run())


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    async def run() -> None:
        store = Store()
        cache = AccountCache.polling(store.read, store.get_version)
        store.during_read = asyncio.Event()
        reading = asyncio.ensure_future(cache.get("acme"))
        await asyncio.sleep(0)
        store.version = "2"
        await cache.refresh()  # the change is heard while the read is under way
        store.during_read.set()
        assert await reading == "acme v1"
        store.during_read = None
        await cache.get("acme")
        assert store.reads == ["acme", "acme"]

    asyncio.run(run())
