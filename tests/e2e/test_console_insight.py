"""The console's insight pages against a real node (issue 22): tagged mail goes through the real
Postfix and milter over SMTP, the sink delivers some recipients and refuses others, and an
account holder logged in to the tracker's console with an HTTP client sees the overview (with a
tag filter), finds the bounced message by recipient, reads its timeline with the bounce's reason
and the remote server's diagnostic, sees the tags table, and gets the same 404 for another
account's message as for a missing one.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e

NO_LIMITS = [
    "warmup=false",
    "messages_per_minute=0",
    "recipients_per_minute=0",
    "messages_per_hour=0",
    "recipients_per_hour=0",
]


class Holder:
    """An account on the node and a browser-like HTTP session logged in to its console."""

    def __init__(self, stack: Stack) -> None:
        self.name = f"con{uuid.uuid4().hex[:8]}"
        self.sender = f"app@{self.name}.example"
        self.password = stack.add_account(self.name, f"{self.name}.example", settings=NO_LIMITS)
        self.stack = stack
        self.base = f"http://127.0.0.1:{8080 + stack.offset}/console"
        self.browser = requests.Session()

    def log_in(self) -> None:
        page = self.browser.get(f"{self.base}/login", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        answer = self.browser.post(
            f"{self.base}/login",
            data={"login": self.name, "password": self.password, "csrf": csrf.group(1)},
            timeout=10,
        )
        assert answer.status_code == 200 and answer.url.endswith("/console/overview"), answer.text

    def send(self, recipients: list[str], **headers: str) -> str:
        return self.stack.send(
            (self.name, self.password),
            self.sender,
            recipients,
            simple_message(self.sender, recipients[0], extra_headers=headers or None),
        )

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.browser.get(f"{self.base}{path}", params=params, timeout=10)


def table(html: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">.*?</table>', html, re.S)
    assert found, f"no table {table_id}"
    return found.group(0)


@pytest.fixture(scope="module")
def sent(stack: Stack, sink: Sink) -> dict[str, Any]:
    """Two accounts' mail through the node, waited for until the bounce shows in the console."""
    acme, other = Holder(stack), Holder(stack)
    acme.log_in()
    other.log_in()
    local = acme.name
    bounced_to = f"reject-{local}@example.net"
    order = acme.send([f"ok1-{local}@example.net", bounced_to], **{"X-Mxm-Tag": "order"})
    receipt = acme.send([f"ok2-{local}@example.net"], **{"X-CloudMTA-Tags": "receipt"})
    theirs = other.send([f"reject-{other.name}@example.net"], **{"X-Mxm-Tag": "hidden-tag"})

    def found_bounce(holder: Holder, recipient: str) -> bool:
        page = holder.get("/messages", recipient=recipient, kind="bounce")
        return page.status_code == 200 and 'id="messages"' in page.text

    wait_for(lambda: found_bounce(acme, bounced_to), 60, what="the bounce in acme's search")
    wait_for(lambda: found_bounce(other, "reject-"), 60, what="the other account's bounce")
    wait_for(
        lambda: "delivered" in acme.get(f"/messages/{receipt}").text,
        60,
        what="the receipt's delivery",
    )
    return {
        "acme": acme,
        "other": other,
        "order": order,
        "receipt": receipt,
        "theirs": theirs,
        "bounced_to": bounced_to,
    }


def test_overview_draws_the_days_and_filters_by_tag(sent: dict[str, Any]) -> None:
    acme = sent["acme"]
    page = acme.get("/overview")
    assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    svgs = re.findall(r"<svg .*?</svg>", page.text, re.S)
    assert len(svgs) == 3
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("role") == "img"
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
    assert "suspended above" in page.text
    daily = table(page.text, "daily")
    assert daily.count("<tr>") == 31  # the header and 30 days
    assert 'id="limits"' in page.text and 'id="warmup"' in page.text
    assert "hidden-tag" not in page.text  # the other account's tag is not offered

    tagged = acme.get("/overview", tag="order")
    assert tagged.status_code == 200 and "of tag <q>order</q>" in tagged.text
    today = re.search(
        r"<tr><th scope=\"row\">[0-9-]{10}</th>(.*?)</tr>", table(tagged.text, "daily"), re.S
    )
    assert today is not None
    cells = re.findall(r'<td class="number">([^<]*)</td>', today.group(1))
    # sent 1, delivered 1, hard bounces 1 (a run across midnight UTC may split the day)
    assert cells[:3] == ["1", "1", "1"] or cells[0] == "0"


def test_a_bounced_message_is_found_by_recipient_and_its_timeline_says_why(
    sent: dict[str, Any],
) -> None:
    acme = sent["acme"]
    page = acme.get("/messages", recipient=sent["bounced_to"])
    assert page.status_code == 200
    rows = table(page.text, "messages")
    assert sent["order"] in rows and sent["receipt"] not in rows
    assert f'href="/console/messages/{sent["order"]}"' in rows

    timeline = acme.get(f"/messages/{sent['order']}")
    assert timeline.status_code == 200
    steps = table(timeline.text, "timeline")
    assert "accepted from &lt;" in steps
    assert "hard bounce:" in steps and sent["bounced_to"] in steps
    assert "diagnostic" in steps and "status" in steps
    assert "delivered" in steps  # the other recipient
    assert 'id="webhook-posts"' in timeline.text
    # no webhook URL on this node: each event says it was not posted
    posted = table(timeline.text, "message-posts")
    assert "bounce" in posted and "not posted: the account has no webhook URL" in posted

    by_id = acme.get("/messages", id=sent["order"])
    assert sent["order"] in table(by_id.text, "messages")
    by_tag = acme.get("/messages", tag="receipt")
    assert sent["receipt"] in table(by_tag.text, "messages")


def test_tags_table_links_to_the_filtered_overview(sent: dict[str, Any]) -> None:
    page = sent["acme"].get("/tags")
    assert page.status_code == 200
    rows = table(page.text, "tags")
    assert 'href="/console/overview?tag=order"' in rows
    assert 'href="/console/overview?tag=receipt"' in rows
    assert "hidden-tag" not in rows


def test_another_accounts_message_is_a_404_like_a_missing_one(sent: dict[str, Any]) -> None:
    acme, other = sent["acme"], sent["other"]
    theirs = acme.get(f"/messages/{sent['theirs']}")
    missing = acme.get("/messages/ZZZZZZZZZZ")
    assert theirs.status_code == missing.status_code == 404
    assert other.name not in theirs.text
    assert 'id="messages"' not in acme.get("/messages", id=sent["theirs"]).text
    assert sent["theirs"] not in acme.get("/messages", recipient="reject-").text
    assert other.get(f"/messages/{sent['theirs']}").status_code == 200
    assert other.get(f"/messages/{sent['order']}").status_code == 404
