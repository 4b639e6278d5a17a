"""The console's insight pages (txmail/tracker/console/insight.py) through the real tracker app
over a real Redis, fetched with an HTTP client: overview, messages, a timeline, tags, and that
one account never sees another's (the e2e test does the same with mail through Postfix)."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.unit.reports.conftest import Send
from txmail.accounts.records import Accounts
from txmail.store import Keys, secrets
from txmail.tokens.console import ConsoleSigner
from txmail_testing.console import ConsoleServer

HARD = ("bounce", {"reason": "userunknown", "status": "5.1.1", "diagnostic": "550 5.1.1 <x> no"})
DELIVERED = ("delivery", {"status": "2.0.0", "remote_mta": "mx.x.test"})
PASSWORD = "a long enough password"


@pytest.fixture
def console(client: redis.Redis, keys: Keys) -> Iterator[ConsoleServer]:
    server = ConsoleServer(client, keys).start()
    yield server
    server.stop()


def logged_in(console: ConsoleServer, account: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{console.url}/console/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    answer = browser.post(
        f"{console.url}/console/login",
        data={"login": account, "password": PASSWORD, "csrf": csrf.group(1)},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.url.endswith("/console/overview"), answer.text
    return browser


def main_of(html: str) -> str:
    found = re.search(r'<main id="main".*?</main>', html, re.S)
    assert found, html
    return found.group(0)


def test_pages_show_the_accounts_own_mail(
    console: ConsoleServer, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], ("welcome",), {"alice@x.test": DELIVERED})
    send("AAAAAA0002", ["bob@x.test"], ("welcome",), {"bob@x.test": HARD})
    send("AAAAAA0003", ["carol@x.test"], ("reset",), {"carol@x.test": DELIVERED})
    send("BBBBBB0001", ["bob@x.test"], ("secret",), {"bob@x.test": HARD}, account="other")
    browser = logged_in(console, "acme")
    base = f"{console.url}/console"

    overview = browser.get(f"{base}/overview", timeout=10)
    assert overview.status_code == 200
    assert 'lang="en"' in overview.text and "<h1>Overview</h1>" in overview.text
    svgs = re.findall(r"<svg .*?</svg>", overview.text, re.S)
    assert len(svgs) == 3
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("role") == "img"
    assert "suspended above 5%" in overview.text  # acme's max_bounce_rate as a threshold line
    assert 'id="daily"' in overview.text and 'id="limits"' in overview.text
    assert "messages per day" in overview.text and 'id="warmup"' in overview.text
    assert "secret" not in main_of(overview.text)  # the other account's tag

    tagged = browser.get(f"{base}/overview", params={"tag": "welcome"}, timeout=10)
    assert tagged.status_code == 200 and "of tag <q>welcome</q>" in tagged.text
    assert "50.0%" in tagged.text  # one of welcome's two outcomes bounced

    found = browser.get(f"{base}/messages", params={"recipient": "bob"}, timeout=10)
    assert found.status_code == 200
    table = re.search(r'<table id="messages">.*?</table>', found.text, re.S)
    assert table and "AAAAAA0002" in table.group(0) and "BBBBBB0001" not in found.text

    timeline = browser.get(f"{base}/messages/AAAAAA0002", timeout=10)
    assert timeline.status_code == 200
    assert 'id="timeline"' in timeline.text
    assert "hard bounce: userunknown" in timeline.text
    assert "550 5.1.1 &lt;x&gt; no" in timeline.text  # the diagnostic, escaped

    tags = browser.get(f"{base}/tags", timeout=10)
    assert tags.status_code == 200
    assert 'href="/console/overview?tag=welcome"' in tags.text
    assert "secret" not in main_of(tags.text)


def test_another_accounts_message_is_a_404_like_a_missing_one(
    console: ConsoleServer, accounts: Accounts, send: Send
) -> None:
    send("BBBBBB0001", ["bob@x.test"], (), {"bob@x.test": HARD}, account="other")
    browser = logged_in(console, "acme")
    base = f"{console.url}/console"
    theirs = browser.get(f"{base}/messages/BBBBBB0001", timeout=10)
    missing = browser.get(f"{base}/messages/CCCCCC0001", timeout=10)
    assert theirs.status_code == missing.status_code == 404
    assert "BBBBBB0001" in theirs.text and "bob@x.test" not in theirs.text
    # an account holder's account= naming another account is ignored, not obeyed
    asked = browser.get(f"{base}/messages", params={"account": "other", "id": "BBBBBB0001"})
    assert asked.status_code == 200 and 'id="no-messages"' in asked.text
    assert logged_in(console, "other").get(f"{base}/messages/BBBBBB0001").status_code == 200


def test_bad_fields_are_a_400_with_a_sentence(console: ConsoleServer, accounts: Accounts) -> None:
    browser = logged_in(console, "acme")
    base = f"{console.url}/console"
    bad_date = browser.get(f"{base}/messages", params={"since": "<b>x</b>"}, timeout=10)
    assert bad_date.status_code == 400
    assert "since must be a date as YYYY-MM-DD" in bad_date.text and "<b>x" not in bad_date.text
    assert 'id="search-form"' in bad_date.text  # the form stays to be corrected
    bad_days = browser.get(f"{base}/overview", params={"days": "9999"}, timeout=10)
    assert bad_days.status_code == 400 and "days must be a whole number" in bad_days.text
    bad_tag = browser.get(f"{base}/tags", params={"days": "x"}, timeout=10)
    assert bad_tag.status_code == 400
    logged_out = requests.get(f"{base}/overview", allow_redirects=False, timeout=10)
    assert logged_out.status_code == 302 and logged_out.headers["Location"] == "/console/login"


def test_an_operator_looks_at_the_account_named_and_links_keep_it(
    console: ConsoleServer, client: redis.Redis, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0002", ["bob@x.test"], ("welcome",), {"bob@x.test": HARD})
    key = secrets.current(console.settings, client, "console_key_file")
    token = ConsoleSigner(lambda: (key,)).sign_operator(time.time() + 60)
    operator = requests.Session()
    page = operator.get(f"{console.url}/console/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    operator.post(
        f"{console.url}/console/login", data={"token": token, "csrf": csrf.group(1)}, timeout=10
    )
    base = f"{console.url}/console"
    assert operator.get(f"{base}/overview", timeout=10).status_code == 400  # which account?
    found = operator.get(f"{base}/messages", params={"account": "acme", "recipient": "bob"})
    assert 'href="/console/messages/AAAAAA0002?account=acme"' in found.text
    assert 'name="account" value="acme"' in found.text  # the search form keeps it
    assert operator.get(f"{base}/messages/AAAAAA0002", params={"account": "acme"}).ok
    assert (
        operator.get(f"{base}/messages/AAAAAA0002", params={"account": "other"}).status_code == 404
    )
    tags = operator.get(f"{base}/tags", params={"account": "acme"}, timeout=10)
    assert 'href="/console/overview?account=acme&amp;tag=welcome"' in tags.text
