"""policyd's calls to Redis: the asyncio client, and its Lua script calls, batched.

connect() makes the asyncio client of the configured Redis or Redis Cluster. scripts_for()
chooses how the policy scripts (policy_check, policy_release) are called: over a link.Link to
a single plain Redis (the calls of one loop turn go out in one write, hiredis parses), else
through redis-py, in one pipeline per batch (ScriptBatch). Either way each call is its own
atomic script run, and a server that lost a script (restarted, flushed) gets it again.

Fails: redis.RedisError to the caller of each call; the batch never hangs a caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from txmail import store
from txmail.config import Settings
from txmail.policyd import link

AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
Call = tuple[Any, list[str], list[Any], "asyncio.Future[Any]"]  # script, keys, args, answer


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
