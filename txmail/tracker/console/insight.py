"""The console's data pages: overview, messages, a message's timeline, tags.

    GET /console/overview?tag=&days=      30 days (days=1..90) of sent, delivered, bounced
                                          and complaints as charts and a table; bounce and
                                          complaint rates against the suspension thresholds;
                                          warm-up day, today's quota, usage against every
                                          limit, the reputation window. tag= filters every
                                          daily number.
    GET /console/messages?recipient=&tag=&kind=&since=&until=&id=&before=
                                          search form and the messages found (a page of at
                                          most 100, newest first; "older" carries on)
    GET /console/messages/{id}            one message's timeline; another account's id is
                                          the same 404 as a missing one
    GET /console/tags                     the account's tags of the last 30 days with counts,
                                          each linking to the overview filtered by it

Every number comes from txmail/reports (series, search, timeline, charts), read in a thread
(Redis is a blocking client here as in /v1). The account is always session.account_of(): an
account holder's own, whatever the address says; an operator's the `account` parameter.

Fails: 400 with the sentence of what to fix for a bad field (the search page keeps the form),
404 for an unknown message, 503 (the console's error page) when Redis is away.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from txmail.accounts.records import Accounts
from txmail.accounts.usage import clock
from txmail.errors import UsageError
from txmail.events import KINDS
from txmail.reports import charts
from txmail.reports.search import MAX_PAGE, parse_query, search
from txmail.reports.series import (
    DEFAULT_DAYS,
    RATES_KEPT_DAYS,
    Overview,
    read_overview,
    read_tags,
)
from txmail.reports.timeline import read_timeline
from txmail.stats import MAX_ANSWER_DAYS, OTHER, check_tag
from txmail.tracker.console.session import account_of, state
from txmail.tracker.services import Services

MAX_QUERY_FIELD = 400  # characters of any one query parameter read


def _services(request: web.Request) -> Services:
    return state(request).services


def _query(request: web.Request, name: str) -> str:
    return request.query.get(name, "")[:MAX_QUERY_FIELD].strip()


def _days(request: web.Request) -> int:
    raw = _query(request, "days")
    if not raw:
        return DEFAULT_DAYS
    # ASCII digits only: str.isdigit() is true for "²" and int() takes "٣"
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ANSWER_DAYS:
        raise web.HTTPBadRequest(
            text=f"days must be a whole number from 1 to {MAX_ANSWER_DAYS}; leave it out for "
            f"the last {DEFAULT_DAYS} days"
        )
    return int(raw)


def _tag(request: web.Request) -> str | None:
    raw = _query(request, "tag")
    if not raw:
        return None
    try:
        return check_tag(raw)
    except UsageError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _overview_charts(overview: Overview) -> list[tuple[str, Markup]]:
    """The overview's SVG charts (drawn by reports.charts: escaped, no script)."""
    of = f" of tag {overview.tag}" if overview.tag else ""
    dates = overview.dates
    sent = charts.bar_chart(
        f"Messages per day{of}",
        f"Messages accepted, recipients delivered, hard bounces and complaints per UTC day "
        f"over the last {len(dates)} days{of}; the table below has the same numbers.",
        dates,
        [
            charts.Series("sent", overview.values("accepted")),
            charts.Series("delivered", overview.values("delivery")),
            charts.Series("bounced", overview.values("bounce")),
            charts.Series("complaints", overview.values("complaint")),
        ],
    )
    bounce = charts.line_chart(
        f"Hard bounce rate per day{of}",
        f"Hard bounces as a percentage of recipients with a final outcome, per UTC day, "
        f"against the {overview.max_bounce_rate:g}% at which sending is suspended; a day "
        "without outcomes is a gap.",
        dates,
        [charts.Series("hard bounce rate", overview.rates("bounce"))],
        thresholds=[charts.Threshold("suspended above", overview.max_bounce_rate)],
        unit="%",
    )
    complaint = charts.line_chart(
        f"Complaint rate per day{of}",
        f"Complaints as a percentage of recipients with a final outcome, per UTC day, "
        f"against the {overview.max_complaint_rate:g}% at which sending is suspended; a day "
        "without outcomes is a gap.",
        dates,
        [charts.Series("complaint rate", overview.rates("complaint"))],
        thresholds=[charts.Threshold("suspended above", overview.max_complaint_rate)],
        unit="%",
    )
    titles = (f"Messages per day{of}", f"Hard bounce rate{of}", f"Complaint rate{of}")
    # Markup: reports.charts escapes every text it draws, and the SVG has no script
    return [(t, Markup(svg)) for t, svg in zip(titles, (sent, bounce, complaint), strict=True)]


def _read_overview(
    services: Services, name: str, days: int, tag: str | None
) -> tuple[Overview, list[Any]]:
    account = Accounts(services.client, services.keys).get(name)
    now = clock(services.settings)
    overview = read_overview(services.client, services.keys, account, now, days, tag)
    tags = read_tags(services.client, services.keys, name, now, days)
    return overview, tags


async def overview_page(request: web.Request) -> web.StreamResponse:
    name = account_of(request)
    days, tag = _days(request), _tag(request)
    overview, tags = await asyncio.to_thread(_read_overview, _services(request), name, days, tag)
    context = {
        "overview": overview,
        "charts": _overview_charts(overview),
        "tags": [row.tag for row in tags],
        "tag": tag or "",
        "days": days,
        "rates_kept_days": RATES_KEPT_DAYS,
    }
    return aiohttp_jinja2.render_template("overview.html", request, context)


async def messages_page(request: web.Request) -> web.StreamResponse:
    name = account_of(request)
    services = _services(request)
    fields = {
        field: _query(request, field)
        for field in ("recipient", "tag", "kind", "since", "until", "id", "before")
    }
    context: dict[str, Any] = {
        "fields": fields,
        "kinds": KINDS,
        "page": None,
        "error": "",
        "max_page": MAX_PAGE,
    }
    try:
        query = parse_query(fields)
    except UsageError as exc:
        context["error"] = str(exc)
        return aiohttp_jinja2.render_template("messages.html", request, context, status=400)
    ttl = services.settings.milter.message_ttl_days * 86400
    context["page"] = await asyncio.to_thread(
        search, services.client, services.keys, name, query, ttl
    )
    context["searched"] = any(v for k, v in fields.items() if k != "before")
    context["older"] = {k: v for k, v in fields.items() if k != "before" and v}
    return aiohttp_jinja2.render_template("messages.html", request, context)


async def message_page(request: web.Request) -> web.StreamResponse:
    name = account_of(request)
    services = _services(request)
    queue_id = request.match_info["message_id"][:64]
    ttl = services.settings.milter.message_ttl_days * 86400
    timeline = await asyncio.to_thread(
        read_timeline, services.client, services.keys, ttl, name, queue_id
    )
    if timeline is None:
        days = services.settings.milter.message_ttl_days
        raise web.HTTPNotFound(
            text=f"No message {queue_id!r} is known in this account (records are kept {days} "
            "days); search for it by recipient on the messages page"
        )
    context = {"timeline": timeline, "message": timeline.message, "queue_id": queue_id}
    return aiohttp_jinja2.render_template("message.html", request, context)


async def tags_page(request: web.Request) -> web.StreamResponse:
    name = account_of(request)
    services = _services(request)
    days = _days(request)
    rows = await asyncio.to_thread(
        read_tags, services.client, services.keys, name, clock(services.settings), days
    )
    context = {"rows": rows, "days": days, "other": OTHER}
    # the footnote on the folded bucket only when a row is that bucket
    context["folded"] = any(row.tag == OTHER for row in rows)
    return aiohttp_jinja2.render_template("tags.html", request, context)


def add_routes(app: web.Application) -> None:
    """Add the overview, messages and tags pages to the console's sub-application."""
    app.router.add_get("/overview", overview_page)
    app.router.add_get("/messages", messages_page)
    app.router.add_get("/messages/{message_id}", message_page)
    app.router.add_get("/tags", tags_page)
