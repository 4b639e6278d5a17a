"""A real browser for the console's tests: Debian's headless chromium driven through selenium,
and a node with real traffic for it to look at.

Browser(shots).start() runs /usr/bin/chromium (package chromium) through /usr/bin/chromedriver
(package chromium-driver) with `--headless=new --no-sandbox` (the tests run as root) and a
profile folder of its own, removed again by close(). Nothing is fetched from the internet:
both paths are given, so selenium's own driver manager never runs, and chromium's background
networking, updates and sync are off.

Screenshots: Browser.shot(name) saves the whole page as NAME.png into the test's output
folder: the one the environment variable TXMAIL_SCREENSHOTS names when it is set (made if
missing), else the one the test gave (tests/e2e/test_console_browser.py gives one from pytest's
tmp_path_factory; pytest keeps the last three runs under /tmp/pytest-of-USER/). A shot taken
with readme=True also writes the page's top (1280 x 1100) as docs/console-NAME.png in
the checkout when TXMAIL_README_SCREENSHOTS=1, which is how the README's pictures are made:
`TXMAIL_README_SCREENSHOTS=1 .venv/bin/python -m pytest -m e2e tests/e2e/test_console_browser.py`.

Traffic.make(stack, sink, receiver) sends real mail through the node's Postfix and milter
over SMTP and waits until every outcome is recorded: two accounts (the first with a sending
domain: a DKIM key and a return path, not yet in DNS), delivered and tagged mail, a hard bounce
(the sink refuses reject*@), a deferral (defer*@, Postfix keeps retrying), an open and a click
through the tracker, and a webhook endpoint that answers 410 Gone, so the account has dead
letters (the receiver answers 200 again before make() returns, ready for a replay).
"""

from __future__ import annotations

import base64
import contextlib
import email
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from txmail_testing.harness import REPO, Sink, Stack, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 900
TALLEST_SHOT = 4000  # pixels: a longer page is cut there in its screenshot
README_SHOT = 1100  # pixels of a page's top in the README's pictures

# Flags that keep chromium quiet and local: no sandbox (root), no /dev/shm (small in
# containers), no first-run pages, no calls home.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--password-store=basic",
    "--lang=en-US",
    f"--window-size={WIDTH},{HEIGHT}",
)


def shots_folder(default: Path) -> Path:
    """Where screenshots go: $TXMAIL_SCREENSHOTS when set, else `default` (tmp_path)."""
    chosen = os.environ.get("TXMAIL_SCREENSHOTS")
    folder = Path(chosen).resolve() if chosen else default
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """One headless chromium session, with the node's console as its base URL."""

    def __init__(self, shots: Path, base_url: str = "") -> None:
        self.shots = shots_folder(shots)
        self.base_url = base_url.rstrip("/")
        self.profile = Path(tempfile.mkdtemp(prefix="txmail-chromium-"))
        self.driver: webdriver.Chrome | None = None
        self.taken: list[Path] = []
        self.viewer = ""  # who the tests logged in as, for a module sharing one browser

    def start(self) -> Browser:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile / 'profile'}")
        service = Service(
            executable_path=CHROMEDRIVER, log_output=str(self.profile / "chromedriver.log")
        )
        try:
            self.driver = webdriver.Chrome(options=options, service=service)
        except WebDriverException:
            self.close()
            raise
        self.driver.set_page_load_timeout(30)
        return self

    @property
    def web(self) -> webdriver.Chrome:
        if self.driver is None:
            raise RuntimeError("the browser is not started")
        return self.driver

    def get(self, path: str) -> Browser:
        """Open `path` (absolute, or relative to base_url)."""
        self.web.get(path if "://" in path else self.base_url + path)
        return self

    def find(self, css: str) -> WebElement:
        return self.web.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.web.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def form(self, form: str) -> WebElement:
        """form#FORM, or, for "name=FIELD", the form that holds the input named FIELD (the
        login page has three forms)."""
        if form.startswith("name="):
            return self.find(f"[name={form[5:]}]").find_element(By.XPATH, "./ancestor::form")
        return self.find(f"form#{form}")

    def fill(self, form: str, **fields: str) -> WebElement:
        """Type into the named inputs of the form (replacing what is there); return it."""
        element = self.form(form)
        for name, value in fields.items():
            field_element = element.find_element(By.NAME, name)
            if field_element.tag_name == "select":
                Select(field_element).select_by_value(value)
                continue
            field_element.clear()
            field_element.send_keys(value)
        return element

    def submit(self, form: str, **fields: str) -> Browser:
        """Fill the form and press its submit button, as a person would; wait for the next
        page."""
        element = self.fill(form, **fields)
        button = element.find_element(
            By.CSS_SELECTOR, "button:not([type=button]), input[type=submit]"
        )
        return self.press(button)

    def press(self, button: WebElement) -> Browser:
        """Click a button or link that loads another page; wait for it."""
        old = self.find("html")
        button.click()
        wait_for(lambda: _stale(old), 15, what="the next page")
        return self

    def shot(self, name: str, readme: bool = False) -> Path:
        """Save the whole page (up to TALLEST_SHOT pixels) as NAME.png in the output folder;
        with readme=True and TXMAIL_README_SCREENSHOTS=1 also its top (README_SHOT pixels,
        what a reader sees first) as docs/console-NAME.png."""
        path = self.shots / f"{name}.png"
        path.write_bytes(self._capture(whole=True))
        self.taken.append(path)
        if readme and os.environ.get("TXMAIL_README_SCREENSHOTS") == "1":
            docs = REPO / "docs"
            docs.mkdir(exist_ok=True)
            (docs / f"console-{name}.png").write_bytes(self._capture(whole=False))
        return path

    def _capture(self, whole: bool) -> bytes:
        """A PNG of the page through the DevTools protocol, which can take what lies below
        the window too (selenium's own screenshot takes the window only)."""
        web = self.web
        layout = web.execute_cdp_cmd("Page.getLayoutMetrics", {})
        content = layout["cssContentSize"]
        width = max(int(content["width"]), int(layout["cssLayoutViewport"]["clientWidth"]))
        height = min(int(content["height"]), TALLEST_SHOT if whole else README_SHOT)
        taken = web.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        return base64.b64decode(taken["data"])

    def close(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(WebDriverException):
                self.driver.quit()
            self.driver = None
        shutil.rmtree(self.profile, ignore_errors=True)


def _stale(element: WebElement) -> bool:
    """True once `element` belongs to a page that has been replaced."""
    try:
        element.tag_name  # noqa: B018 - touching it is the test
    except WebDriverException:
        return True
    return False


# Traffic


NO_LIMITS = [
    "warmup=false",
    "messages_per_minute=0",
    "recipients_per_minute=0",
    "messages_per_hour=0",
    "recipients_per_hour=0",
]
BROWSER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass
class Account:
    """An account of the traffic node: its SASL login, an API key and its sender address."""

    name: str
    password: str
    key: str
    domain: str
    queue_ids: dict[str, str] = field(default_factory=dict)  # recipient -> queue id

    @property
    def sender(self) -> str:
        return f"app@{self.domain}"


def html_message(sender: str, recipient: str, subject: str, tag: str | None, link: str) -> bytes:
    """A small HTML message with one link, so the milter adds an open pixel and a click link."""
    html = (
        f'<html><body><p>Your order is on its way: <a href="{link}">track it</a>.</p></body></html>'
    )
    tags = f"X-Mxm-Tag: {tag}\r\n" if tag else ""
    return (
        f"From: Shop <{sender}>\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{sender.split('@')[1]}>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"{tags}MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour order is on its way.\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + html.replace("=", "=3D")
        + "\r\n--b--\r\n"
    ).encode()


@dataclass
class Traffic:
    """What Traffic.make() sent, for the tests to look for in the console."""

    stack: Stack
    acme: Account  # the account holder the tests log in as
    other: Account  # another account, whose message acme must never see
    receiver: WebhookReceiver
    delivered: str  # recipients of acme's messages, by outcome
    bounced: str
    deferred: str
    opened: str
    theirs: str  # the other account's delivered recipient
    tags: tuple[str, ...] = ("order", "receipt")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{8080 + self.stack.offset}"

    @property
    def console(self) -> str:
        return f"{self.api}/console"

    def events(self, account: Account, **params: Any) -> list[dict[str, Any]]:
        answer = requests.get(
            f"{self.api}/v1/events",
            params={"limit": 1000, **params},
            headers={"Authorization": f"Bearer {account.key}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["events"]  # type: ignore[no-any-return]

    def kinds(self, account: Account, recipient: str) -> set[str]:
        return {e["kind"] for e in self.events(account) if e["recipient"] == recipient}

    def dead_letters(self, account: Account) -> int:
        return int(self.stack.redis().xlen(f"txmail:{{{account.name}}}:webhook:dead"))

    @classmethod
    def make(cls, stack: Stack, sink: Sink, receiver: WebhookReceiver) -> Traffic:
        def account(prefix: str) -> Account:
            name = f"{prefix}{uuid.uuid4().hex[:6]}"
            domain = f"{name}.example"
            password = stack.add_account(
                name,
                domain,
                settings=[*NO_LIMITS, "track_opens=true", "track_clicks=true"],
            )
            key = stack.txmail("accounts", "apikey", name).stdout.strip().splitlines()[-1]
            return Account(name, password, key, domain)

        acme, other = account("acme"), account("other")
        # a sending domain with its DKIM key and return path, for the domains page to show
        stack.txmail("domains", "add", acme.domain, "--account", acme.name, "--no-ed25519")
        local = acme.name
        traffic = cls(
            stack=stack,
            acme=acme,
            other=other,
            receiver=receiver,
            delivered=f"ok-{local}@example.net",
            bounced=f"reject-{local}@example.net",
            deferred=f"defer-{local}@example.net",
            opened=f"reader-{local}@example.net",
            theirs=f"ok-{other.name}@example.net",
        )
        # The endpoint answers 410 Gone: the dispatcher disables it and puts the events it
        # had into the dead letters, where the console can replay them.
        receiver.status = 410
        stack.txmail("webhooks", "url", acme.name, receiver.url)

        def send(who: Account, recipient: str, subject: str, tag: str | None) -> None:
            message = html_message(who.sender, recipient, subject, tag, "https://shop.test/t/1")
            who.queue_ids[recipient] = stack.send(
                (who.name, who.password), who.sender, [recipient], message
            )

        send(acme, traffic.delivered, "Your receipt", "receipt")
        send(acme, traffic.bounced, "Your order", "order")
        send(acme, traffic.deferred, "Your order", "order")
        send(acme, traffic.opened, "Your order has shipped", "order")
        send(other, traffic.theirs, "Another account's message", "order")

        # Open and click as a reader's mail client would, after the head start a link
        # scanner would not wait for; the tracker counts a GET with a browser's agent.
        arrived = wait_for(lambda: sink.find(traffic.opened), 60, what="the tracked message")
        html = _html_part(arrived[-1].data)
        pixel = re.search(r'<img src="([^"]+/o/[^"]+\.gif)"', html)
        link = re.search(r'href="([^"]+/c/[^"]+)"', html)
        assert pixel and link, f"the milter did not add tracking to {html!r}"
        agent = {"User-Agent": BROWSER_AGENT}
        requests.get(_local(pixel.group(1), traffic.api), headers=agent, timeout=10)
        requests.get(
            _local(link.group(1), traffic.api), headers=agent, timeout=10, allow_redirects=False
        )

        expected = {
            traffic.delivered: {"delivery"},
            traffic.bounced: {"bounce"},
            traffic.deferred: {"soft_bounce"},
            traffic.opened: {"delivery", "open", "click"},
        }
        for recipient, kinds in expected.items():
            wait_for(
                lambda r=recipient, k=kinds: k <= traffic.kinds(acme, r),  # type: ignore[misc]
                60,
                what=f"{', '.join(sorted(kinds))} of {recipient}",
            )
        wait_for(
            lambda: "delivery" in traffic.kinds(other, traffic.theirs),
            60,
            what="the other account's delivery",
        )
        wait_for(lambda: traffic.dead_letters(acme) > 0, 60, what="a dead letter")
        receiver.status = 200  # up again: a replay from the console reaches it
        return traffic


def _html_part(raw: bytes) -> str:
    parsed = email.message_from_bytes(bytes(raw))
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("the delivered message has no HTML part")


def _local(url: str, base: str) -> str:
    """A tracking URL pointed at the node's tracker on loopback (its public base URL may name
    a host this machine does not resolve)."""
    path = url.split("://", 1)[-1].split("/", 1)[1]
    return f"{base}/{path}"
