"""authpolicy: the Lua scripts through server.Guard against a real redis-server, a fake clock,
and the HTTP endpoint as Dovecot calls it.

Each test works under its own key prefix on the session's private Redis (conftest.redis_server).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.cluster import key_slot

from txmail.authpolicy import decide, server
from txmail.store import Keys, scripts
from txmail.tokens import authpolicy as credentials

LIMITS = decide.Limits(
    free_failures=2,
    reject_failures=5,
    forgive_seconds=60,
    max_delay=15,
    remember_seconds=86400,
    remember_max=3,
)
START = 1_795_000_000.0
_prefixes = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def guard_on(client: redis.Redis, clock: Clock) -> server.Guard:
    registered = {name: scripts.get(client, name) for name in ("auth_check", "auth_report")}

    async def run(name: str, keys: list[str], args: list[Any]) -> Any:
        return registered[name](keys=keys, args=args)

    return server.Guard(run, Keys(f"ap{next(_prefixes)}:"), LIMITS, b"f" * 32, clock)


def attempt(password: str, remote: str = "198.51.100.7") -> decide.Attempt:
    return decide.Attempt("acme", remote, password)  # a stand-in for Dovecot's hash


def check(guard: server.Guard, found: decide.Attempt) -> int:
    return asyncio.run(guard.check(found))[0].status


def test_guessing_is_delayed_then_refused_and_forgiven(client: redis.Redis) -> None:
    clock = Clock()
    guard = guard_on(client, clock)
    statuses = [check(guard, attempt(f"guess{n}", f"203.0.113.{n}")) for n in range(8)]
    assert statuses == [0, 0, 1, 2, 4, -1, -1, -1]
    # refusals are not counted: five failures, not eight
    assert float(client.hget(guard.keys.auth_failures("acme"), "score")) == 5
    clock.now += 60  # one failure forgiven: one more guess is checked, then refused again
    assert check(guard, attempt("guess9")) == 4
    assert check(guard, attempt("guess10")) == -1
    clock.now += 5 * 60 + 1
    assert check(guard, attempt("guess11")) == 0
    assert client.ttl(guard.keys.auth_failures("acme")) <= 61


def test_a_known_client_passes_during_an_attack(client: redis.Redis) -> None:
    clock = Clock()
    guard = guard_on(client, clock)
    real = attempt("the-password", "198.51.100.7")
    assert check(guard, real) == 0
    assert asyncio.run(guard.succeeded(real)) is True  # now known; its count given back
    assert float(client.hget(guard.keys.auth_failures("acme"), "score")) == 0
    for n in range(10):
        check(guard, attempt(f"guess{n}", f"203.0.113.{n}"))
    assert check(guard, real) == 0
    assert asyncio.run(guard.succeeded(real)) is False  # known already: nothing given back
    assert float(client.hget(guard.keys.auth_failures("acme"), "score")) == 5
    # The right password from an address that never logged in is refused like a guess (else
    # the refusal would tell a guesser which password is right), and so is a guess from the
    # real client's own address.
    assert check(guard, attempt("the-password", "203.0.113.99")) == -1
    assert check(guard, attempt("guess", "198.51.100.7")) == -1
    clock.now += 86400 + 1  # forgotten after remember_seconds
    for n in range(5):
        check(guard, attempt(f"guess{n}", f"203.0.113.{n}"))
    assert check(guard, real) == -1


def test_known_clients_are_capped_per_login(client: redis.Redis) -> None:
    clock = Clock()
    guard = guard_on(client, clock)
    for n in range(5):
        clock.now += 1
        found = attempt("the-password", f"198.51.100.{n}")
        check(guard, found)
        asyncio.run(guard.succeeded(found))
    known = guard.keys.auth_known("acme")
    assert client.zcard(known) == 3
    assert 0 < client.ttl(known) <= 86400
    stored = " ".join(client.zrange(known, 0, -1))
    assert "the-password" not in stored and "198.51.100" not in stored


def test_parallel_guesses_cannot_pass_the_limit_together(client: redis.Redis) -> None:
    guard = guard_on(client, Clock())

    async def many() -> list[int]:
        found = await asyncio.gather(
            *(guard.check(attempt(f"g{n}", f"203.0.113.{n}")) for n in range(40))
        )
        return [verdict.status for verdict, _ in found]

    statuses = asyncio.run(many())
    assert sum(1 for s in statuses if s != -1) == LIMITS.reject_failures


def test_the_keys_of_a_login_share_one_slot() -> None:
    keys = Keys("txmail:")
    assert (
        key_slot(keys.auth_failures("acme").encode())
        == key_slot(keys.auth_known("acme").encode())
        == key_slot(keys.account("acme").encode())
    )


def post(app: Any, command: str, body: Any, header: str | None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with TestClient(TestServer(app)) as http:
            headers = {credentials.HEADER: header} if header is not None else {}
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = await http.post(f"/?command={command}", data=data, headers=headers)
            text = await response.text()
            return response.status, (json.loads(text) if text.startswith("{") else text)

    return asyncio.run(go())


def test_the_endpoint_answers_dovecot_and_nobody_else(client: redis.Redis) -> None:
    guard = guard_on(client, Clock())
    app = lambda: server.make_app(guard, "the-header-value")  # noqa: E731 - one app per loop
    guess = {"login": "acme", "pwhash": "00ff", "remote": "203.0.113.1", "tls": False}
    for header in (None, "", "wrong"):
        assert post(app(), "allow", guess, header)[0] == 403
    assert client.exists(guard.keys.auth_failures("acme")) == 0
    for _ in range(2):
        assert post(app(), "allow", guess, "the-header-value") == (200, {"status": 0})
    assert post(app(), "allow", guess, " the-header-value") == (200, {"status": 1})
    assert post(app(), "allow", b"{not json", "the-header-value")[0] == 400
    assert post(app(), "what", guess, "the-header-value")[0] == 400
    assert post(app(), "allow", {"login": "a@b", "pwhash": "00"}, "the-header-value") == (
        200,
        {"status": 0},
    )
    big = {**guess, "pad": "x" * 10_000}
    assert post(app(), "allow", big, "the-header-value")[0] == 413
    success = {**guess, "pwhash": "11ee", "success": True, "policy_reject": False}
    assert post(app(), "report", success, "the-header-value") == (200, {"status": 0})
    assert float(client.hget(guard.keys.auth_failures("acme"), "score")) == 2


def test_redis_down_allows_every_login(caplog: pytest.LogCaptureFixture) -> None:
    async def down(name: str, keys: list[str], args: list[Any]) -> Any:
        raise redis.ConnectionError("refused")

    guard = server.Guard(down, Keys("x:"), LIMITS, b"f" * 32, Clock())
    guess = {"login": "acme", "pwhash": "00ff", "remote": "203.0.113.1"}
    for _ in range(3):
        assert post(server.make_app(guard, "h"), "allow", guess, "h") == (200, {"status": 0})
    assert post(server.make_app(guard, "h"), "report", {**guess, "success": True}, "h") == (
        200,
        {"status": 0},
    )
    assert "Redis unavailable" in caplog.text
    assert "00ff" not in caplog.text
