"""txmail console: the web pages account holders and operators see, at /console/ on the tracker.

SYNOPSIS
    app.add_subapp("/console/", make_console(services))     (txmail/tracker/server.py)

DESCRIPTION
    Server-rendered HTML (Jinja2 through aiohttp-jinja2, templates/), one CSS file and no
    script needed but for live updates (static/, at /console/static/). Every page works
    without JavaScript.

    An account holder logs in with one of the account's SASL logins or the account's own
    name and SMTP password (txmail/accounts/passwords.py), or with an API key (as /v1 checks
    it), and sees that account only. An operator logs in with a token of `txmail console
    token` and sees every account. Sessions, CSRF and the login limit: session.py.

    Pages: login.py (login, logout), account.py (suppressions, domains, webhooks, SMTP
    settings), operator.py (accounts, nodes, unparsed bounces), insight.py (overview,
    messages, a message's timeline, tags). What a page shows comes from the core
    (txmail/reports/ and the packages the CLI uses), never from another daemon.

SECURITY
    Every answer carries a Content-Security-Policy that allows nothing from another origin
    and no framing, and Cache-Control: no-store. A page shows the viewer's own account,
    whatever the URL or form says (session.account_of); only an operator chooses one.

ERRORS
    An HTML page with the status and a sentence saying what to do, never a traceback: bad
    input 400, CSRF 403, unknown pages and ids 404, the login limit 429, Redis trouble or a
    bug 503 (logged).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from txmail.errors import TemporaryFailure
from txmail.store import secrets
from txmail.tokens.console import ConsoleSigner
from txmail.tracker.console import account, insight, login, operator
from txmail.tracker.console.session import (
    ACCOUNT_NAMES,
    STATE,
    VIEWER,
    ConsoleState,
    csrf_token,
    load_viewer,
)
from txmail.tracker.services import SERVICES, Services

log = logging.getLogger("txmail.tracker.console")

HERE = Path(__file__).parent
STATIC = "/console/static/"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SENTENCES = {
    400: "The request cannot be served as it is; go back and check what you entered",
    403: "This is not yours to see or change",
    404: "No such page, or nothing with this id in your account; check the link",
    405: "This page cannot be used that way; open it from the menu",
    413: "What you sent is too large for the console",
}
UNAVAILABLE = (
    "The console cannot reach its data store right now: try again in a minute "
    "(the operator sees why in the tracker's log)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_page(request: web.Request, status: int, text: str) -> web.StreamResponse:
    context = {
        "status": status,
        "sentence": text,
        "viewer": request.get(VIEWER),
        "csrf_token": "",
        "account": None,
        "link": _linker(request, None),
    }
    response = aiohttp_jinja2.render_template("error.html", request, context, status=status)
    return response


def _sentence(exc: web.HTTPException) -> str:
    text = exc.text or ""
    if not text or text.startswith(f"{exc.status}:"):  # aiohttp's own "404: Not Found"
        return SENTENCES.get(exc.status, exc.reason)
    return text


@web.middleware
async def console_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the viewer, serve, and answer every failure with an HTML page and the headers."""
    try:
        if not request.path.startswith(STATIC):  # the stylesheet needs no session
            await load_viewer(request)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(HEADERS)
            raise
        response = _error_page(request, exc.status, _sentence(exc))
        for name in ("Retry-After", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except TemporaryFailure as exc:
        log.warning("console: %s %s: %s", request.method, request.path, exc)
        response = _error_page(request, 503, UNAVAILABLE)
        response.headers["Retry-After"] = "60"
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a bug answers a page, not a traceback
        log.exception("console: internal error in %s %s", request.method, request.path)
        response = _error_page(
            request,
            503,
            "The console could not show this page because of an internal error: try again "
            "in a few minutes (the operator finds the cause in the tracker's log)",
        )
    response.headers.update(HEADERS)
    return response


def _linker(request: web.Request, shown: str | None) -> Callable[..., str]:
    """link(path, **query): a console URL; an operator's keeps the account being looked at."""
    seen = request.get(VIEWER)

    def link(path: str, **query: Any) -> str:
        params = {k: v for k, v in query.items() if v not in (None, "")}
        if seen is not None and seen.operator and shown and "account" not in params:
            params = {"account": shown, **params}
        return path + ("?" + urlencode(params) if params else "")

    return link


async def page_context(request: web.Request) -> dict[str, Any]:
    """What every template gets: viewer, csrf_token, account (None when none is chosen), link."""
    seen = request.get(VIEWER)
    shown: str | None = None
    if seen is not None:
        if not seen.operator:
            shown = seen.account
        else:
            asked = request.query.get("account", "").strip()
            shown = asked if asked in request.get(ACCOUNT_NAMES, frozenset()) else None
    return {
        "viewer": seen,
        "csrf_token": csrf_token(request),
        "account": shown,
        "link": _linker(request, shown),
    }


async def index(request: web.Request) -> web.StreamResponse:
    seen = request.get(VIEWER)
    if seen is None:
        raise web.HTTPFound("/console/login")
    raise web.HTTPFound("/console/accounts" if seen.operator else "/console/overview")


def make_console(services: Services) -> web.Application:
    """The console, to be mounted at /console/ on the tracker's app."""
    # aiohttp-jinja2 keeps the context processors' values under a str request key, which
    # aiohttp warns about (once); it is theirs, and harmless.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_jinja2")
    app = web.Application(middlewares=[console_errors])
    app[SERVICES] = services
    app[STATE] = ConsoleState(
        services=services,
        signer=ConsoleSigner(
            lambda: secrets.accepted(services.settings, services.client, "console_key_file")
        ),
    )

    async def stop_outward(app: web.Application) -> None:
        app[STATE].outward.shutdown(wait=False, cancel_futures=True)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        # For the answers streamed from the handler (the CSV export), which are sent before
        # console_errors could add them.
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)

    app.on_cleanup.append(stop_outward)
    app.on_response_prepare.append(add_headers)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        context_processors=[page_context],
    )
    app.router.add_get("/", index)
    app.router.add_static("/static/", HERE / "static", name="static")
    login.add_routes(app)
    account.add_routes(app)
    operator.add_routes(app)
    insight.add_routes(app)
    return app
