"""txmail authpolicy: the HTTP endpoint Dovecot's auth policy client posts to.

SYNOPSIS
    txmail authpolicy         (started by `txmail up`; listens on authpolicy.listen, loopback)

DESCRIPTION
    Dovecot 2.3 (auth_policy_server_url) posts JSON before it checks a password
    (`?command=allow`: login, remote, pwhash) and after the attempt (`?command=report`: the
    same and success, policy_reject). This server answers {"status": 0} (go on),
    {"status": N} (Dovecot holds the attempt N seconds, then checks the password) or
    {"status": -1, "msg": SENTENCE} (refused unchecked; Postfix shows the sentence after
    "535 5.7.8 Error: authentication failed:"). What it decides is in decide.py.

    Every request must carry the X-Txmail-Authpolicy-Key header rendered into Dovecot's
    configuration (credentials.py); any other is answered 403 and changes nothing (Dovecot
    itself takes a failed policy request as "go on").

STATE
    PREFIX {LOGIN}:auth:failures and PREFIX {LOGIN}:auth:known (store/keys.py), changed only by
    store/scripts/auth_check.lua and auth_report.lua.
LOGS
    Component authpolicy (txmail/logs.py): one line per delayed or refused attempt and per
    client that becomes known, starting with the login; never a password, a password hash or
    a key.
FAILS
    Open: when Redis is down or slow (answers are due within 1.5 s, before Dovecot's 2 s
    timeout) every attempt is allowed as if there were no limit, so logins keep working from the
    passwd-file (DESIGN: Redis down, logins keep working); one warning when it starts, one line
    when Redis is back. Dovecot does the same when this server is down
    (auth_policy_reject_on_fail = no). Bodies over 8 KB are refused (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
from aiohttp import web

from txmail import store
from txmail.authpolicy import decide
from txmail.config import Settings
from txmail.store import Keys, scripts
from txmail.tokens import authpolicy as credentials

log = logging.getLogger("txmail.authpolicy")

ANSWER_WITHIN = 1.5  # seconds; Dovecot gives up after auth_policy_server_timeout_msecs (2 s)
MAX_BODY = 8192

RunScript = Callable[[str, list[str], list[Any]], Awaitable[Any]]


class Guard:
    """The Redis side of the limit: the two scripts, called through `run_script` (Redis in
    production, a fake in tests), with the clock passed in."""

    def __init__(
        self,
        run_script: RunScript,
        keys: Keys,
        limits: decide.Limits,
        fingerprint_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_script = run_script
        self.keys = keys
        self.limits = limits
        self.fingerprint_key = fingerprint_key
        self.clock = clock

    def _keys(self, login: str) -> list[str]:
        return [self.keys.auth_failures(login), self.keys.auth_known(login)]

    async def check(self, attempt: decide.Attempt) -> tuple[decide.Verdict, float]:
        """The verdict for an attempt before its password is checked, and the login's recent
        failures before it."""
        limits = self.limits
        known, score = await self.run_script(
            "auth_check",
            self._keys(attempt.login),
            [
                repr(self.clock()),
                decide.fingerprint(self.fingerprint_key, attempt),
                repr(limits.forgive_seconds),
                str(limits.reject_failures),
                repr(limits.remember_seconds),
            ],
        )
        failures = float(score)
        return decide.verdict(bool(int(known)), failures, limits), failures

    async def succeeded(self, attempt: decide.Attempt) -> bool:
        """Record a successful login; True when its client was not known before."""
        limits = self.limits
        new = await self.run_script(
            "auth_report",
            self._keys(attempt.login),
            [
                repr(self.clock()),
                decide.fingerprint(self.fingerprint_key, attempt),
                repr(limits.forgive_seconds),
                repr(limits.remember_seconds),
                str(limits.remember_max),
            ],
        )
        return bool(int(new))


class Outage:
    """Logs the start and the end of a Redis outage once each, not once per login."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "Redis unavailable (%s): allowing every login without the guessing "
                "limit until it is back",
                exc.__class__.__name__,
            )

    def ok(self) -> None:
        if self.since is not None:
            log.info(
                "Redis is back after %.0f s: the guessing limit applies again",
                time.monotonic() - self.since,
            )
            self.since = None


GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
HEADER_VALUE: web.AppKey[str] = web.AppKey("header_value", str)
OUTAGE: web.AppKey[Outage] = web.AppKey("outage", Outage)


def answer(verdict: decide.Verdict) -> web.Response:
    return web.json_response(verdict.answer())


async def policy(request: web.Request) -> web.StreamResponse:
    app = request.app
    given = request.headers.get(credentials.HEADER, "").strip()
    if not hmac.compare_digest(given.encode(), app[HEADER_VALUE].encode()):
        return web.json_response({"status": decide.ALLOW, "error": "forbidden"}, status=403)
    command = request.query.get("command", "")
    if command not in ("allow", "report"):
        return web.json_response({"error": "command must be allow or report"}, status=400)
    try:
        body = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    guard, outage = app[GUARD], app[OUTAGE]
    if command == "report":
        report = decide.report(body)
        if report is None or not report.success:
            # A failure was counted before its password was checked; a refusal is no guess.
            return answer(decide.Verdict(decide.ALLOW))
        try:
            new = await asyncio.wait_for(guard.succeeded(report.attempt), ANSWER_WITHIN)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            outage.failed(exc)
            return answer(decide.Verdict(decide.ALLOW))
        outage.ok()
        if new:
            log.info(
                "%s: client %s logged in; it is known from now on",
                report.attempt.login,
                report.attempt.remote or "-",
            )
        return answer(decide.Verdict(decide.ALLOW))
    attempt = decide.attempt(body)
    if attempt is None:
        return answer(decide.Verdict(decide.ALLOW))
    try:
        verdict, failures = await asyncio.wait_for(guard.check(attempt), ANSWER_WITHIN)
    except (TimeoutError, redis.RedisError, OSError) as exc:
        outage.failed(exc)
        return answer(decide.Verdict(decide.ALLOW))
    outage.ok()
    if verdict.status != decide.ALLOW:
        log.info(
            "%s: %s: %d recent failed logins; client %s",
            attempt.login,
            verdict.action,
            decide.recent(failures),
            attempt.remote or "-",
        )
    return answer(verdict)


def make_app(guard: Guard, header_value: str) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[GUARD] = guard
    app[HEADER_VALUE] = header_value
    app[OUTAGE] = Outage()
    app.router.add_post("/", policy)
    return app


def redis_scripts(settings: Settings) -> tuple[RunScript, Callable[[], Awaitable[None]]]:
    """Run the scripts on the configured Redis or Cluster; and how to close the client."""
    url = store.effective_url(settings)
    timeout = min(settings.redis.timeout, ANSWER_WITHIN)
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
    if settings.redis.cluster:
        client = redis.asyncio.cluster.RedisCluster.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    else:
        client = redis.asyncio.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    registered = {name: scripts.get(client, name) for name in ("auth_check", "auth_report")}

    async def run(name: str, keys: list[str], args: list[Any]) -> Any:
        return await registered[name](keys=keys, args=args)

    return run, client.aclose


def listen_address(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.authpolicy.listen.rpartition(":")
    return host.strip("[]"), int(port)


async def _serve(settings: Settings) -> None:
    key = credentials.read_key(settings)
    run_script, close = redis_scripts(settings)
    guard = Guard(
        run_script,
        Keys(settings.redis.prefix),
        decide.Limits.from_settings(settings.authpolicy),
        credentials.fingerprint_key(key),
    )
    runner = web.AppRunner(
        make_app(guard, credentials.header_value(key)), access_log=None, handle_signals=False
    )
    await runner.setup()
    host, port = listen_address(settings)
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    limits = guard.limits
    log.info(
        "listening on %s:%d: delays past %d recent failed logins, refusals from %d, "
        "one failure forgiven per %.0f s",
        host,
        port,
        limits.free_failures,
        limits.reject_failures,
        limits.forgive_seconds,
    )
    await stop.wait()
    await runner.cleanup()
    with contextlib.suppress(redis.RedisError, OSError):
        await close()
    log.info("stopped")


def serve(settings: Settings) -> None:
    """Run the policy endpoint until SIGTERM."""
    asyncio.run(_serve(settings))
