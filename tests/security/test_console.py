"""Attack: the web console (txmail/tracker/console) against its own users.

A real tracker (make_app, the console mounted at /console/) on loopback over a real Redis,
driven by requests sessions as browsers would be. Two accounts, each with data on every page;
logged in as one, every console URL and form is tried with the other's names and ids, in the
URL (`account=`), in the form's fields and in the paths, and none of it shows or changes the
other's data. Then the session itself: CSRF missing or wrong is a 403, the session id changes
at every login and a cookie from before it opens nothing, logout and suspension end the
session, forged cookies and expired operator tokens open nothing, the login limit answers 429
with a sentence, and the cookie carries HttpOnly, SameSite=Strict and (behind TLS) Secure.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import requests

from txmail.accounts.domains import Domain, Domains
from txmail.accounts.records import Accounts, ApiKeys, Logins
from txmail.events import Event, iso_timestamp, random_event_id
from txmail.store import Keys, secrets
from txmail.store.suppressions import Suppressions
from txmail.tokens.console import ConsoleSigner
from txmail_testing.console import ConsoleServer

PASSWORD_A = "alpha-password-123"
PASSWORD_B = "bravo-password-456"
SECRET_OF_B = "only-bravo@victim.example"
DEAD_OF_B = "evt_deadofbravo"
HOST = "127.0.0.1"


@pytest.fixture
def keys() -> Keys:
    return Keys(f"c{uuid.uuid4().hex[:8]}:")


def _dead_letter(client: redis.Redis, keys: Keys, account: str, event_id: str) -> None:
    now = time.time()
    event = Event(
        id=event_id,
        kind="bounce",
        recipient=f"someone@{account}.example",
        message_id="4AbCdEfGh",
        timestamp=iso_timestamp(now),
        account=account,
        tags=[],
        details={},
    )
    client.xadd(
        keys.dead_letters(account),
        {"event": event.to_json(), "error": "HTTP 500", "failed_at": repr(now)},
    )


@pytest.fixture
def node(client: redis.Redis, keys: Keys) -> Iterator[ConsoleServer]:
    """Accounts alpha and bravo, each with a suppression, a domain and a dead letter."""
    accounts = Accounts(client, keys)
    for name, password in (("alpha", PASSWORD_A), ("bravo", PASSWORD_B)):
        accounts.add(name, [f"{name}.example"], password)
        Domains(client, keys).add(Domain(f"{name}.example", name))
    Suppressions(client, keys).add("alpha", "bounce", "mine@alpha-dest.example", "test")
    Suppressions(client, keys).add("bravo", "bounce", SECRET_OF_B, "test")
    _dead_letter(client, keys, "alpha", random_event_id(time.time()))
    _dead_letter(client, keys, "bravo", DEAD_OF_B)
    server = ConsoleServer(client, keys).start()
    yield server
    server.stop()


def cookie_of(browser: requests.Session) -> str | None:
    return browser.cookies.get("txmail_console", domain=HOST, path="/console/")


def csrf_of(page: requests.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert found, page.text
    return found.group(1)


def login(
    node: ConsoleServer, browser: requests.Session | None = None, **fields: str
) -> tuple[requests.Session, requests.Response]:
    browser = browser or requests.Session()
    page = browser.get(node.url + "/console/login")
    answer = browser.post(
        node.url + "/console/login",
        data={"csrf": csrf_of(page), **fields},
        allow_redirects=False,
    )
    return browser, answer


def logged_in(node: ConsoleServer, **fields: str) -> requests.Session:
    browser, answer = login(node, **fields)
    assert answer.status_code == 303, answer.text
    return browser


def operator_token(node: ConsoleServer, client: redis.Redis, expires: float) -> str:
    key = secrets.current(node.settings, client, "console_key_file")
    return ConsoleSigner(lambda: (key,)).sign_operator(expires)


def csrf_for(node: ConsoleServer, browser: requests.Session, path: str) -> str:
    return csrf_of(browser.get(node.url + path))


def test_an_account_never_sees_or_changes_anothers_data(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    url = node.url + "/console"
    for path in ("/suppressions", "/domains", "/webhooks", "/smtp"):
        for query in ("", "?account=bravo", "?account=bravo&account=bravo"):
            page = alpha.get(url + path + query)
            assert page.status_code == 200, (path, query)
            assert "bravo" not in page.text, (path, query)
            assert SECRET_OF_B not in page.text and DEAD_OF_B not in page.text
    export = alpha.get(url + "/suppressions/export.csv?account=bravo")
    assert "mine@alpha-dest.example" in export.text and SECRET_OF_B not in export.text
    search = alpha.get(url + "/suppressions", params={"q": "victim", "account": "bravo"})
    assert SECRET_OF_B not in search.text

    token = csrf_for(node, alpha, "/console/suppressions")
    # Remove bravo's entry: named in the form, the query and an extra `account` field.
    alpha.post(
        url + "/suppressions/remove?account=bravo",
        data={"csrf": token, "recipient": SECRET_OF_B, "list": "bounce", "account": "bravo"},
    )
    assert Suppressions(client, keys).list("bravo")[0].recipient == SECRET_OF_B
    # An addition lands in alpha's own list, whatever the request names.
    alpha.post(
        url + "/suppressions/add?account=bravo",
        data={"csrf": token, "recipient": "new@x.example", "list": "bounce", "account": "bravo"},
    )
    assert [e.recipient for e in Suppressions(client, keys).list("bravo")] == [SECRET_OF_B]
    assert "new@x.example" in [e.recipient for e in Suppressions(client, keys).list("alpha")]
    # Import into bravo through the query: alpha's list again.
    files = {"file": ("s.csv", b"imported@x.example\r\n", "text/csv")}
    alpha.post(
        url + "/suppressions/import?account=bravo",
        data={"csrf": token, "list": "bounce", "account": "bravo"},
        files=files,
    )
    assert len(Suppressions(client, keys).list("bravo")) == 1

    # bravo's domain cannot be checked (its DNS state would change) by alpha.
    verify = alpha.post(
        url + "/domains/verify?account=bravo", data={"csrf": token, "domain": "bravo.example"}
    )
    assert verify.status_code == 404 and "bravo.example" in verify.text
    assert "verification" not in verify.text
    # bravo's dead letter stays where it is.
    alpha.post(
        url + "/webhooks/replay?account=bravo",
        data={"csrf": token, "event": DEAD_OF_B, "account": "bravo"},
    )
    assert client.xlen(keys.dead_letters("bravo")) == 1
    # bravo's webhook secret is not rotated, its endpoint not posted to.
    alpha.post(url + "/webhooks/rotate?account=bravo", data={"csrf": token})
    assert not client.exists(keys.webhook_secret("bravo"))
    assert client.exists(keys.webhook_secret("alpha"))

    # The operator's pages and forms are closed to an account holder.
    for path in ("/accounts", "/nodes", "/unparsed", "/unparsed/1-0"):
        assert alpha.get(url + path).status_code == 403, path
    alpha.post(url + "/accounts/suspend", data={"csrf": token, "account": "bravo"})
    assert not Accounts(client, keys).get("bravo").suspended


def test_an_operator_chooses_the_account_and_an_unknown_one_is_refused(
    node: ConsoleServer, client: redis.Redis
) -> None:
    operator = logged_in(node, token=operator_token(node, client, time.time() + 60))
    url = node.url + "/console"
    assert SECRET_OF_B in operator.get(url + "/suppressions?account=bravo").text
    missing = operator.get(url + "/suppressions")
    assert missing.status_code == 400 and "Choose an account" in missing.text
    unknown = operator.get(url + "/suppressions?account=nobody")
    assert unknown.status_code == 400 and "no account named" in unknown.text
    assert "alpha" in operator.get(url + "/accounts").text


def test_forms_without_the_sessions_csrf_token_are_refused(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    beta = logged_in(node, login="bravo", password=PASSWORD_B)
    url = node.url + "/console/suppressions/add"
    others = csrf_for(node, beta, "/console/suppressions")
    for data in (
        {},
        {"csrf": ""},
        {"csrf": "x" * 22},
        {"csrf": others},  # a real token, of another session
    ):
        answer = alpha.post(url, data={**data, "recipient": "c@x.example", "list": "bounce"})
        assert answer.status_code == 403, data
        assert "security token" in answer.text
    assert [e.recipient for e in Suppressions(client, keys).list("alpha")] == [
        "mine@alpha-dest.example"
    ]
    # The login form has its own: without it no password is even looked at.
    stranger = requests.Session()
    refused = stranger.post(
        node.url + "/console/login", data={"login": "alpha", "password": PASSWORD_A}
    )
    assert refused.status_code == 403
    # Logout is a form too.
    assert alpha.post(node.url + "/console/logout", data={}).status_code == 403
    assert alpha.get(node.url + "/console/smtp").status_code == 200


def test_every_login_makes_a_new_session_and_the_old_one_ends(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    browser = logged_in(node, login="alpha", password=PASSWORD_A)
    first = cookie_of(browser)
    _, answer = login(node, browser, login="alpha", password=PASSWORD_A)
    assert answer.status_code == 303
    second = cookie_of(browser)
    assert first and second and first != second
    assert session_id(first) != session_id(second)
    assert not client.exists(keys.console_session(session_id(first)))
    replayed = requests.Session()
    replayed.cookies.set("txmail_console", domain=HOST, value=first, path="/console/")
    assert replayed.get(node.url + "/console/smtp").url.endswith("/console/login")
    # A cookie planted before login (fixation) is never what the session gets.
    planted = requests.Session()
    planted.cookies.set("txmail_console", domain=HOST, value=first, path="/console/")
    login(node, planted, login="alpha", password=PASSWORD_A)
    assert session_id(cookie_of(planted)) != session_id(first)


def session_id(cookie: str | None) -> str:
    assert cookie
    body = cookie.strip('"').split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))[1])


def test_logout_ends_the_session_for_good(node: ConsoleServer) -> None:
    browser = logged_in(node, login="alpha", password=PASSWORD_A)
    cookie = cookie_of(browser)
    token = csrf_for(node, browser, "/console/smtp")
    out = browser.post(node.url + "/console/logout", data={"csrf": token}, allow_redirects=False)
    assert out.status_code == 303 and out.headers["Location"] == "/console/login"
    copy = requests.Session()
    copy.cookies.set("txmail_console", domain=HOST, value=cookie, path="/console/")
    assert copy.get(node.url + "/console/smtp").url.endswith("/console/login")


def test_suspension_ends_the_session_and_refuses_login(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    operator = logged_in(node, token=operator_token(node, client, time.time() + 60))
    token = csrf_for(node, operator, "/console/accounts")
    suspended = operator.post(
        node.url + "/console/accounts/suspend",
        data={"csrf": token, "account": "alpha", "reason": "too many complaints"},
    )
    assert suspended.status_code == 200 and "suspended" in suspended.text
    assert Accounts(client, keys).get("alpha").suspended_reason == "too many complaints"
    assert alpha.get(node.url + "/console/smtp").url.endswith("/console/login")
    _, again = login(node, login="alpha", password=PASSWORD_A)
    assert again.status_code == 403 and "suspended (too many complaints)" in again.text
    # A wrong password for a suspended account says only that the login failed.
    _, wrong = login(node, login="alpha", password="not-the-password")
    assert wrong.status_code == 401 and "suspended" not in wrong.text


def test_failures_never_say_which_half_was_wrong(node: ConsoleServer, client: redis.Redis) -> None:
    Logins(client, node.services.keys).add("bravo", "app@bravo.example", "login-password-789")
    answers = [
        login(node, login="alpha", password="wrong-password-000")[1],
        login(node, login="nobody", password=PASSWORD_A)[1],
        login(node, login="app@bravo.example", password=PASSWORD_B)[1],
        login(node, login="ghost@bravo.example", password="login-password-789")[1],
        login(node, api_key="not-a-key")[1],
        login(node, token=operator_token(node, client, time.time() - 1))[1],  # expired
    ]
    messages = {re.search(r'role="alert">([^<]*)<', a.text).group(1) for a in answers}  # type: ignore[union-attr]
    assert {a.status_code for a in answers} == {401} and len(messages) == 1
    # and the right ones open the account (a login of its own, an API key)
    assert (
        login(node, login="APP@bravo.example", password="login-password-789")[1].status_code == 303
    )
    _, key = ApiKeys(client, node.services.keys).create("bravo")
    assert login(node, api_key=key)[1].headers["Location"] == "/console/overview"


def test_a_forged_or_altered_cookie_opens_nothing(node: ConsoleServer, client: redis.Redis) -> None:
    browser = logged_in(node, login="alpha", password=PASSWORD_A)
    cookie = cookie_of(browser)
    assert cookie
    body, mac = cookie.strip('"').split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for changed in (
        [payload[0], payload[1], "bravo", False, payload[4]],  # another account
        [payload[0], payload[1], "", True, payload[4]],  # made operator
    ):
        forged_body = base64.urlsafe_b64encode(json.dumps(changed).encode()).decode().rstrip("=")
        forged = requests.Session()
        forged.cookies.set(
            "txmail_console", domain=HOST, value=f"{forged_body}.{mac}", path="/console/"
        )
        assert forged.get(node.url + "/console/accounts").url.endswith("/console/login")
    # signed with another key (the tracking key): nothing either
    other = ConsoleSigner(lambda: (secrets.current(node.settings, client, "tracking_key_file"),))
    from txmail.tokens.console import Session

    fake = other.sign_session(Session(payload[1], "", True, time.time() + 60))
    forged = requests.Session()
    forged.cookies.set("txmail_console", domain=HOST, value=fake, path="/console/")
    assert forged.get(node.url + "/console/accounts").url.endswith("/console/login")


def test_the_login_limit_answers_with_a_sentence(
    client: redis.Redis, keys: Keys, node: ConsoleServer
) -> None:
    limited = ConsoleServer(client, keys, login_attempts_per_login=3).start()
    try:
        for _ in range(3):
            assert login(limited, login="alpha", password="wrong-password-0")[1].status_code == 401
        _, blocked = login(limited, login="alpha", password=PASSWORD_A)  # even the right one
        assert blocked.status_code == 429
        assert "Too many login attempts" in blocked.text and "wait 15 minutes" in blocked.text
        assert blocked.headers["Retry-After"] == "900"
        # another login from the same address is not held up by alpha's count
        assert login(limited, login="bravo", password=PASSWORD_B)[1].status_code == 303
    finally:
        limited.stop()
    by_address = ConsoleServer(client, Keys(keys.prefix + "a:"), login_attempts_per_address=2)
    by_address.start()
    try:
        statuses = [
            login(by_address, login=f"user{n}", password="wrong-password-0")[1].status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 429]
    finally:
        by_address.stop()


def set_cookie_flags(answer: requests.Response, name: str) -> list[str]:
    """The attributes of the Set-Cookie header that sets `name`, lowercased."""
    for header in answer.raw.headers.getlist("Set-Cookie"):
        if header.startswith(name + "="):
            return [part.strip().lower() for part in header.split(";")][1:]
    raise AssertionError(f"no Set-Cookie for {name}: {answer.headers}")


def test_cookie_flags(client: redis.Redis, keys: Keys, node: ConsoleServer) -> None:
    _, answer = login(node, login="alpha", password=PASSWORD_A)
    flags = set_cookie_flags(answer, "txmail_console")
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console/" in flags
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
    behind_tls = ConsoleServer(client, keys, trust_forwarded=True).start()
    try:
        browser = requests.Session()
        headers = {"X-Forwarded-Proto": "https"}
        page = browser.get(behind_tls.url + "/console/login", headers=headers)
        # behind TLS the names carry __Host- (Secure, Path=/): no sibling subdomain plants one
        assert "secure" in set_cookie_flags(page, "__Host-txmail_console_login")
        nonce = page.cookies["__Host-txmail_console_login"]
        answer = browser.post(
            behind_tls.url + "/console/login",
            data={"csrf": csrf_of(page), "login": "alpha", "password": PASSWORD_A},
            headers=headers,
            cookies={"__Host-txmail_console_login": nonce},
            allow_redirects=False,
        )
        assert answer.status_code == 303
        flags = set_cookie_flags(answer, "__Host-txmail_console")
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
        assert "path=/" in flags and "path=/console/" not in flags
        # a nonce planted under the plain name is not the login form's
        planted = requests.post(
            behind_tls.url + "/console/login",
            data={"csrf": csrf_of(page), "login": "alpha", "password": PASSWORD_A},
            headers=headers,
            cookies={"txmail_console_login": nonce},
            allow_redirects=False,
        )
        assert planted.status_code == 403
    finally:
        behind_tls.stop()
    # every page says not to be framed or cached
    page = requests.get(node.url + "/console/login")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_uploads_are_bounded(node: ConsoleServer, client: redis.Redis, keys: Keys) -> None:
    limited = ConsoleServer(client, keys, upload_max_rows=2, upload_max_bytes=2048).start()
    try:
        alpha = logged_in(limited, login="alpha", password=PASSWORD_A)
        token = csrf_for(limited, alpha, "/console/suppressions")
        url = limited.url + "/console/suppressions/import"
        rows = b"a@x.example\r\nb@x.example\r\nc@x.example\r\n"
        answer = alpha.post(url, data={"csrf": token, "list": "bounce"}, files={"file": rows})
        assert answer.status_code == 400 and "more than 2 rows" in answer.text
        large = b"a@x.example\r\n" * 400
        answer = alpha.post(url, data={"csrf": token, "list": "bounce"}, files={"file": large})
        assert answer.status_code in (400, 413) and "larger than" in answer.text
        bad = b"a@x.example\r\nnot an address\r\n"
        answer = alpha.post(url, data={"csrf": token, "list": "bounce"}, files={"file": bad})
        assert answer.status_code == 400 and "row 2" in answer.text
        assert len(Suppressions(client, keys).list("alpha")) == 1  # nothing of them written
    finally:
        limited.stop()


# -- review of issue 22 -------------------------------------------------------------------


class Trickler:
    """An HTTP 'endpoint' on loopback that answers every post with one header line a second
    and never ends its head: a socket timeout per read never fires on it."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind((HOST, 0))
        self.server.listen(50)
        self.url = f"http://{HOST}:{self.server.getsockname()[1]}/hook"
        self.accepted = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                self.accepted.set()
                while not self.stop.wait(0.5):
                    conn.sendall(b"X-Still: here\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def test_a_trickling_webhook_endpoint_ties_up_nothing(client: redis.Redis, keys: Keys) -> None:
    """The test post has a total deadline (not one per read), one runs per account at a time,
    and while it waits every other page of every account answers."""
    accounts = Accounts(client, keys)
    accounts.add("alpha", ["alpha.example"], PASSWORD_A)
    accounts.add("bravo", ["bravo.example"], PASSWORD_B)
    trickler = Trickler()
    accounts.set_webhook_url("alpha", trickler.url)
    node = ConsoleServer(client, keys, webhook_timeout=2.0).start()
    try:
        alpha = logged_in(node, login="alpha", password=PASSWORD_A)
        bravo = logged_in(node, login="bravo", password=PASSWORD_B)
        token = csrf_for(node, alpha, "/console/webhooks")
        answers: list[requests.Response | Exception] = []

        def post() -> None:
            try:
                answers.append(
                    alpha.post(
                        node.url + "/console/webhooks/test", data={"csrf": token}, timeout=60
                    )
                )
            except requests.RequestException as exc:
                answers.append(exc)

        first = threading.Thread(target=post)
        first.start()
        assert trickler.accepted.wait(30)
        # a second one while the first waits: refused with a sentence, not queued
        again = alpha.post(node.url + "/console/webhooks/test", data={"csrf": token}, timeout=30)
        if first.is_alive():  # (the first may have hit its deadline already on a slow machine)
            assert again.status_code == 429, again.text
            assert "still waiting for the endpoint" in again.text
        page = bravo.get(node.url + "/console/smtp", timeout=30)
        assert page.status_code == 200
        first.join(60)
        assert not first.is_alive()
        answer = answers[0]
        assert isinstance(answer, requests.Response), answer
        assert answer.status_code == 200
        assert 'id="test-answer"' in answer.text and "no answer" in answer.text
        # the deadline freed the account: the next test post is served
        trickler.accepted.clear()
        later = alpha.post(node.url + "/console/webhooks/test", data={"csrf": token}, timeout=60)
        assert later.status_code == 200 and "no answer" in later.text
    finally:
        trickler.close()
        node.stop()


def test_one_dns_check_per_account_at_a_time(node: ConsoleServer) -> None:
    """A check in flight (its thread in the console's own pool) makes the next one a 429."""
    from txmail.tracker.console.session import STATE

    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    token = csrf_for(node, alpha, "/console/domains")
    console = next(
        app[STATE]
        for app in node._runner.app._subapps
        if STATE in app  # type: ignore[union-attr]
    )
    console.busy.add(("verify", "alpha"))  # as a check whose nameservers are slow would
    answer = alpha.post(
        node.url + "/console/domains/verify", data={"csrf": token, "domain": "alpha.example"}
    )
    assert answer.status_code == 429 and "still running" in answer.text
    bravo = logged_in(node, login="bravo", password=PASSWORD_B)
    answer = bravo.post(
        node.url + "/console/domains/verify",
        data={"csrf": csrf_for(node, bravo, "/console/domains"), "domain": "bravo.example"},
    )
    assert answer.status_code != 429


def test_bad_numbers_and_ids_are_400s_with_a_sentence(
    node: ConsoleServer, client: redis.Redis
) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    for path in (
        "/console/overview?days=%C2%B2",  # "²": str.isdigit() says yes, int() says no
        "/console/overview?days=%D9%A3",  # "٣": int() takes it, it is no ASCII digit
        "/console/tags?days=%C2%B2",
        "/console/suppressions?done=imported&n=%C2%B2",
        "/console/webhooks?done=replayed&n=%C2%B2",
        "/console/messages?recipient=x&before=%D9%A3-%D9%A3",
    ):
        page = alpha.get(node.url + path)
        assert page.status_code == 400, (path, page.status_code)
        assert "internal error" not in page.text and "data store" not in page.text, path
    operator = logged_in(node, token=operator_token(node, client, time.time() + 60))
    page = operator.get(node.url + "/console/unparsed/%D9%A3-%D9%A3")
    assert page.status_code == 404 and "No kept bounce has this id" in page.text


def test_a_csv_field_csv_cannot_read_is_named_by_its_row(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    token = csrf_for(node, alpha, "/console/suppressions")
    big = b"ok@x.example\r\n" + b"a" * 200_000 + b"@x.example\r\n"  # over csv's field limit
    answer = alpha.post(
        node.url + "/console/suppressions/import",
        data={"csrf": token, "list": "bounce"},
        files={"file": big},
    )
    assert answer.status_code == 400 and "row 2" in answer.text
    assert len(Suppressions(client, keys).list("alpha")) == 1  # nothing written


def _ended(node: ConsoleServer, browser: requests.Session) -> bool:
    page = browser.get(node.url + "/console/suppressions", allow_redirects=False)
    return page.status_code == 302 and page.headers["Location"].endswith("/console/login")


def test_a_session_ends_when_its_credential_is_revoked(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    # an API key revoked
    _, key = ApiKeys(client, keys).create("alpha")
    by_key = logged_in(node, api_key=key)
    assert not _ended(node, by_key)
    ApiKeys(client, keys).revoke_all("alpha")
    assert _ended(node, by_key)
    # a login removed, or its password changed
    Logins(client, keys).add("alpha", "app@alpha.example", "login-password-789")
    by_login = logged_in(node, login="app@alpha.example", password="login-password-789")
    Logins(client, keys).set_password("alpha", "app@alpha.example", "login-password-000")
    assert _ended(node, by_login)
    by_login = logged_in(node, login="app@alpha.example", password="login-password-000")
    Logins(client, keys).remove("alpha", "app@alpha.example")
    assert _ended(node, by_login)
    # the account's own password changed
    by_password = logged_in(node, login="alpha", password=PASSWORD_A)
    Accounts(client, keys).set_password("alpha", "a-new-password-999")
    assert _ended(node, by_password)
    # another account's revocation ends nothing of this one
    bravo = logged_in(node, login="bravo", password=PASSWORD_B)
    Accounts(client, keys).set_password("alpha", "another-password-111")
    assert not _ended(node, bravo)


def test_a_session_does_not_pass_to_a_new_account_of_the_same_name(
    node: ConsoleServer, client: redis.Redis, keys: Keys
) -> None:
    bravo = logged_in(node, login="bravo", password=PASSWORD_B)
    accounts = Accounts(client, keys)
    accounts.remove("bravo")
    accounts.add("bravo", ["bravo-new.example"], "someone-else-000")
    assert _ended(node, bravo)


def test_an_operator_token_logs_in_once(node: ConsoleServer, client: redis.Redis) -> None:
    token = operator_token(node, client, time.time() + 60)
    first = logged_in(node, token=token)
    assert first.get(node.url + "/console/accounts").status_code == 200
    _, again = login(node, token=token)
    assert again.status_code == 401 and "The login failed" in again.text
    assert first.get(node.url + "/console/accounts").status_code == 200  # the first stays


def test_the_csv_export_is_streamed(node: ConsoleServer, client: redis.Redis, keys: Keys) -> None:
    lists = Suppressions(client, keys)
    for n in range(1200):
        lists.add("alpha", "bounce", f"user{n}@dest.example", "test")
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    export = alpha.get(node.url + "/console/suppressions/export.csv")
    assert export.status_code == 200
    assert export.headers.get("Transfer-Encoding") == "chunked"  # never built whole
    assert export.headers["Content-Type"].startswith("text/csv")
    assert (
        export.headers["Cache-Control"] == "no-store"
        and "Content-Security-Policy" in export.headers
    )
    lines = export.text.splitlines()
    assert lines[0].startswith("list,recipient") and len(lines) == 1 + 1201
    assert SECRET_OF_B not in export.text


def test_the_live_update_of_the_nodes_page_asks_no_component(
    node: ConsoleServer, client: redis.Redis
) -> None:
    operator = logged_in(node, token=operator_token(node, client, time.time() + 60))
    page = operator.get(node.url + "/console/nodes")
    assert 'data-live="/console/nodes?live=1"' in page.text
    assert "<td>milter</td>" in page.text  # the page itself asks them
    live = operator.get(node.url + "/console/nodes?live=1")
    assert live.status_code == 200 and 'id="nodes"' in live.text
    assert "<td>milter</td>" not in live.text and "not asked in a live update" in live.text


def test_the_overview_says_rates_older_than_the_buckets_are_not_kept(node: ConsoleServer) -> None:
    alpha = logged_in(node, login="alpha", password=PASSWORD_A)
    page = alpha.get(node.url + "/console/overview?days=90")
    assert page.status_code == 200 and 'id="rates-kept"' in page.text
    assert "are not kept" in page.text
    assert 'id="rates-kept"' not in alpha.get(node.url + "/console/overview?days=30").text
