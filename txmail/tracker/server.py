"""txmail tracker: the HTTP server of opens, clicks, the send API (/v1) and /metrics.

SYNOPSIS
    txmail tracker            (started by `txmail up`; listens on listen.address:listen.http)

DESCRIPTION
    GET|HEAD /o/TOKEN.gif   records an open, answers a 1x1 transparent GIF that is never cached.
    GET|HEAD /c/TOKEN       records a click, answers 302 to the URL signed into TOKEN.
    /v1/...                 the HTTP send API (txmail/tracker/api.py; /v1/openapi.json).
    GET /metrics            Prometheus metrics (txmail/tracker/metrics.py), to the networks in
                            tracker.metrics_networks only.
    GET /healthz            "ok" while the server runs.
    /console/...            the web console (txmail/tracker/console), unless
                            console.enabled = false.

    A token that does not verify (forged, cut, changed in any way) is a 404: the tracker only
    ever redirects to a URL it signed itself, so it is no open redirect. Opens and clicks are
    answered at once and recorded in the background (txmail/tracker/recording.py); each event
    says in its details whether a machine (link scanner, prefetch) likely made it
    (txmail/tracker/machines.py), with the client's address and User-Agent.

LIMITS
    No request body is read past what the request can need (tracker/api.py, LIMITS). Before
    the API key is checked the ceiling is a send request for the largest message Postfix
    takes (postfix.message_size_limit): a larger Content-Length is answered 413 at once,
    whatever the path, and the body is never read.
ERRORS
    Every error is JSON: {"error": {"message": SENTENCE, "smtp_code": N, "status": "X.Y.Z"}},
    never a traceback; a bug answers 503 with a sentence and is logged.
LOGS
    Component tracker (txmail/logs.py): one line per recorded first open or click
    (txmail.events), API sends and refusals with the queue id; never an API key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from txmail import store
from txmail.config import Settings
from txmail.events import Recorder
from txmail.store import secrets
from txmail.tokens.links import LinkSigner, public_base_url
from txmail.tracker import api, metrics
from txmail.tracker.console import make_console
from txmail.tracker.machines import classify
from txmail.tracker.recording import Hit, HitWriter, Recording
from txmail.tracker.services import SERVICES, Services, client_address, error_response, not_found

log = logging.getLogger("txmail.tracker")

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_AGENT = 512


def _hit(request: web.Request, kind: str, token: str) -> Hit | None:
    services = request.app[SERVICES]
    mark = services.signer.verify(token)
    if mark is None or mark.kind != kind:
        return None
    now = time.time()
    agent = request.headers.get("User-Agent", "")[:MAX_AGENT]
    since = now - mark.sent_at if mark.sent_at else None
    verdict = classify(
        kind, request.method, agent, since, services.settings.tracker.machine_seconds
    )
    details: dict[str, Any] = {
        "user_agent": agent,
        "ip": client_address(request, services.settings),
        **verdict.details(),
    }
    if kind == "click":
        details["url"] = mark.url
        details["link_index"] = mark.index
    hit = Hit(mark=mark, details=details, at=now)
    if services.recording is not None:
        services.recording.submit(hit)
    return hit


async def open_pixel(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    if not token.endswith(".gif") or _hit(request, "open", token[:-4]) is None:
        return not_found()
    return web.Response(body=PIXEL, content_type="image/gif", headers=NO_CACHE)


async def click(request: web.Request) -> web.StreamResponse:
    hit = _hit(request, "click", request.match_info["token"])
    if hit is None:
        return not_found()
    # The target comes only from the signed token: never from the query or a header.
    return web.Response(
        status=302, headers={"Location": hit.mark.url, **NO_CACHE, "Referrer-Policy": "no-referrer"}
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


HTTP_SENTENCES = {
    404: ("No such page; see /v1/openapi.json for the API", 550, "5.1.0"),
    405: ("This method is not allowed here; see /v1/openapi.json", 502, "5.5.1"),
    413: ("The request is too large; send a smaller message", 552, "5.3.4"),
}


def body_ceiling(settings: Settings) -> int:
    """The largest request body any request may have: a send of the largest message."""
    return api.send_body_limit(settings.postfix.message_size_limit)


@web.middleware
async def body_limit(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """413 for a declared body over the ceiling, before anything reads it."""
    ceiling = body_ceiling(request.app[SERVICES].settings)
    declared = request.content_length
    if declared is not None and declared > ceiling:
        response = error_response(
            413,
            f"The request body is {declared} bytes; this relay takes requests of at most "
            f"{ceiling} bytes (a send of its largest message, "
            f"{request.app[SERVICES].settings.postfix.message_size_limit} bytes); make the "
            "message smaller, for example by linking to large files instead of attaching them",
            552,
            "5.3.4",
        )
        response.force_close()  # the body stays unread: never reuse the connection
        return response
    return await handler(request)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors and any bug as the JSON error shape, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message, smtp_code, status = HTTP_SENTENCES.get(
            exc.status, (exc.reason or "The request cannot be served", 501, "5.5.4")
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, message, smtp_code, status, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a bug must answer JSON, not a traceback
        log.exception("internal error in %s %s", request.method, request.path)
        return error_response(
            503,
            "txmail could not answer this request because of an "
            "internal error; try again in a few minutes",
            451,
            "4.3.0",
            headers={"Retry-After": "60"},
        )


def make_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, body_limit], client_max_size=body_ceiling(services.settings)
    )
    app[SERVICES] = services
    app.router.add_get("/o/{token}", open_pixel)
    app.router.add_get("/c/{token}", click)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics.handler)
    api.add_routes(app)
    if services.settings.console.enabled:
        app.router.add_get("/console", to_console)
        app.add_subapp("/console/", make_console(services))
    return app


async def to_console(request: web.Request) -> web.StreamResponse:
    return web.Response(status=301, headers={"Location": "/console/"})


def build_services(settings: Settings) -> Services:
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    recorder = Recorder(
        client,
        keys,
        seen_ttl=settings.milter.message_ttl_days * 86400,
        counter_days=settings.events.counter_days,
        tags_per_day=settings.events.tags_per_day,
    )
    services = Services(
        settings=settings,
        signer=LinkSigner(lambda: secrets.accepted(settings, client, "tracking_key_file")),
        recording=None,
        client=client,
        keys=keys,
    )

    def dropped() -> None:
        services.dropped += 1

    services.recording = Recording(HitWriter(client, keys, recorder), on_drop=dropped)
    return services


async def _serve(settings: Settings) -> None:
    services = build_services(settings)
    app = make_app(services)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.listen.address, settings.listen.http, reuse_address=True, backlog=1024
    )
    await site.start()
    assert services.recording is not None
    recording_task = asyncio.create_task(services.recording.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "listening on http://%s:%d (links point at %s)",
        settings.listen.address,
        settings.listen.http,
        public_base_url(settings),
    )
    await stop.wait()
    log.info("stopping: recording what is queued")
    await site.stop()
    await services.recording.drain(5.0)
    recording_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recording_task
    await runner.cleanup()
    log.info("stopped")


def serve(settings: Settings) -> None:
    """Run the tracker until SIGTERM."""
    # The recording thread competes with the event loop for the GIL; a shorter switch
    # interval than the default 5 ms keeps that out of the answers' latency.
    sys.setswitchinterval(0.001)
    asyncio.run(_serve(settings))
