"""link.py against a real redis-server, and against peers that misbehave: replies in order,
the login and database of the URL, lost scripts, and every kind of trouble a redis.RedisError
that fails the calls waiting, never a hang or a crash."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from txmail.config import RedisSettings, Settings
from txmail.policyd import link
from txmail.policyd.scripts import LinkScripts, ScriptBatch, connect, scripts_for
from txmail.store import scripts as lua
from txmail_testing.harness import RedisServer


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(test())


def test_replies_answer_their_own_calls_in_order(redis_server: RedisServer) -> None:
    async def test() -> list[Any]:
        pipe = link.Link(redis_server.url, 1.0)
        try:
            calls = [pipe.call(link.command("INCRBY", "link:order", n)) for n in range(1, 51)]
            calls.append(pipe.call(link.command("GET", "link:order")))
            calls.append(pipe.call(link.command("PING")))
            return await asyncio.gather(*calls)
        finally:
            pipe.close()

    replies = run(test)
    assert replies[:50] == [n * (n + 1) // 2 for n in range(1, 51)]
    assert replies[50:] == ["1275", "PONG"]


def test_an_error_reply_fails_its_call_alone(redis_server: RedisServer) -> None:
    async def test() -> list[Any]:
        pipe = link.Link(redis_server.url, 1.0)
        try:
            return await asyncio.gather(
                pipe.call(link.command("SET", "link:text", "words")),
                pipe.call(link.command("INCR", "link:text")),
                pipe.call(link.command("GET", "link:text")),
                return_exceptions=True,
            )
        finally:
            pipe.close()

    ok, error, value = run(test)
    assert ok == "OK" and value == "words"
    assert isinstance(error, redis.ResponseError) and "not an integer" in str(error)


def test_the_urls_password_and_database_are_used() -> None:
    guarded = RedisServer(password="s3cret-pw").start()
    try:

        async def test(url: str) -> Any:
            pipe = link.Link(url, 1.0)
            try:
                await pipe.call(link.command("SET", "link:db", "here"))
                return await pipe.call(link.command("CLIENT", "INFO"))
            finally:
                pipe.close()

        info = asyncio.run(test(f"redis://:s3cret-pw@127.0.0.1:{guarded.port}/5"))
        assert " db=5 " in info
        check = redis.Redis(port=guarded.port, db=5, password="s3cret-pw")
        try:
            assert check.get("link:db") == b"here"
        finally:
            check.close()
        with pytest.raises(redis.ConnectionError, match="refused the login"):
            asyncio.run(test(f"redis://:wrong@127.0.0.1:{guarded.port}/0"))
    finally:
        guarded.close()


def test_a_redis_that_is_down_fails_the_call_and_a_later_one_connects() -> None:
    down = RedisServer()

    async def test() -> None:
        pipe = link.Link(down.url, 1.0)
        with pytest.raises(redis.ConnectionError, match="cannot connect to Redis"):
            await pipe.call(link.command("PING"))
        down.start()
        try:
            assert await pipe.call(link.command("PING")) == "PONG"
            down.stop()  # the connection breaks under the link
            with pytest.raises(redis.ConnectionError):
                await pipe.call(link.command("PING"))
            down.start()
            assert await pipe.call(link.command("PING")) == "PONG"
        finally:
            pipe.close()

    try:
        run(test)
    finally:
        down.close()


@contextlib.asynccontextmanager
async def peer(answer: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """The URL of a fake Redis on loopback that answers each read with answer(data)."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(65536):
            writer.write(answer(data))

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{listener.sockets[0].getsockname()[1]}/0"
    finally:
        for writer in writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


def test_a_silent_redis_times_out_every_waiting_call() -> None:
    async def test() -> None:
        async with peer(lambda data: b"") as url:
            pipe = link.Link(url, 0.3)
            results = await asyncio.gather(
                *(pipe.call(link.command("PING")) for _ in range(3)), return_exceptions=True
            )
            pipe.close()
        assert all(isinstance(r, redis.TimeoutError) for r in results), results
        assert "did not answer within 0.3 s" in str(results[0])

    run(test)


def test_garbage_from_redis_fails_the_calls_and_closes_the_connection() -> None:
    async def test() -> None:
        async with peer(lambda data: b"!this is not RESP\r\n") as url:
            pipe = link.Link(url, 1.0)
            with pytest.raises(redis.ConnectionError, match="not an answer"):
                await pipe.call(link.command("PING"))
            assert pipe.wire is not None and pipe.wire.lost

    run(test)


def test_a_reply_nobody_asked_for_breaks_the_connection() -> None:
    async def test() -> None:
        async with peer(lambda data: b"+PONG\r\n+EXTRA\r\n") as url:
            pipe = link.Link(url, 1.0)
            assert await pipe.call(link.command("PING")) == "PONG"
            await asyncio.sleep(0.05)
            assert pipe.wire is not None and pipe.wire.lost

    run(test)


def test_a_lost_script_is_sent_again_in_full(redis_server: RedisServer) -> None:
    settings = Settings(redis=RedisSettings(url=redis_server.url, timeout=1.0))

    async def test() -> list[Any]:
        client = connect(settings)
        scripts = scripts_for(settings, client)
        assert isinstance(scripts, LinkScripts)
        release = lua.get(client, "policy_release")
        try:
            await client.script_flush()
            first = await scripts(release, ["link:{a}:holds", "link:{a}:holds:expiry"], ["Q1"])
            second = await scripts(release, ["link:{a}:holds", "link:{a}:holds:expiry"], ["Q1"])
            return [first, second, await client.script_exists(release.sha)]
        finally:
            scripts.close()
            await client.aclose()

    assert run(test) == [0, 0, [True]]


def test_tls_and_clusters_go_through_redis_py() -> None:
    plain = Settings(redis=RedisSettings(url="redis://127.0.0.1:6379/0"))
    tls = Settings(redis=RedisSettings(url="rediss://127.0.0.1:6380/0"))
    cluster = Settings(redis=RedisSettings(url="redis://127.0.0.1:7000", cluster=True))
    assert link.Link.usable(plain.redis.url)
    assert not link.Link.usable(tls.redis.url)
    assert isinstance(scripts_for(plain, connect(plain)), LinkScripts)
    assert isinstance(scripts_for(tls, connect(tls)), ScriptBatch)
    assert isinstance(scripts_for(cluster, connect(cluster)), ScriptBatch)
