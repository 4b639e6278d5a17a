"""The tracker against a real node: a real HTTP client follows tracked links and opens pixels.

The message goes through real Postfix and the milter (which rewrites its HTML), arrives at the
sink, and its links are followed through the tracker on listen.http to a local target.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from txmail_testing.harness import Sink, Stack, wait_for

pytestmark = pytest.mark.e2e

DOMAIN = "trk.test"


class Target(http.server.BaseHTTPRequestHandler):
    """Where tracked links lead: answers 200 "landed" and remembers the paths it served."""

    served: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Target.served.append(self.path)
        body = b"landed"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def account(stack: Stack) -> tuple[str, str]:
    name = "tracked"
    password = stack.add_account(
        name, DOMAIN, settings=["track_opens=true", "track_clicks=true", "warmup=false"]
    )
    return name, password


def tracker_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{8080 + stack.offset}"


def html_message(sender: str, recipient: str, target: str, extra: str = "") -> bytes:
    html = (
        f'<html><body><p>Your order: <a href="{target}/order?id=7&amp;from=mail">view</a>'
        f' <a href="mailto:help@{DOMAIN}">help</a>'
        f' <a data-unsubscribe href="{target}/unsubscribe">unsubscribe</a></p>'
        "</body></html>"
    )
    return (
        f"From: Shop <{sender}>\r\nTo: {recipient}\r\nSubject: your order\r\n"
        f"Message-ID: <{time.time_ns()}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n{extra}"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour order: see the HTML part.\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + html.replace("=", "=3D")
        + "\r\n--b--\r\n"
    ).encode()


def delivered_html(sink: Sink, recipient: str) -> str:
    import email

    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    parsed = email.message_from_bytes(found[-1].data)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode()
    raise AssertionError("the delivered message has no HTML part")


def events_of(stack: Stack, account: str, queue_id: str, kind: str) -> list[dict]:
    rows = stack.redis().xrange(f"txmail:{{{account}}}:events")
    found = [json.loads(fields["event"]) for _, fields in rows]
    return [e for e in found if e["message_id"] == queue_id and e["kind"] == kind]


def today_count(stack: Stack, account: str, kind: str) -> int:
    day = time.strftime("%Y%m%d", time.gmtime())
    return int(stack.redis().hget(f"txmail:{{{account}}}:counts:{day}", kind) or 0)


@pytest.fixture(scope="module")
def sent(stack: Stack, sink: Sink, account: tuple[str, str], target: str) -> dict[str, str]:
    name, password = account
    recipient = "reader@example.net"
    queue_id = stack.send(
        (name, password),
        f"shop@{DOMAIN}",
        [recipient],
        html_message(f"shop@{DOMAIN}", recipient, target),
    )
    return {"queue_id": queue_id, "recipient": recipient, "html": delivered_html(sink, recipient)}


def test_links_are_rewritten_except_mailto_and_unsubscribe(
    sent: dict[str, str], target: str
) -> None:
    html = sent["html"]
    assert len(re.findall(r"/c/[A-Za-z0-9_.-]+", html)) == 1
    assert f'href="mailto:help@{DOMAIN}"' in html
    assert f'href="{target}/unsubscribe"' in html
    assert f'href="{target}/order' not in html
    assert re.search(r'<img src="[^"]+/o/[A-Za-z0-9_.-]+\.gif"', html)


def test_a_followed_link_reaches_its_target_and_makes_one_click(
    stack: Stack, sent: dict[str, str], target: str
) -> None:
    link = re.search(r'href="[^"]*(/c/[A-Za-z0-9_.-]+)"', sent["html"]).group(1)
    before = today_count(stack, "tracked", "click")
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}
    answer = requests.get(tracker_url(stack) + link, headers=browser, timeout=10)
    assert answer.status_code == 200 and answer.text == "landed"
    assert answer.url == f"{target}/order?id=7&from=mail"
    assert answer.history[0].status_code == 302
    clicks = wait_for(
        lambda: events_of(stack, "tracked", sent["queue_id"], "click"), 15, what="the click event"
    )
    assert len(clicks) == 1
    click = clicks[0]
    assert click["recipient"] == sent["recipient"]
    assert click["details"]["url"] == f"{target}/order?id=7&from=mail"
    assert click["details"]["link_index"] == 0
    assert click["details"]["user_agent"].startswith("Mozilla/5.0")
    # a second click is counted but sends no second event
    requests.get(tracker_url(stack) + link, headers=browser, timeout=10)
    wait_for(
        lambda: today_count(stack, "tracked", "click") >= before + 2,
        15,
        what="the second click counted",
    )
    assert len(events_of(stack, "tracked", sent["queue_id"], "click")) == 1


def test_the_open_pixel_records_an_open_and_marks_head_as_machine(
    stack: Stack, sent: dict[str, str]
) -> None:
    pixel = re.search(r'<img src="[^"]*(/o/[A-Za-z0-9_.-]+\.gif)"', sent["html"]).group(1)
    probe = requests.head(tracker_url(stack) + pixel, timeout=10)
    assert probe.status_code == 200 and probe.content == b""
    opened = requests.get(
        tracker_url(stack) + pixel,
        timeout=10,
        headers={"User-Agent": "Mozilla/5.0 Thunderbird/128.0"},
    )
    assert opened.status_code == 200 and opened.headers["Content-Type"] == "image/gif"
    assert opened.content.startswith(b"GIF89a") and "no-store" in opened.headers["Cache-Control"]
    opens = wait_for(
        lambda: events_of(stack, "tracked", sent["queue_id"], "open"), 15, what="the open event"
    )
    assert len(opens) == 1
    assert opens[0]["details"]["machine"] is True  # the HEAD came first
    assert opens[0]["details"]["machine_reason"] == "head"


def test_flags_turn_tracking_off_for_one_message(
    stack: Stack, sink: Sink, account: tuple[str, str], target: str
) -> None:
    recipient = "untracked@example.net"
    stack.send(
        account,
        f"shop@{DOMAIN}",
        [recipient],
        html_message(f"shop@{DOMAIN}", recipient, target, extra="X-Mxm-Flags: 0\r\n"),
    )
    html = delivered_html(sink, recipient)
    assert "/c/" not in html and "/o/" not in html
    assert f'href="{target}/order?id=7&amp;from=mail"' in html
