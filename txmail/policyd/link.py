"""One pipelined connection to a single Redis for policyd's script calls, on asyncio.Protocol.

Each END-OF-MESSAGE decision is one call of policy_check.lua. Through redis-py's asyncio client
a call cost policyd about 230 µs of CPU when calls came one at a time (its pool, lock, timeout
tasks and line-by-line stream reads), against about 80 µs here: the packed command is written on
the transport and hiredis parses the replies as they arrive, each answering the oldest call
waiting (Redis answers in order). The commands of one loop turn go out in one write.

Connects on the first call, with the URL's password and database (redis:// or unix://; policyd
uses redis-py for rediss:// and Redis Cluster). Fails: a reply that has not come within
`timeout` seconds, a lost connection or a connection that cannot be made fails every call
waiting on it with redis.TimeoutError or redis.ConnectionError (policyd answers 451), and the
next call connects again. An error reply (redis.ResponseError) fails that call alone.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis
from redis.asyncio.connection import parse_url

MAX_TIMEOUT = 3600.0


def command(*parts: Any) -> bytes:
    """A command in RESP, ready to write (parts: bytes, or what str() makes text of)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Link:
    """Calls to one Redis over one connection, answered in the order they were sent."""

    def __init__(self, url: str, timeout: float) -> None:
        options = parse_url(url)
        self.path: str = options.get("path", "")
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.timeout = min(timeout, MAX_TIMEOUT)
        self.handshake: list[bytes] = []
        password, username = options.get("password"), options.get("username")
        if password:
            self.handshake.append(command("AUTH", *([username] if username else []), password))
        if int(options.get("db", 0) or 0):
            self.handshake.append(command("SELECT", str(options["db"])))
        self.wire: _Wire | None = None
        self.connecting: asyncio.Future[_Wire] | None = None

    @staticmethod
    def usable(url: str) -> bool:
        """Whether `url` is one this link speaks (redis:// or unix://, no TLS)."""
        return urlsplit(url).scheme in ("redis", "unix")

    async def call(self, packed: bytes) -> Any:
        """The reply to one packed command; raises it if it is an error reply."""
        wire = self.wire
        if wire is None or wire.lost:
            wire = await self._connect()
        result = await wire.send(packed)
        if isinstance(result, Exception):
            raise result
        return result

    async def _connect(self) -> _Wire:
        if self.connecting is None:
            loop = asyncio.get_running_loop()
            self.connecting = loop.create_future()
            task = loop.create_task(self._open())
            task.add_done_callback(self._opened)
        return await asyncio.shield(self.connecting)

    async def _open(self) -> _Wire:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                if self.path:
                    _, wire = await loop.create_unix_connection(
                        lambda: _Wire(self.timeout), self.path
                    )
                else:
                    _, wire = await loop.create_connection(
                        lambda: _Wire(self.timeout), self.host, self.port
                    )
                for step in self.handshake:
                    answer = await wire.send(step)
                    if isinstance(answer, Exception):
                        wire.close()
                        raise redis.ConnectionError(f"Redis refused the login: {answer}")
        except TimeoutError:
            raise redis.TimeoutError(
                f"Redis at {self._where()} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise redis.ConnectionError(
                f"cannot connect to Redis at {self._where()}: {exc.strerror or exc}"
            ) from None
        return wire

    def _opened(self, task: asyncio.Task[_Wire]) -> None:
        connecting, self.connecting = self.connecting, None
        assert connecting is not None
        if task.cancelled():
            connecting.cancel()
        elif task.exception() is not None:
            connecting.set_exception(task.exception())  # type: ignore[arg-type]
            connecting.exception()  # nobody may be waiting any more: not an unretrieved error
        else:
            self.wire = task.result()
            connecting.set_result(self.wire)

    def _where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()


class _Wire(asyncio.Protocol):
    """The connection itself: what has been sent and not yet answered, oldest first."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reader = hiredis.Reader(
            encoding="utf-8", errors="replace", replyError=redis.ResponseError
        )
        self.waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if self.lost:
            future.set_exception(redis.ConnectionError("the connection to Redis was lost"))
            return future
        if not self.out:
            self.loop.call_soon(self._write)
        self.out.append(packed)
        deadline = self.loop.time() + self.timeout
        self.waiting.append((deadline, future))
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._check_deadline)
        return future

    def _write(self) -> None:
        out, self.out = self.out, []
        if not self.lost and self.transport is not None:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                _, future = self.waiting.popleft()
                if not future.done():  # a caller that gave up (cancelled) lets it go by
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(redis.ConnectionError(f"Redis sent what is not an answer ({exc})"))

    def _check_deadline(self) -> None:
        self.timer = None
        if not self.waiting:
            return
        deadline = self.waiting[0][0]
        if deadline <= self.loop.time():
            self._fail(redis.TimeoutError(f"Redis did not answer within {self.timeout:g} s"))
        else:
            self.timer = self.loop.call_at(deadline, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            redis.ConnectionError("the connection to Redis was lost" + (f": {exc}" if exc else ""))
        )

    def _fail(self, error: redis.RedisError) -> None:
        """Every waiting call fails: a reply still on its way would answer the wrong one."""
        self.lost = True
        self.out.clear()
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.close()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
