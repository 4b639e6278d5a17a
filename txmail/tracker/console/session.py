"""Who is looking at a console page, and for which account: sessions, CSRF and the login limit.

DESCRIPTION
    A session is a signed cookie (txmail/tokens/console.py: session id, account or operator,
    expiry) and a record in Redis (PREFIX console:session:ID, expiring with it). A request
    has a session only when both are there and agree, and, for an account holder, the account
    still exists and is not suspended: logout deletes the record, a suspension (here or by
    `txmail accounts suspend` or policyd's reputation guard) ends it at the next request, and
    `txmail secrets rotate console --revoke` ends every session at once.

    Every login makes a new session id (no fixation: an id the browser had before is never
    promoted), and deletes the record of the session the browser came with.

    The cookie is HttpOnly and SameSite=Strict, and Secure when the request came over TLS
    (or, with tracker.trust_forwarded, through a proxy that says X-Forwarded-Proto: https);
    then its name has the __Host- prefix (and Path=/), so no sibling subdomain can plant one.
    Every POST form carries `csrf`: the session's CSRF token (a MAC of its id), checked by
    check_csrf; the login forms, before any session, carry one made from a random cookie of
    their own (double submit).

    Login attempts are counted in Redis per client address and per login name (a SHA-256 of
    it, never the name itself) over console.login_window seconds; past
    console.login_attempts_per_address or console.login_attempts_per_login the answer is 429
    with a sentence, and no password is checked.

Fails: web.HTTPFound to /console/login without a session; 400 for an operator's missing or
unknown `account`; 403 for a wrong CSRF token; TemporaryFailure (a 503 page) when Redis is away.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from txmail import store
from txmail.accounts.records import Accounts, credentials_generation
from txmail.config import Settings
from txmail.store import decoded_hash, guard
from txmail.tokens.console import ConsoleSigner, Session, new_session_id
from txmail.tracker.services import Services, client_address

COOKIE = "txmail_console"
LOGIN_COOKIE = "txmail_console_login"
PATH = "/console/"
HOST_PREFIX = "__Host-"  # behind TLS: the browser takes it only Secure, from this host, Path=/
LOGIN_URL = "/console/login"
OUTWARD_THREADS = 2


@dataclass(frozen=True)
class Viewer:
    """Who is logged in: an account holder (`account`) or an operator (`operator`)."""

    account: str | None
    operator: bool


@dataclass
class ConsoleState:
    """What the console's handlers share beside the tracker's Services."""

    services: Services
    signer: ConsoleSigner
    # Slow calls out of the house (DNS checks) run here, never in the loop's default
    # executor, whose threads every Redis call of the tracker needs.
    outward: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(OUTWARD_THREADS, "console-outward")
    )
    # (what, account) of the outward calls in flight: one of each kind per account.
    busy: set[tuple[str, str]] = field(default_factory=set)


STATE: web.AppKey[ConsoleState] = web.AppKey("console", ConsoleState)
VIEWER: web.RequestKey[Viewer | None] = web.RequestKey("console_viewer")
SESSION: web.RequestKey[Session | None] = web.RequestKey("console_session")
ACCOUNT_NAMES: web.RequestKey[frozenset[str]] = web.RequestKey("console_account_names")
NONCE: web.RequestKey[str] = web.RequestKey("console_login_nonce")


def state(request: web.Request) -> ConsoleState:
    return request.config_dict[STATE]


# -- sessions -------------------------------------------------------------------------------


def _load(client: store.Client, keys: store.Keys, session: Session) -> list[str] | None:
    """The account names an operator may look at ([] for an account holder) when the session's
    record is there and agrees with the cookie; None when the session has ended."""
    with guard("reading a console session"):
        record = decoded_hash(client.hgetall(keys.console_session(session.session_id)))
    if (
        not record
        or record.get("account", "") != session.account
        or (record.get("operator") == "1") != session.operator
    ):
        return None
    accounts = Accounts(client, keys)
    if session.operator:
        return accounts.names()
    found = accounts.find(session.account)
    if (
        found is None
        or found.suspended
        # a credential revoked since the login (API key, login, password), or an account
        # removed and made again under the same name
        or record.get("credentials") != str(credentials_generation(client, keys, session.account))
        or record.get("account_created") != repr(found.created_at)
    ):
        with guard("ending a console session"):
            client.delete(keys.console_session(session.session_id))
        return None
    return []


async def load_viewer(request: web.Request) -> None:
    """Put the request's Viewer (None: nobody logged in) and Session in the request."""
    request[VIEWER] = None
    request[SESSION] = None
    cookie = read_cookie(request, COOKIE)
    if not cookie:
        return
    console = state(request)
    session = console.signer.verify_session(cookie, time.time())
    if session is None:
        return
    services = console.services
    names = await asyncio.to_thread(_load, services.client, services.keys, session)
    if names is None:
        return
    request[SESSION] = session
    request[ACCOUNT_NAMES] = frozenset(names)
    request[VIEWER] = Viewer(session.account or None, session.operator)


def viewer(request: web.Request) -> Viewer:
    """The logged-in viewer; a redirect to the login page when nobody is."""
    found = request.get(VIEWER)
    if found is None:
        raise web.HTTPFound(LOGIN_URL)
    return found


def account_of(request: web.Request) -> str:
    """The account whose data the page shows: an account holder's own, whatever the request
    says; an operator's the `account` query parameter (400 when missing or unknown)."""
    seen = viewer(request)
    if not seen.operator:
        assert seen.account
        return seen.account
    name = request.query.get("account", "").strip()
    if not name:
        raise web.HTTPBadRequest(
            text="Choose an account first: this page shows one account's data; open it from "
            "the accounts page (or add ?account=NAME to the address)"
        )
    if name not in request.get(ACCOUNT_NAMES, frozenset()):
        raise web.HTTPBadRequest(
            text=f"There is no account named {name[:64]!r}; pick one from the accounts page"
        )
    return name


def redirect(location: str) -> web.Response:
    """303 See Other to `location` (after a POST the browser GETs it)."""
    return web.Response(status=303, headers={"Location": location})


def secure_request(request: web.Request, settings: Settings) -> bool:
    """Whether the browser reached us over TLS: directly, or through a trusted proxy."""
    if request.secure:
        return True
    return (
        settings.tracker.trust_forwarded
        and request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
    )


def _cookie_of(request: web.Request, name: str) -> tuple[str, str, bool]:
    """(the name the cookie has on this request, its path, Secure). Behind TLS the name has
    the __Host- prefix, so a sibling subdomain cannot plant a session or login nonce: the
    browser takes such a cookie only when it is Secure, set by this host, with Path=/."""
    if secure_request(request, state(request).services.settings):
        return HOST_PREFIX + name, "/", True
    return name, PATH, False


def read_cookie(request: web.Request, name: str) -> str:
    """The value of console cookie `name` as this request's scheme names it ("" when none)."""
    return request.cookies.get(_cookie_of(request, name)[0], "")


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    shown, path, secure = _cookie_of(request, name)
    response.set_cookie(
        shown,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def del_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    shown, path, secure = _cookie_of(request, name)
    response.del_cookie(shown, path=path, secure=secure, httponly=True, samesite="Strict")


def _store_session(
    client: store.Client,
    keys: store.Keys,
    session: Session,
    address: str,
    ended: str | None,
    opened: tuple[int, float] | None,
) -> None:
    key = keys.console_session(session.session_id)
    fields = {
        "account": session.account,
        "operator": "1" if session.operator else "0",
        "expires": repr(session.expires),
        "created": repr(time.time()),
        "address": address,
    }
    if opened is not None:  # what ends it beside logout and suspension (see _load)
        fields.update(credentials=str(opened[0]), account_created=repr(opened[1]))
    with guard("starting a console session"):
        pipe = client.pipeline(transaction=False)
        if ended:
            pipe.delete(keys.console_session(ended))
        pipe.hset(key, mapping=store.hash_mapping(fields))
        pipe.expireat(key, int(session.expires) + 1)
        pipe.execute()


def opened_by(client: store.Client, keys: store.Keys, account: str) -> tuple[int, float] | None:
    """What a session of `account` is bound to: its credentials generation and its creation
    time (None: no such account)."""
    generation = credentials_generation(client, keys, account)
    found = Accounts(client, keys).find(account)
    return None if found is None else (generation, found.created_at)


async def start_session(
    request: web.Request,
    response: web.StreamResponse,
    account: str | None,
    opened: tuple[int, float] | None = None,
) -> Session:
    """A new session for `account` (None: an operator), under a new id; the one the browser
    came with, if any, ends. `opened` (opened_by, for an account) binds it to the account's
    credentials: a revocation or a removal of the account ends it."""
    console = state(request)
    services = console.services
    hours = services.settings.console.session_hours
    session = Session(new_session_id(), account or "", account is None, time.time() + hours * 3600)
    old = request.get(SESSION)
    await asyncio.to_thread(
        _store_session,
        services.client,
        services.keys,
        session,
        client_address(request, services.settings),
        old.session_id if old is not None else None,
        opened,
    )
    set_cookie(response, request, COOKIE, console.signer.sign_session(session), int(hours * 3600))
    del_cookie(response, request, LOGIN_COOKIE)
    return session


def _delete(client: store.Client, keys: store.Keys, session_id: str) -> None:
    with guard("ending a console session"):
        client.delete(keys.console_session(session_id))


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    session = request.get(SESSION)
    if session is not None:
        services = state(request).services
        await asyncio.to_thread(_delete, services.client, services.keys, session.session_id)
    del_cookie(response, request, COOKIE)


# -- CSRF -----------------------------------------------------------------------------------


def csrf_token(request: web.Request) -> str:
    """The token every POST form of this page carries: the session's, or before a login the
    login cookie's ("" when neither is there yet: login_csrf makes one)."""
    session = request.get(SESSION)
    signer = state(request).signer
    if session is not None:
        return signer.csrf_token(session.session_id)
    nonce = request.get(NONCE) or read_cookie(request, LOGIN_COOKIE)
    return signer.csrf_token("login:" + nonce) if nonce else ""


def login_nonce(request: web.Request) -> str:
    """The login forms' double-submit nonce: the browser's, or a new one (set_login_cookie)."""
    nonce = read_cookie(request, LOGIN_COOKIE)
    if not (16 <= len(nonce) <= 64) or not nonce.replace("-", "").replace("_", "").isalnum():
        nonce = secrets.token_urlsafe(18)
    request[NONCE] = nonce
    return nonce


def check_csrf(request: web.Request, form: MultiDictProxy[Any]) -> None:
    """403 unless `form` carries this session's CSRF token (or, with no session, the login
    cookie's)."""
    given = form.get("csrf")
    signer = state(request).signer
    session = request.get(SESSION)
    if session is not None:
        ok = isinstance(given, str) and signer.check_csrf(session.session_id, given)
    else:
        nonce = read_cookie(request, LOGIN_COOKIE)
        ok = bool(nonce) and isinstance(given, str) and signer.check_csrf("login:" + nonce, given)
    if not ok:
        raise web.HTTPForbidden(
            text="This form's security token is missing or out of date (the session changed, "
            "or the form came from another site): reload the page and send the form again"
        )


# -- the login limit ------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _count(
    client: store.Client, keys: store.Keys, address: str, login: str, window: int
) -> tuple[int, int]:
    by_address = keys.console_login_attempts("addr", _digest(address))
    by_login = keys.console_login_attempts("login", _digest(login.strip().lower()))
    with guard("counting console login attempts"):
        pipe = client.pipeline(transaction=False)
        pipe.incr(by_address)
        pipe.expire(by_address, window, nx=True)
        pipe.incr(by_login)
        pipe.expire(by_login, window, nx=True)
        counts = pipe.execute()
    return int(counts[0]), int(counts[2])


async def count_attempt(request: web.Request, login: str) -> None:
    """Count one login attempt; 429 with a sentence when this address or login is over its
    limit for the window (no password is checked then)."""
    services = state(request).services
    limits = services.settings.console
    window = int(limits.login_window)
    by_address, by_login = await asyncio.to_thread(
        _count,
        services.client,
        services.keys,
        client_address(request, services.settings),
        login,
        window,
    )
    if by_address > limits.login_attempts_per_address or by_login > limits.login_attempts_per_login:
        minutes = max(1, round(window / 60))
        raise web.HTTPTooManyRequests(
            text=f"Too many login attempts from this address or for this login: wait "
            f"{minutes} minutes and try again (the limit protects your account from guessing)",
            headers={"Retry-After": str(window)},
        )
