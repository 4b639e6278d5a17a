"""What the console's screenshots showed wrong (issue 22, after the browser test looked at every
page), each through the real tracker app over a real Redis, as a browser would fetch it:
the timeline of an account without a webhook URL, the tags page's footnote, the notices after
a replay or an import, what happened to each dead letter, the domains `accounts add --domain`
gave an account, charts that fill the page and the header's rows."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.unit.reports.conftest import Send
from tests.unit.reports.test_pages import DELIVERED, HARD, logged_in, main_of
from txmail.accounts.domains import Domain, Domains
from txmail.accounts.records import Accounts
from txmail.events import Event, iso_timestamp, random_event_id
from txmail.stats import OTHER, count_accepted
from txmail.store import Keys, secrets
from txmail.tokens.console import ConsoleSigner
from txmail_testing.console import ConsoleServer


@pytest.fixture
def console(client: redis.Redis, keys: Keys) -> Iterator[ConsoleServer]:
    server = ConsoleServer(client, keys).start()
    yield server
    server.stop()


def dead_letter(
    client: redis.Redis, keys: Keys, error: str, message_id: str = "4AbCdEfGh", to: str = "x"
) -> str:
    """A dead letter as the dispatcher keeps it (event, error, failed_at); its event id."""
    now = time.time()
    event = Event(
        id=random_event_id(now),
        kind="bounce",
        recipient=f"{to}@x.test",
        message_id=message_id,
        timestamp=iso_timestamp(now),
        account="acme",
        tags=[],
        details={},
    )
    client.xadd(
        keys.dead_letters("acme"),
        {"event": event.to_json(), "error": error, "failed_at": repr(now)},
    )
    return event.id


def section(html: str, marker: str) -> str:
    found = re.search(rf"{marker}.*?</(?:dl|table)>", html, re.S)
    assert found, html
    return found.group(0)


def test_a_message_of_an_account_without_a_webhook_url_says_none_is_set(
    console: ConsoleServer, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], (), {"alice@x.test": DELIVERED})
    browser = logged_in(console, "acme")
    url = f"{console.url}/console/messages/AAAAAA0001"
    endpoint = section(browser.get(url, timeout=10).text, 'id="webhook-state"')
    assert "none set" in endpoint and "not posted" in endpoint
    assert "taking posts" not in endpoint
    accounts.set_webhook_url("acme", "https://hooks.acme.test/in")
    endpoint = section(browser.get(url, timeout=10).text, 'id="webhook-state"')
    assert "taking posts" in endpoint and "none set" not in endpoint


def test_the_folded_footnote_shows_only_when_a_row_is_folded(
    console: ConsoleServer, client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], ("welcome",), {"alice@x.test": DELIVERED})
    browser = logged_in(console, "acme")
    tags = main_of(browser.get(f"{console.url}/console/tags", timeout=10).text)
    assert "welcome" in tags and "folded" not in tags
    pipe = client.pipeline(transaction=False)  # two more tags on a day that takes one more
    count_accepted(pipe, keys, "acme", ["late", "later"], time.time(), 400, tags_per_day=2)
    pipe.execute()
    tags = main_of(browser.get(f"{console.url}/console/tags", timeout=10).text)
    assert OTHER in tags and 'id="folded-note"' in tags


def test_notices_count_in_the_right_plural(
    console: ConsoleServer, client: redis.Redis, keys: Keys, accounts: Accounts
) -> None:
    browser = logged_in(console, "acme")
    base = f"{console.url}/console"
    page = browser.get(f"{base}/webhooks", timeout=10)
    dead_letter(client, keys, "HTTP 500")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    replayed = browser.post(f"{base}/webhooks/replay", data={"csrf": csrf.group(1)}, timeout=10)
    assert replayed.status_code == 200, replayed.text
    assert "The dead letter is queued again: the dispatcher posts it" in replayed.text
    assert "entries" not in replayed.text
    two = browser.get(f"{base}/webhooks", params={"done": "replayed", "n": "2"}, timeout=10)
    assert "The 2 dead letters are queued again" in two.text
    one = browser.get(f"{base}/suppressions", params={"done": "imported", "n": "1"}, timeout=10)
    assert "(1 entry)" in one.text
    many = browser.get(f"{base}/suppressions", params={"done": "imported", "n": "3"}, timeout=10)
    assert "(3 entries)" in many.text


def test_each_dead_letter_says_what_happened_to_it(
    console: ConsoleServer, client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0002", ["bob@x.test"], (), {"bob@x.test": HARD})
    gone = dead_letter(client, keys, "410 Gone", "AAAAAA0002", "bob")
    while_off = dead_letter(client, keys, "endpoint disabled (410 Gone)", "AAAAAA0002", "carl")
    late = dead_letter(client, keys, "HTTP 503", "OTHERMSG01")
    browser = logged_in(console, "acme")
    html = browser.get(f"{console.url}/console/webhooks", timeout=10).text
    rows = {
        event_id: row
        for row in re.findall(r"<tr>.*?</tr>", section(html, 'id="dead-letters"'), re.S)
        for event_id in (gone, while_off, late)
        if event_id in row
    }
    assert "answered 410 Gone: put here at once" in rows[gone]
    assert "retry window" not in rows[gone] and "retry window" not in rows[while_off]
    assert "disabled after an earlier 410 Gone" in rows[while_off]
    assert "not taken within the retry window; the last try got: HTTP 503" in rows[late]
    timeline = browser.get(f"{console.url}/console/messages/AAAAAA0002", timeout=10).text
    dead = section(timeline, 'id="message-dead-letters"')
    assert "answered 410 Gone: put here at once" in dead and late not in dead


def test_the_domains_of_accounts_add_are_shown_with_their_records(
    console: ConsoleServer, client: redis.Redis, keys: Keys, accounts: Accounts
) -> None:
    browser = logged_in(console, "acme")
    page = main_of(browser.get(f"{console.url}/console/domains", timeout=10).text)
    assert "no sending domains yet" not in page
    assert "<h2" in page and "acme.test</h2>" in page
    records = section(page, 'id="records-1"')
    assert "_dmarc.acme.test" in records and "MX" in records and "TXT" in records
    assert "no DKIM key yet" in page and "txmail domains add acme.test --account acme" in page
    assert 'id="verify-1"' not in page  # nothing to check until it has a key
    assert "other.test" not in page  # the other account's domain
    Domains(client, keys).add(Domain("acme.test", "acme"))
    page = main_of(browser.get(f"{console.url}/console/domains", timeout=10).text)
    assert "acme.test</h2>" in page and 'id="verify-1"' in page and "no DKIM key" not in page
    assert page.count("<section") == 1  # shown once, with its record


def test_charts_fill_the_content_width(
    console: ConsoleServer, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], ("welcome",), {"alice@x.test": DELIVERED})
    browser = logged_in(console, "acme")
    overview = browser.get(f"{console.url}/console/overview", timeout=10).text
    svgs = [ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", overview, re.S)]
    assert len(svgs) == 3
    assert all(s.get("width") is None and s.get("viewBox") for s in svgs)
    css = browser.get(f"{console.url}/console/static/console.css", timeout=10).text
    assert re.search(r"svg\.chart \{[^}]*width: 100%", css)


def test_the_header_puts_the_account_line_on_a_row_of_its_own(
    console: ConsoleServer, client: redis.Redis, accounts: Accounts
) -> None:
    key = secrets.current(console.settings, client, "console_key_file")
    token = ConsoleSigner(lambda: (key,)).sign_operator(time.time() + 60)
    operator = requests.Session()
    page = operator.get(f"{console.url}/console/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    operator.post(
        f"{console.url}/console/login", data={"token": token, "csrf": csrf.group(1)}, timeout=10
    )
    html = operator.get(f"{console.url}/console/tags", params={"account": "acme"}).text
    header = re.search(r'<header class="top">.*?</header>', html, re.S)
    assert header
    nav = re.search(r"<nav .*?</nav>", header.group(0), re.S)
    assert nav and nav.group(0).count("<li>") == 10
    who = header.group(0).index('<div class="who">')
    assert who > nav.end()  # after the links: it is read, and tabbed to, after them
    assert "looking at account <strong>acme</strong>" in header.group(0)
    css = operator.get(f"{console.url}/console/static/console.css", timeout=10).text
    assert re.search(r"header\.top \{[^}]*flex-wrap: wrap", css)
    assert re.search(r"header\.top \.who \{[^}]*flex: 0 0 100%", css)  # a row of its own
