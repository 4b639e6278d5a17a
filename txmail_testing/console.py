"""A real tracker (txmail/tracker/server.py make_app, with its console) served on loopback from a
thread of the test process, over a real Redis: for tests driving the console with requests."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import redis
from aiohttp import web

from txmail.config import RedisSettings, Settings
from txmail.store import Keys
from txmail.tokens.links import LinkSigner
from txmail.tracker.server import make_app
from txmail.tracker.services import Services
from txmail_testing.harness import free_port


class ConsoleServer:
    """The tracker's app on 127.0.0.1:PORT; `url` is its base. stop() ends it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        trust_forwarded: bool = False,
        webhook_timeout: float | None = None,
        **console: Any,
    ) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="txmail-console-"))
        base = Settings(state_dir=str(self.state), redis=RedisSettings(prefix=keys.prefix))
        self.settings = dataclasses.replace(
            base,
            console=dataclasses.replace(base.console, **console),
            tracker=dataclasses.replace(base.tracker, trust_forwarded=trust_forwarded),
            webhooks=dataclasses.replace(
                base.webhooks, timeout=webhook_timeout or base.webhooks.timeout
            ),
        )
        self.services = Services(
            settings=self.settings,
            signer=LinkSigner(b"t" * 32),
            recording=None,
            client=client,
            keys=keys,
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> ConsoleServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(self.services), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        shutil.rmtree(self.state, ignore_errors=True)
