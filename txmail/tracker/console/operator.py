"""The operator's pages of the console: accounts, nodes, unparsed bounces.

    GET  /console/accounts            every account: state, usage against each limit, warm-up,
                                      reputation; links to its pages (?account=NAME)
    POST /console/accounts/suspend    account, reason: as `txmail accounts suspend`
    POST /console/accounts/resume     account: as `txmail accounts resume`
    GET  /console/nodes               every node's component heartbeats (from Redis) and this
                                      node's components asked now (txmail/health.py)
    GET  /console/unparsed            the returned mail the bounce pipe kept, newest first
    GET  /console/unparsed/{id}       one of them as received (text, at most SHOWN_BYTES)

Only an operator's session opens these: an account holder gets 403. Suspending ends the
account's console sessions at their next request (session.py) and refuses its mail, as the
CLI's suspension does (the same Accounts.suspend).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from txmail.accounts.records import Accounts
from txmail.errors import NotFound
from txmail.reports import nodes as node_reports
from txmail.reports.accounts import account_usage, warmup_line
from txmail.store import unparsed
from txmail.tracker.console.login import read_form
from txmail.tracker.console.session import ACCOUNT_NAMES, check_csrf, redirect, state, viewer

log = logging.getLogger("txmail.tracker.console")

MAX_ACCOUNTS = 500  # rows of the accounts page
UNPARSED_SHOWN = 100
SHOWN_BYTES = 256 * 1024
MAX_REASON = 200
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # fullmatch; ASCII digits only
DONE = {
    "suspended": "The account is suspended: its mail is refused and its console sessions end.",
    "resumed": "The account is resumed: it may send again.",
}


def operator_only(request: web.Request) -> None:
    if not viewer(request).operator:
        raise web.HTTPForbidden(text="Only the operator sees this page; log in with a token")


def _iso(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _rows(services: Any) -> tuple[list[dict[str, Any]], int]:
    accounts = Accounts(services.client, services.keys).all()
    rows = []
    for account in accounts[:MAX_ACCOUNTS]:
        usage = account_usage(services.settings, services.client, account)
        rows.append({"account": account, "usage": usage, "warmup": warmup_line(usage)})
    return rows, len(accounts)


async def accounts_page(request: web.Request) -> web.StreamResponse:
    operator_only(request)
    services = state(request).services
    rows, total = await asyncio.to_thread(_rows, services)
    word = request.query.get("done", "")
    return aiohttp_jinja2.render_template(
        "accounts.html",
        request,
        {"rows": rows, "total": total, "notice": DONE.get(word, ""), "iso": _iso},
    )


async def _change(request: web.Request, suspend: bool) -> web.StreamResponse:
    operator_only(request)
    form = await read_form(request)
    check_csrf(request, form)
    name = form.get("account", "")
    name = name.strip() if isinstance(name, str) else ""
    if name not in request.get(ACCOUNT_NAMES, frozenset()):
        raise web.HTTPNotFound(text=f"There is no account named {name[:64]!r}")
    services = state(request).services
    accounts = Accounts(services.client, services.keys)
    try:
        if suspend:
            reason = form.get("reason", "")
            reason = reason.strip()[:MAX_REASON] if isinstance(reason, str) else ""
            await asyncio.to_thread(accounts.suspend, name, reason or "suspended by the operator")
        else:
            await asyncio.to_thread(accounts.resume, name)
    except NotFound:
        raise web.HTTPNotFound(text=f"There is no account named {name!r}") from None
    log.info("console: the operator %s account %s", "suspended" if suspend else "resumed", name)
    return redirect(f"/console/accounts?done={'suspended' if suspend else 'resumed'}")


async def suspend(request: web.Request) -> web.StreamResponse:
    return await _change(request, True)


async def resume(request: web.Request) -> web.StreamResponse:
    return await _change(request, False)


async def nodes_page(request: web.Request) -> web.StreamResponse:
    operator_only(request)
    services = state(request).services
    now = time.time()
    # ?live=1: the live update of the heartbeats table (static/live.js, every 15 s per open
    # tab) reads Redis only; the components are asked when the page itself is loaded.
    live = request.query.get("live", "") == "1"
    found, probes = await asyncio.gather(
        asyncio.to_thread(
            node_reports.nodes, services.client, services.keys, services.settings, now
        ),
        asyncio.to_thread(node_reports.probe_this_node, services.settings)
        if not live
        else asyncio.sleep(0, []),
    )
    return aiohttp_jinja2.render_template(
        "nodes.html",
        request,
        {
            "nodes": found,
            "probes": probes,
            "live": live,
            "iso": _iso,
            "stale": node_reports.STALE_SECONDS,
            "components": node_reports.COMPONENTS,
        },
    )


async def unparsed_page(request: web.Request) -> web.StreamResponse:
    operator_only(request)
    services = state(request).services
    kept = await asyncio.to_thread(
        unparsed.newest_summaries, services.client, services.keys, UNPARSED_SHOWN
    )
    return aiohttp_jinja2.render_template(
        "unparsed.html", request, {"kept": kept, "iso": _iso, "shown_max": UNPARSED_SHOWN}
    )


async def unparsed_one(request: web.Request) -> web.StreamResponse:
    operator_only(request)
    entry_id = request.match_info["entry_id"]
    if not ENTRY_ID.fullmatch(entry_id):
        raise web.HTTPNotFound(text="No kept bounce has this id")
    services = state(request).services
    found = await asyncio.to_thread(unparsed.get, services.client, services.keys, entry_id)
    if found is None:
        raise web.HTTPNotFound(text="No kept bounce has this id")
    text = found.raw[:SHOWN_BYTES].decode("utf-8", "replace")
    return aiohttp_jinja2.render_template(
        "unparsed_one.html",
        request,
        {"bounce": found, "text": text, "cut": len(found.raw) > SHOWN_BYTES, "iso": _iso},
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/accounts", accounts_page)
    router.add_post("/accounts/suspend", suspend)
    router.add_post("/accounts/resume", resume)
    router.add_get("/nodes", nodes_page)
    router.add_get("/unparsed", unparsed_page)
    router.add_get("/unparsed/{entry_id}", unparsed_one)
