"""The console in a real browser (issue 22): Debian's headless chromium, driven through selenium
(txmail_testing/browser.py), against one node of this module's own with real traffic through
Postfix (Traffic.make: delivered, bounced, deferred, tagged, opened and clicked mail, and dead
letters of a webhook endpoint that answered 410 Gone).

One chromium serves the module, and the account holder logs in once (the operator's test
comes last and logs in over it). Every page visited is checked (one h1, no error page) and
saved as a screenshot into one folder per run (pytest's console-shots*, printed with -s, or
$TXMAIL_SCREENSHOTS); with TXMAIL_README_SCREENSHOTS=1 the overview and a timeline are also
written to docs/ for the README.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from txmail_testing.browser import Browser, Traffic
from txmail_testing.harness import Sink, Stack, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

ANSWER = b"thanks \x01from the\n test receiver"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    server.answer = ANSWER  # kept with each post, shown on the webhooks page and timelines
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(sink: Sink) -> Iterator[Stack]:
    stack = Stack(relay_port=sink.port, name="console")
    # The test's reader opens and clicks at once; without this the tracker would call them
    # a link scanner's (too soon after sending), and the pages would say so.
    stack.configure("tracker", machine_seconds=0.0)
    try:
        stack.start()
        yield stack
    finally:
        for name in ("webhooks", "tracker"):  # shown by pytest when a test failed
            print(f"--- {name}.log\n{stack.log(name)[-3000:]}")
        stack.close()


@pytest.fixture(scope="module")
def traffic(node: Stack, sink: Sink, receiver: WebhookReceiver) -> Traffic:
    return Traffic.make(node, sink, receiver)


@pytest.fixture(scope="module")
def chromium(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One browser for the module (starting chromium costs seconds); its screenshots go to
    one folder, pytest's console-shots* (or $TXMAIL_SCREENSHOTS)."""
    made = Browser(tmp_path_factory.mktemp("console-shots"), traffic.console).start()
    print(f"screenshots in {made.shots}")
    yield made
    made.close()


@pytest.fixture
def browser(chromium: Browser) -> Browser:
    """The module's browser, as whoever the last test left logged in (see as_acme)."""
    return chromium


@pytest.fixture
def as_acme(chromium: Browser, traffic: Traffic) -> Browser:
    """The browser logged in as the account holder acme (once; later tests keep the session)."""
    if chromium.viewer != traffic.acme.name:
        # a login replaces whatever session the browser had (the operator's)
        log_in(chromium, traffic.acme.name, traffic.acme.password)
        chromium.viewer = traffic.acme.name
    return chromium


def test_chromium_opens_the_tracker_of_a_node_with_traffic(
    browser: Browser, traffic: Traffic
) -> None:
    browser.get(f"{traffic.api}/healthz")
    assert "ok" in browser.text()
    assert browser.shot("healthz").stat().st_size > 0


# Helpers

# What the contract asks of every page, found in the page as the browser built it.
ACCESSIBILITY = """
const found = [];
if (!document.documentElement.lang) found.push("<html> has no lang");
if (!document.querySelector("main#main")) found.push("no main#main");
for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
  const labelled = el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
    || (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest("label");
  if (!labelled) found.push("no label: " + el.outerHTML.slice(0, 120));
}
for (const button of document.querySelectorAll("button")) {
  if (!button.innerText.trim()) found.push("no text: " + button.outerHTML.slice(0, 120));
}
for (const svg of document.querySelectorAll("main svg")) {
  if (svg.getAttribute("role") !== "img" || !svg.querySelector("title"))
    found.push("a chart without role=img and a <title>");
}
return found;
"""
ERROR_PAGES = ("Not found", "Not allowed", "Too many attempts", "Try again later", "Cannot do that")


def log_in(browser: Browser, login: str, password: str) -> None:
    """Log in as an account holder through the login page's login-and-password form."""
    browser.get("/login")
    browser.shot("login")
    browser.submit("login-form", login=login, password=password)
    assert "/console/overview" in browser.web.current_url, browser.text()


def visit(browser: Browser, path: str, shot: str, readme: bool = False) -> str:
    """Open a console page, check its landmarks (one h1, main#main) and that it is no error
    page, screenshot it; its main text."""
    browser.get(path)
    return page(browser, shot, readme)


def page(browser: Browser, shot: str, readme: bool = False) -> str:
    """Check the page the browser shows (one h1, main#main, no error page), screenshot it;
    its main text."""
    headings = browser.find_all("h1")
    where = browser.web.current_url
    assert len(headings) == 1, f"{where} has {len(headings)} <h1>"
    assert headings[0].text not in ERROR_PAGES, f"{where}: {browser.text('#main')}"
    text = browser.text("#main")
    browser.shot(shot, readme=readme)
    assert browser.web.execute_script(ACCESSIBILITY) == [], where
    return text


def row_with(browser: Browser, table: str, text: str) -> WebElement:
    rows = [r for r in browser.find_all(f"table#{table} tr") if text in r.text]
    assert rows, f"no row of table#{table} holds {text!r}:\n{browser.text('#main')}"
    return rows[0]


# The account holder


def test_a_bounced_message_is_found_by_recipient_and_its_timeline_shows_the_bounce(
    as_acme: Browser, traffic: Traffic
) -> None:
    browser, acme = as_acme, traffic.acme
    visit(browser, "/messages", "messages")
    browser.submit("search-form", recipient=traffic.bounced)
    browser.shot("messages-by-recipient")
    row = row_with(browser, "messages", traffic.bounced)
    assert traffic.delivered not in browser.text("table#messages")
    browser.press(row.find_element(By.CSS_SELECTOR, "a"))
    queue_id = acme.queue_ids[traffic.bounced]
    assert browser.web.current_url.endswith(f"/console/messages/{queue_id}")
    timeline = browser.text("table#timeline")
    assert "bounce" in timeline and traffic.bounced in timeline
    assert "5.1.1" in timeline and "User unknown" in timeline  # the reason and diagnostic
    browser.shot("timeline", readme=True)
    # the opened and clicked message's timeline, for the eye
    visit(browser, f"/messages/{acme.queue_ids[traffic.opened]}", "timeline-opened")
    assert "click" in browser.text("table#timeline")


def test_the_overview_filtered_by_tag_and_the_tags_page(as_acme: Browser, traffic: Traffic) -> None:
    browser = as_acme
    visit(browser, "/overview", "overview", readme=True)
    # every chart as wide as the page's content (issue 22: they were drawn at 720 px)
    main = browser.web.execute_script(
        "return document.querySelector('#charts-heading').clientWidth"
    )
    for svg in browser.find_all("main svg.chart"):
        assert svg.size["width"] >= main * 0.95, (svg.size, main)
    whole = totals(browser)
    assert (whole["Sent (accepted)"], whole["Delivered"], whole["Hard bounces"]) == (4, 2, 1)
    assert whole["Soft bounces (deferred)"] >= 1 and whole["Opens"] >= 1 and whole["Clicks"] >= 1
    browser.submit("tag-form", tag="receipt")
    assert "tag=receipt" in browser.web.current_url
    page(browser, "overview-tag-receipt")
    assert "receipt" in browser.text("h1")
    receipt = totals(browser)
    assert (receipt["Sent (accepted)"], receipt["Delivered"], receipt["Hard bounces"]) == (1, 1, 0)
    tags = visit(browser, "/tags", "tags")
    assert "order" in tags and "receipt" in tags
    row_with(browser, "tags", "order")


def test_live_updates_refresh_the_totals_from_the_server(as_acme: Browser) -> None:
    """static/live.js: an element marked data-live takes its content from a fresh fetch of its
    page (called at once here rather than waited for)."""
    browser = as_acme
    visit(browser, "/overview", "overview-live")
    served = browser.text("#totals")
    browser.web.execute_script("document.getElementById('totals').textContent = 'stale';")
    assert browser.text("#totals") == "stale"
    browser.web.execute_async_script("window.txmailLive().then(arguments[arguments.length - 1]);")
    assert browser.text("#totals") == served


def totals(browser: Browser) -> dict[str, int]:
    """The overview's counts (dl#totals) by their names."""
    names = [e.text for e in browser.find_all("dl#totals dt")]
    values = [int(e.text) for e in browser.find_all("dl#totals dd")]
    return dict(zip(names, values, strict=True))


def test_a_suppression_is_added_and_removed(as_acme: Browser, traffic: Traffic) -> None:
    browser = as_acme
    address = f"unwanted-{traffic.acme.name}@example.net"
    visit(browser, "/suppressions", "suppressions")
    browser.submit("add-suppression", recipient=address)
    browser.shot("suppressions-added")
    row = row_with(browser, "suppressions", address)
    browser.press(row.find_element(By.CSS_SELECTOR, "button"))
    browser.shot("suppressions-removed")
    assert address not in browser.text("#main")


def test_a_dead_letter_replayed_from_the_webhooks_page_reaches_the_receiver(
    as_acme: Browser, traffic: Traffic
) -> None:
    browser, acme = as_acme, traffic.acme
    visit(browser, "/webhooks", "webhooks")
    assert "410" in browser.text("table#dead-letters")
    # the post the endpoint answered 410 to, kept with its answer (control characters gone)
    assert "HTTP 410" in row_with(browser, "posts", "thanks from the test receiver").text
    queue_id = acme.queue_ids[traffic.bounced]
    row = row_with(browser, "dead-letters", traffic.bounced)
    browser.press(row.find_element(By.CSS_SELECTOR, "button"))
    browser.shot("webhooks-replayed")
    event = traffic.receiver.wait_event(
        lambda e: e["message_id"] == queue_id and e["kind"] == "bounce"
    )
    assert event["recipient"] == traffic.bounced
    # the message's timeline shows the post that carried the bounce and the answer to it
    # (kept as the dispatcher settles the post, just after the receiver has it)

    def acknowledged() -> bool:
        browser.get(f"/messages/{queue_id}")
        return "posted and acknowledged" in row_with(browser, "message-posts", event["id"]).text

    wait_for(acknowledged, 30, what="the replayed bounce's post on its timeline")
    page(browser, "timeline-posts")
    row = row_with(browser, "message-posts", event["id"]).text
    assert "HTTP 200" in row and "thanks from the test receiver" in row


def test_another_accounts_message_is_a_404_when_its_id_is_typed_in(
    as_acme: Browser, traffic: Traffic
) -> None:
    browser = as_acme
    theirs = traffic.other.queue_ids[traffic.theirs]
    browser.get(f"/messages/{theirs}")
    browser.shot("another-accounts-message")
    assert browser.text("h1") == "Not found"
    shown = browser.text()
    assert traffic.theirs not in shown and traffic.other.name not in shown
    # an account= of another account is ignored, never obeyed
    browser.get(f"/messages?account={traffic.other.name}&recipient={traffic.theirs}")
    assert traffic.theirs not in browser.text("#main")
    # and the account's other pages, for the eye
    for page_name in ("domains", "smtp"):
        assert acme_only(visit(browser, f"/{page_name}", page_name), traffic)


def acme_only(text: str, traffic: Traffic) -> bool:
    return traffic.other.name not in text


# The operator


def test_an_operator_logs_in_with_a_token_and_sees_every_account(
    browser: Browser, traffic: Traffic
) -> None:
    token = traffic.stack.txmail("console", "token").stdout.strip().splitlines()[-1]
    browser.viewer = ""
    browser.get("/login")
    browser.submit("operator-form", token=token)
    browser.viewer = "operator"
    assert "/console/accounts" in browser.web.current_url, browser.text()
    page(browser, "operator-accounts")
    row_with(browser, "accounts", traffic.acme.name)
    row_with(browser, "accounts", traffic.other.name)
    visit(browser, "/nodes", "operator-nodes")
    visit(browser, "/unparsed", "operator-unparsed")
    # the operator may open any account's messages (the account holder above could not)
    theirs = traffic.other.queue_ids[traffic.theirs]
    visit(browser, f"/messages/{theirs}?account={traffic.other.name}", "operator-other-message")
    assert traffic.theirs in browser.text("table#timeline")
    # other has no webhook URL: its timeline says so rather than "taking posts"
    assert "none set" in browser.text("#webhook-state")
    # ten page links, then the account line on a row of its own, tabbed to in that order
    assert browser.web.execute_script(HEADER_ROWS) == []
    assert tab_order(browser)[-3:] == ["Webhooks", "SMTP settings", "Log out"]
    # other was made with `accounts add --domain` only: its domain is shown, with records
    text = visit(browser, f"/domains?account={traffic.other.name}", "operator-other-domains")
    assert "no sending domains yet" not in text and "no DKIM key yet" in text
    assert traffic.other.domain in browser.text("table#records-1")


# Where the header's parts are drawn, as the browser laid them out.
HEADER_ROWS = """
const found = [];
const who = document.querySelector("header.top .who").getBoundingClientRect();
const header = document.querySelector("header.top").getBoundingClientRect();
for (const a of document.querySelectorAll("header.top nav a")) {
  const r = a.getBoundingClientRect();
  if (r.bottom > who.top + 1) found.push(a.innerText + " reaches into the account line's row");
  if (r.right > window.innerWidth) found.push(a.innerText + " runs off the page");
}
if (who.width < header.width * 0.8) found.push("the account line shares its row");
const line = document.querySelector("header.top .who p").getBoundingClientRect();
const button = document.querySelector("#logout-form button").getBoundingClientRect();
if (button.top >= line.bottom || line.top >= button.bottom)
  found.push("Log out is not on the account line's row");
return found;
"""


def tab_order(browser: Browser) -> list[str]:
    """The texts of the header's links and buttons, in the order Tab reaches them."""
    browser.web.execute_script("document.activeElement && document.activeElement.blur()")
    seen: list[str] = []
    body = browser.find("body")
    for _ in range(20):
        body.send_keys(Keys.TAB)
        active = browser.web.switch_to.active_element
        if not browser.web.execute_script("return !!arguments[0].closest('header')", active):
            if seen:
                break
            continue
        seen.append(active.text.strip())
    return seen
