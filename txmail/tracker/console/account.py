"""The account pages of the console: suppressions, domains, webhooks, SMTP settings.

    GET  /console/suppressions?q=&list=     search (newest first), add, remove, import, export
    POST /console/suppressions/add          recipient, list, reason
    POST /console/suppressions/remove       recipient, list
    POST /console/suppressions/import       a CSV file (multipart), list for bare addresses
    GET  /console/suppressions/export.csv   every live entry as CSV (txmail/reports)
    GET  /console/domains                   each domain's records and state
    POST /console/domains/verify            domain: look its records up now (dnscheck.verify,
                                            as `txmail domains verify`), at most VERIFY_SECONDS,
                                            in the console's own small pool, one per account
    GET  /console/webhooks                  endpoint, backlog, retry state, dead letters,
                                            the last posts and their answers
    POST /console/webhooks/replay           event (an id) or all: the dead letters again
    POST /console/webhooks/test             a signed test post, and its answer (at most
                                            webhooks.timeout in all, one per account)
    POST /console/webhooks/rotate           a new signing secret, shown once
    GET  /console/smtp                      host, ports and login names

Every page shows the account of session.account_of() and nothing else: a domain, event or
recipient named in a form is looked for in that account alone. Each POST checks the CSRF
token first and ends in a redirect (303) back to its page with a word saying what was done,
or in the page again with a sentence saying what to fix (400). What the pages do is the CLI's
own code in the core (store/suppressions.py, dnscheck.py, webhook_endpoints.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from txmail import dnscheck, webhook_endpoints, webhook_posts
from txmail.accounts.domains import Domain, Domains
from txmail.accounts.records import Accounts, Logins
from txmail.errors import NotFound, TemporaryFailure, UsageError
from txmail.reports import suppressions_csv
from txmail.store.suppressions import LISTS, Suppressions
from txmail.tokens import webhooks as signing
from txmail.tokens.links import public_base_url
from txmail.tracker.console.login import MAX_FIELD, read_form
from txmail.tracker.console.session import account_of, check_csrf, redirect, state, viewer

log = logging.getLogger("txmail.tracker.console")

SHOWN = 200  # suppressions on one page
SCANNED = 50_000  # entries one search looks through at most
VERIFY_SECONDS = 20.0
DNS_TIMEOUT = 5.0
DEAD_SHOWN = 100
ROTATE_OVERLAP = 86400.0
DONE = {
    "added": "The address is suppressed: no mail of this account goes to it any more.",
    "removed": "The address is off the list: this account may send to it again.",
    "absent": "That address was not on the list.",
    "imported": "The file was imported.",
    "replayed": "The dead letters are queued again: the dispatcher posts them within seconds.",
    "none": "There were no such dead letters.",
}
# With a count (n=), in the singular or plural as it needs.
COUNTED = {
    "imported": ("The file was imported (1 entry).", "The file was imported ({n} entries)."),
    "replayed": (
        "The dead letter is queued again: the dispatcher posts it within seconds.",
        "The {n} dead letters are queued again: the dispatcher posts them within seconds.",
    ),
}


def _done(request: web.Request) -> str:
    word = request.query.get("done", "")
    text = DONE.get(word, "")
    count = request.query.get("n", "")
    if not count:
        return text
    # ASCII digits only: str.isdigit() is true for "²", which int() refuses
    if not (count.isascii() and count.isdigit() and len(count) <= 9):
        raise web.HTTPBadRequest(
            text="n must be a whole number (the count the previous page put in the link); "
            "leave it out or open the page from the menu"
        )
    if text and word in COUNTED:
        number = int(count)
        one, many = COUNTED[word]
        text = one if number == 1 else many.format(n=number)
    return text


def _field(form: Any, name: str, limit: int = MAX_FIELD) -> str:
    value = form.get(name, "")
    return value[:limit].strip() if isinstance(value, str) else ""


def _back(request: web.Request, path: str, **query: Any) -> web.Response:
    """303 to the page, keeping the account an operator is looking at."""
    params = {k: v for k, v in query.items() if v not in (None, "")}
    if viewer(request).operator:
        params = {"account": account_of(request), **params}
    return redirect(path + ("?" + urlencode(params) if params else ""))


async def _run(func: Any, *args: Any) -> Any:
    return await asyncio.to_thread(func, *args)


BUSY = {
    "verify": "A DNS check of this account's domains is still running: wait for its answer "
    "(at most a minute) and check again",
    "test": "A test post of this account is still waiting for the endpoint's answer: wait "
    "for it and send the next one then",
}


def _claim(request: web.Request, what: str, account: str) -> tuple[str, str]:
    """Mark an outward call of `what` in flight for the account; 429 with a sentence when one
    is already (a double click, or many at once to tie the tracker up)."""
    busy = state(request).busy
    key = (what, account)
    if key in busy:
        raise web.HTTPTooManyRequests(text=BUSY[what], headers={"Retry-After": "30"})
    busy.add(key)
    return key


# -- suppressions ---------------------------------------------------------------------------


async def suppressions_page(
    request: web.Request, message: str = "", status: int = 200
) -> web.StreamResponse:
    account = account_of(request)
    services = state(request).services
    text = request.query.get("q", "")[:320]
    list_name = request.query.get("list", "")
    if list_name not in LISTS:
        list_name = ""
    lists = Suppressions(services.client, services.keys)
    found = await _run(
        suppressions_csv.search, lists, account, text, list_name or None, SHOWN, SCANNED
    )
    total = await _run(lists.count, account)
    return aiohttp_jinja2.render_template(
        "suppressions.html",
        request,
        {
            "entries": found.entries,
            "complete": found.complete,
            "total": total,
            "query": text,
            "list_name": list_name,
            "lists": LISTS,
            "shown_max": SHOWN,
            "message": message,
            "notice": _done(request),
            "upload_max": services.settings.console.upload_max_bytes,
            "rows_max": services.settings.console.upload_max_rows,
            "iso": _iso,
        },
        status=status,
    )


def _iso(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


async def suppression_add(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    lists = Suppressions(services.client, services.keys)
    reason = _field(form, "reason", 512) or "added in the console"
    try:
        await _run(lists.add, account, _field(form, "list"), _field(form, "recipient", 320), reason)
    except UsageError as exc:
        return await suppressions_page(request, str(exc), 400)
    return _back(request, "/console/suppressions", done="added")


async def suppression_remove(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    lists = Suppressions(services.client, services.keys)
    try:
        removed = await _run(
            lists.remove, account, _field(form, "list"), _field(form, "recipient", 320)
        )
    except UsageError as exc:
        return await suppressions_page(request, str(exc), 400)
    return _back(request, "/console/suppressions", done="removed" if removed else "absent")


async def suppression_import(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    limits = state(request).services.settings.console
    form = await read_form(request, limits.upload_max_bytes + 16 * 1024)
    check_csrf(request, form)
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return await suppressions_page(request, "Choose a CSV file to import", 400)
    raw = upload.file.read(limits.upload_max_bytes + 1)
    if len(raw) > limits.upload_max_bytes:
        return await suppressions_page(
            request,
            f"The file is larger than {limits.upload_max_bytes} bytes; split it into smaller files",
            400,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return await suppressions_page(
            request, "The file is not UTF-8 text; save it as UTF-8 CSV", 400
        )
    list_name = _field(form, "list") or None
    services = state(request).services
    lists = Suppressions(services.client, services.keys)
    try:
        count = await _run(
            suppressions_csv.import_csv, lists, account, text, list_name, limits.upload_max_rows
        )
    except UsageError as exc:
        return await suppressions_page(request, f"Nothing was imported: {exc}", 400)
    log.info("console: %d suppressions imported for %s", count, account)
    return _back(request, "/console/suppressions", done="imported", n=count)


async def suppression_export(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    services = state(request).services
    lists = Suppressions(services.client, services.keys)
    lines = suppressions_csv.export_csv(lists.entries(account))
    day = time.strftime("%Y%m%d", time.gmtime())
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="suppressions-{account}-{day}.csv"',
        }
    )
    # Streamed a chunk at a time (the entries are read a page at a time): an export holds
    # EXPORT_CHUNK lines in memory, however long the lists are.
    chunk = await _run(_next_lines, lines)
    await response.prepare(request)
    while chunk:
        await response.write("".join(chunk).encode())
        chunk = await _run(_next_lines, lines)
    await response.write_eof()
    return response


EXPORT_CHUNK = 500


def _next_lines(lines: Iterator[str]) -> list[str]:
    return list(itertools.islice(lines, EXPORT_CHUNK))


# -- domains --------------------------------------------------------------------------------


def _domains_of(services: Any, account: str) -> list[tuple[Domain, bool]]:
    """The domains the account may send from (the account's own list, which `txmail accounts
    add --domain` writes), each with its domain record, or a bare one and False when it has
    none yet (no DKIM key: `txmail domains add` not run); then any record not on that list."""
    records = {d.name: d for d in Domains(services.client, services.keys).list(account)}
    owned = Accounts(services.client, services.keys).get(account).domains
    shown = [
        (records.pop(name), True) if name in records else (Domain(name, account), False)
        for name in owned
    ]
    return shown + [(records[name], True) for name in sorted(records)]


async def domains_page(
    request: web.Request,
    verification: dnscheck.Verification | None = None,
    message: str = "",
    status: int = 200,
) -> web.StreamResponse:
    account = account_of(request)
    services = state(request).services
    settings = services.settings
    found = await _run(_domains_of, services, account)
    shown = [
        {
            "domain": d,
            "keyed": keyed,
            "records": dnscheck.records(d, settings),
            "verified": _iso(d.verified_at) if d.verified_at else "",
        }
        for d, keyed in found
    ]
    return aiohttp_jinja2.render_template(
        "domains.html",
        request,
        {"domains": shown, "verification": verification, "message": message},
        status=status,
    )


async def domain_verify(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    settings = services.settings
    name = _field(form, "domain", 253).lower()
    store = Domains(services.client, services.keys)
    found = await _run(store.find, name)
    if found is None or found.account != account:
        raise web.HTTPNotFound(text=f"This account has no domain {name[:253]!r}")
    resolve = dnscheck.resolver(list(settings.domains.nameservers), timeout=DNS_TIMEOUT)
    console = state(request)
    key = _claim(request, "verify", account)
    loop = asyncio.get_running_loop()

    def release(_: object) -> None:
        # The lookup's thread may outlive the wait below: the account's check is in flight
        # until the thread is done, however long the nameservers take.
        try:
            loop.call_soon_threadsafe(console.busy.discard, key)
        except RuntimeError:  # the loop is closed: the tracker stopped
            pass

    try:
        running = console.outward.submit(dnscheck.verify, store, name, settings, resolve)
    except RuntimeError:  # the pool is shut down: the tracker is stopping
        console.busy.discard(key)
        raise TemporaryFailure("the tracker is stopping") from None
    running.add_done_callback(release)
    try:
        verification = await asyncio.wait_for(asyncio.wrap_future(running), VERIFY_SECONDS)
    except (TimeoutError, TemporaryFailure) as exc:
        reason = str(exc) if isinstance(exc, TemporaryFailure) else "DNS took too long"
        return await domains_page(
            request,
            message=f"The check could not finish ({reason}): try again in a minute",
            status=503,
        )
    except NotFound:
        raise web.HTTPNotFound(text=f"This account has no domain {name!r}") from None
    return await domains_page(request, verification)


# -- webhooks -------------------------------------------------------------------------------


async def webhooks_page(
    request: web.Request,
    answer: Any = None,
    secret: str = "",
    message: str = "",
    status: int = 200,
) -> web.StreamResponse:
    account = account_of(request)
    services = state(request).services
    endpoint = await _run(webhook_endpoints.endpoint_state, services.client, services.keys, account)
    letters = await _run(
        webhook_endpoints.dead_letters, services.client, services.keys, account, DEAD_SHOWN
    )
    posts = await _run(webhook_posts.recent, services.client, services.keys, account)
    return aiohttp_jinja2.render_template(
        "webhooks.html",
        request,
        {
            "endpoint": endpoint,
            "letters": letters,
            "posts": posts,
            "answer": answer,
            "secret": secret,
            "message": message,
            "notice": _done(request),
            "iso": _iso,
            "now": time.time(),
        },
        status=status,
    )


async def webhook_replay(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    event = _field(form, "event", 100)
    chosen = {event} if event else None
    moved = await _run(webhook_endpoints.replay, services.client, services.keys, account, chosen)
    log.info("console: %d dead letter(s) of %s replayed", moved, account)
    return _back(request, "/console/webhooks", done="replayed" if moved else "none", n=moved)


async def webhook_test(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    try:
        post = await _run(
            webhook_endpoints.prepare_test_event,
            services.settings,
            services.client,
            services.keys,
            account,
            "a test event sent from the txmail console",
        )
    except UsageError as exc:
        return await webhooks_page(request, message=str(exc), status=400)
    # Sent on the loop (no thread held) with a total deadline, one at a time per account.
    key = _claim(request, "test", account)
    try:
        answer = await webhook_endpoints.send_test_event(post, services.settings.webhooks.timeout)
    finally:
        state(request).busy.discard(key)
    return await webhooks_page(request, answer=answer)


async def webhook_rotate(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    services = state(request).services
    fresh = await _run(
        webhook_endpoints.rotate_secret,
        services.settings,
        services.client,
        services.keys,
        account,
        ROTATE_OVERLAP,
    )
    log.info("console: webhook secret of %s rotated", account)
    return await webhooks_page(request, secret=signing.secret_text(fresh))


# -- SMTP settings --------------------------------------------------------------------------


def _logins(services: Any, account: str) -> list[str]:
    Accounts(services.client, services.keys).get(account)
    return [x.login for x in Logins(services.client, services.keys).list(account)]


async def smtp_page(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    services = state(request).services
    settings = services.settings
    logins = await _run(_logins, services, account)
    ports = [
        {"port": settings.listen.submission, "security": "STARTTLS (required before AUTH)"},
        {"port": settings.listen.submissions, "security": "TLS from the first byte (SMTPS)"},
    ]
    return aiohttp_jinja2.render_template(
        "smtp.html",
        request,
        {
            "host": settings.hostname,
            "ports": ports,
            "logins": [account, *logins],
            "api_url": public_base_url(settings).rstrip("/") + "/v1/send",
        },
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/suppressions", suppressions_page)
    router.add_post("/suppressions/add", suppression_add)
    router.add_post("/suppressions/remove", suppression_remove)
    router.add_post("/suppressions/import", suppression_import)
    router.add_get("/suppressions/export.csv", suppression_export)
    router.add_get("/domains", domains_page)
    router.add_post("/domains/verify", domain_verify)
    router.add_get("/webhooks", webhooks_page)
    router.add_post("/webhooks/replay", webhook_replay)
    router.add_post("/webhooks/test", webhook_test)
    router.add_post("/webhooks/rotate", webhook_rotate)
    router.add_get("/smtp", smtp_page)
