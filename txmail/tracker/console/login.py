"""The console's login and logout pages.

    GET  /console/login    three forms: login and password (a SASL login, or the account's
                           name and SMTP password), an API key, an operator token
    POST /console/login    one of them; a new session on success (session.py)
    GET  /console/logout   a button that ends the session
    POST /console/logout   ends it: the Redis record is deleted, the cookie cleared

A failed login says only that the login failed, never which half was wrong; a suspended
account is named as such only once its password was right. Every attempt counts towards the
login limit before anything is checked. Logged: the login's outcome and account, never a
password, key or token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from txmail import store
from txmail.accounts.passwords import account_for_password
from txmail.accounts.records import Accounts, ApiKeys
from txmail.store import guard
from txmail.tracker.console import session as sessions
from txmail.tracker.services import client_address

log = logging.getLogger("txmail.tracker.console")

MAX_FORM = 16 * 1024  # bytes of any form but an upload
MAX_FIELD = 1024
FAILED = (
    "The login failed: the login name and password, the API key or the operator token is "
    "wrong, or has expired. Check it and try again"
)


async def read_form(request: web.Request, limit: int = MAX_FORM) -> MultiDictProxy[Any]:
    """The request's form, read only when it declares a length within `limit` (413 else)."""
    declared = request.content_length
    if declared is None or declared > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=declared or 0,
            text=f"The form is larger than the {limit} bytes this page takes (or its size was "
            "not declared); send less",
        )
    return await request.post()


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def _page(request: web.Request, message: str = "", status: int = 200) -> web.StreamResponse:
    nonce = sessions.login_nonce(request)
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {"message": message, "csrf_token": sessions.csrf_token(request)},
        status=status,
    )
    sessions.set_cookie(response, request, sessions.LOGIN_COOKIE, nonce, 3600)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    return _page(request)


def _first_use(client: store.Client, keys: store.Keys, nonce: str, expires: float) -> bool:
    """Record an operator token's use; False when it was used before (a token logs in once:
    one from a terminal's scrollback opens nothing after its first login)."""
    with guard("recording an operator token's use"):
        return bool(
            client.set(keys.console_token_used(nonce[:64]), "1", nx=True, exat=int(expires) + 1)
        )


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    sessions.check_csrf(request, form)
    console = sessions.state(request)
    services = console.services
    token = _field(form, "token").strip()
    api_key = _field(form, "api_key").strip()
    name = _field(form, "login").strip().lower()
    password = _field(form, "password")
    if token:
        kind, counted = "operator", "operator:" + token
    elif api_key:
        kind, counted = "apikey", "apikey:" + api_key
    else:
        kind, counted = "password", name
    if not (token or api_key or (name and password)):
        return _page(request, "Fill in the login name and password, an API key or a token", 400)
    await sessions.count_attempt(request, counted)
    address = client_address(request, services.settings)
    account: str | None
    opened = None
    if kind == "operator":
        found = console.signer.operator_token(token, time.time())
        if found is None or not await asyncio.to_thread(
            _first_use, services.client, services.keys, *found
        ):
            log.info(
                "console: operator login failed from %s%s",
                address,
                " (token used before)" if found is not None else "",
            )
            return _page(request, FAILED, 401)
        account = None
    else:
        if kind == "apikey":
            account = await asyncio.to_thread(
                ApiKeys(services.client, services.keys).account_of, api_key
            )
        else:
            account = await asyncio.to_thread(
                account_for_password, services.client, services.keys, name, password
            )
        if account is None:
            log.info("console: %s login failed from %s", kind, address)
            return _page(request, FAILED, 401)
        record = await asyncio.to_thread(Accounts(services.client, services.keys).find, account)
        if record is None or record.suspended:
            reason = record.suspended_reason if record is not None else "removed"
            log.info("console: login of suspended account %s refused", account)
            return _page(
                request,
                f"This account is suspended ({reason}): it cannot log in until the operator "
                "resumes it; ask them why",
                403,
            )
        opened = await asyncio.to_thread(
            sessions.opened_by, services.client, services.keys, account
        )
        if opened is None:  # removed meanwhile
            return _page(request, FAILED, 401)
    response = sessions.redirect("/console/accounts" if account is None else "/console/overview")
    await sessions.start_session(request, response, account, opened)
    log.info(
        "console: %s logged in (%s) from %s",
        "an operator" if account is None else f"account {account}",
        kind,
        address,
    )
    return response


async def logout_page(request: web.Request) -> web.StreamResponse:
    if request.get(sessions.VIEWER) is None:
        raise web.HTTPFound(sessions.LOGIN_URL)
    return aiohttp_jinja2.render_template("logout.html", request, {})


async def logout_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if request.get(sessions.SESSION) is None:
        raise web.HTTPFound(sessions.LOGIN_URL)
    sessions.check_csrf(request, form)
    response = sessions.redirect(sessions.LOGIN_URL)
    await sessions.end_session(request, response)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_post)
    app.router.add_get("/logout", logout_page)
    app.router.add_post("/logout", logout_post)
