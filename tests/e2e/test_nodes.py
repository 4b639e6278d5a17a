"""Several nodes, one identity: two nodes on one Redis (and on a 3-master Redis Cluster), the
second made by nothing but `txmail init --redis-url`, behave as one relay.

Node B never gets a file from node A: its keys come from the shared store. A bounce for mail A
sent is trusted at B; a link A wrote is followed at B's tracker; webhooks from either verify
with the one secret either prints; B signs with the DKIM key A made, after A is gone; and key
rotations on one node reach the other. The tests of one backend run in order on one pair.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dkim
import pytest
import requests

from txmail.webhooks import signing
from txmail_testing.harness import (
    RedisCluster,
    RedisServer,
    Sink,
    Stack,
    simple_message,
    wait_for,
)
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

TARGET = "http://127.0.0.1:9/landing"  # never fetched: the tracker's redirect is enough


class Pair:
    def __init__(self, a: Stack, b: Stack, receiver: WebhookReceiver, sink: Sink) -> None:
        self.a, self.b, self.receiver, self.sink = a, b, receiver, sink
        self.account = f"n{uuid.uuid4().hex[:8]}"
        self.domain = f"{self.account}.example"
        self.sender = f"app@{self.domain}"
        self.password = a.add_account(
            self.account,
            self.domain,
            settings=["track_clicks=true", "track_opens=true", "warmup=false"],
        )
        b.wait_passwd(self.account)
        a.txmail("webhooks", "url", self.account, receiver.url)

    def send(self, node: Stack, recipient: str, body: bytes | None = None) -> str:
        return node.send(
            (self.account, self.password),
            self.sender,
            [recipient],
            body or simple_message(self.sender, recipient),
        )

    def wait_event(self, kind: str, recipient: str, queue_id: str) -> dict[str, Any]:
        return self.receiver.wait_event(
            lambda e: (
                e["account"] == self.account
                and e["kind"] == kind
                and e["recipient"] == recipient
                and e["message_id"] == queue_id
            ),
            40,
        )


@pytest.fixture(scope="module", params=["single", "cluster"])
def pair(request: pytest.FixtureRequest, sink: Sink) -> Iterator[Pair]:
    backend: RedisServer | RedisCluster = (
        RedisServer() if request.param == "single" else RedisCluster()
    )
    backend.start()
    receiver = WebhookReceiver().start()
    cluster = request.param == "cluster"
    nodes: list[Stack] = []
    try:
        for name in ("a", "b"):
            node = Stack(
                relay_port=sink.port,
                redis_url=backend.url,
                cluster=cluster,
                name=f"node-{name}-{request.param}",
            )
            nodes.append(node)
            # two nodes on one host: give each dispatcher its own consumer name
            node.configure("webhooks", consumer=f"node-{name}").start()
        yield Pair(nodes[0], nodes[1], receiver, sink)
    finally:
        for node in nodes:
            node.close()
        receiver.stop()
        backend.close()


SHARED_KEYS = ("bounce.key", "tracking.key", "webhook.key")


def key_files(node: Stack) -> dict[str, bytes]:
    """The node's cached copies of the installation's keys."""
    return {name: (node.state / "secrets" / name).read_bytes().strip() for name in SHARED_KEYS}


def test_b_is_made_by_init_alone_and_holds_the_same_keys(pair: Pair) -> None:
    """B's key files are caches of the installation's keys: the same bytes as A's."""
    assert key_files(pair.a) == key_files(pair.b)
    secret_a = pair.a.txmail("webhooks", "secret", pair.account).stdout.strip()
    secret_b = pair.b.txmail("webhooks", "secret", pair.account).stdout.strip()
    assert secret_a == secret_b and secret_a.startswith("whsec_")


def test_a_dsn_for_mail_a_sent_is_trusted_at_b_and_forwarded(pair: Pair) -> None:
    rcpt = f"later-{pair.account}@dest.example"
    queue_id = pair.send(pair.a, rcpt)
    pair.wait_event("delivery", rcpt, queue_id)
    original = pair.sink.find(rcpt)[-1]
    assert original.sender.startswith("bounces+")
    Sink.deliver(pair.b.smtp, "", original.sender, Sink.dsn(original, rcpt))
    event = pair.wait_event("bounce", rcpt, queue_id)
    assert event["details"].get("trusted", True) is not False
    assert event["details"]["source"] == "bounce-pipe"
    listed = pair.b.txmail("suppressions", "list", "--account", pair.account, "--json").stdout
    assert rcpt in listed
    # forwarded to the client's envelope sender (no NOTIFY means FAILURE,DELAY), MAIL FROM:<>
    forwarded = wait_for(
        lambda: [m for m in pair.sink.find(pair.sender) if m.sender in ("", "<>")],
        30,
        what="the forwarded bounce",
    )
    assert queue_id.encode() in forwarded[-1].data


def html_message(sender: str, recipient: str) -> bytes:
    html = f'<html><body><p><a href="{TARGET}?n=1">view</a></p></body></html>'
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: links\r\n"
        f"Message-ID: <{time.time_ns()}@nodes.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()


def click_path(sink: Sink, recipient: str) -> str:
    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    message = email.message_from_bytes(found[-1].data)
    html = "".join(
        part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() == "text/html"
    )
    match = re.search(r"/c/[A-Za-z0-9_.-]+", html)
    assert match, html
    return match.group(0)


def follow(node: Stack, path: str) -> requests.Response:
    return requests.get(
        f"http://127.0.0.1:{8080 + node.offset}{path}", allow_redirects=False, timeout=10
    )


def test_a_click_link_written_by_a_redirects_at_b(pair: Pair) -> None:
    rcpt = f"reader-{pair.account}@example.net"
    pair.send(pair.a, rcpt, html_message(pair.sender, rcpt))
    path = click_path(pair.sink, rcpt)
    answer = follow(pair.b, path)
    assert answer.status_code in (301, 302, 303, 307), answer.text
    assert answer.headers["location"].startswith(TARGET)
    pair.receiver.wait_event(lambda e: e["account"] == pair.account and e["kind"] == "click", 30)


def posts_of_test_events(pair: Pair) -> list[tuple[dict[str, str], bytes, float]]:
    with pair.receiver.lock:
        return [
            post
            for post in pair.receiver.posts
            if any(e["kind"] == "test" for e in json.loads(post[1])["events"])
            and json.loads(post[1])["events"][0]["account"] == pair.account
        ]


def test_webhooks_from_both_nodes_verify_with_the_one_secret(pair: Pair) -> None:
    secret = pair.b.txmail("webhooks", "secret", pair.account).stdout.strip()
    before = len(posts_of_test_events(pair))
    pair.a.txmail("webhooks", "test", pair.account)
    pair.b.txmail("webhooks", "test", pair.account)
    posts = posts_of_test_events(pair)[before:]
    assert len(posts) == 2
    for headers, body, _ in posts:
        assert signing.verify(secret, headers, body, now=float(headers["webhook-timestamp"]))
    # and every event the dispatchers (of both nodes) posted so far
    with pair.receiver.lock:
        mine = [
            p
            for p in pair.receiver.posts
            if json.loads(p[1])["events"][0]["account"] == pair.account
        ]
    for headers, body, _ in mine:
        assert signing.verify(secret, headers, body, now=float(headers["webhook-timestamp"]))


def test_rotate_secret_signs_with_both_then_only_the_new(pair: Pair) -> None:
    old = pair.a.txmail("webhooks", "secret", pair.account).stdout.strip()
    new = pair.b.txmail("webhooks", "rotate-secret", pair.account, "--overlap", "6").stdout.strip()
    assert new.startswith("whsec_") and new != old
    assert pair.a.txmail("webhooks", "secret", pair.account).stdout.strip() == new
    before = len(posts_of_test_events(pair))
    pair.a.txmail("webhooks", "test", pair.account)
    headers, body, _ = posts_of_test_events(pair)[before]
    assert len(headers["webhook-signature"].split()) == 2
    now = float(headers["webhook-timestamp"])
    assert signing.verify(old, headers, body, now=now)
    assert signing.verify(new, headers, body, now=now)
    time.sleep(6.5)
    pair.b.txmail("webhooks", "test", pair.account)
    headers, body, _ = posts_of_test_events(pair)[before + 1]
    now = float(headers["webhook-timestamp"])
    assert len(headers["webhook-signature"].split()) == 1
    assert signing.verify(new, headers, body, now=now)
    assert not signing.verify(old, headers, body, now=now)


def test_rotating_the_tracking_and_bounce_keys_keeps_old_links_and_addresses(
    pair: Pair,
) -> None:
    rcpt = f"reader2-{pair.account}@example.net"
    pair.send(pair.a, rcpt, html_message(pair.sender, rcpt))
    old_path = click_path(pair.sink, rcpt)
    bounced = f"later2-{pair.account}@dest.example"
    queue_id = pair.send(pair.a, bounced)
    pair.wait_event("delivery", bounced, queue_id)
    original = pair.sink.find(bounced)[-1]
    before = key_files(pair.a)
    pair.b.txmail("secrets", "rotate", "tracking")
    pair.b.txmail("secrets", "rotate", "bounce")
    time.sleep(6)  # every process re-reads the keys within secrets.REFRESH_SECONDS
    # new mail through A uses the new key (its links verify at B)...
    rcpt3 = f"reader3-{pair.account}@example.net"
    pair.send(pair.a, rcpt3, html_message(pair.sender, rcpt3))
    assert follow(pair.b, click_path(pair.sink, rcpt3)).status_code in (301, 302, 303, 307)
    # ...and what was handed out before the rotation still works, at either node
    for node in (pair.a, pair.b):
        assert follow(node, old_path).status_code in (301, 302, 303, 307)
    Sink.deliver(pair.a.smtp, "", original.sender, Sink.dsn(original, bounced))
    event = pair.wait_event("bounce", bounced, queue_id)
    assert event["details"].get("trusted", True) is not False
    assert key_files(pair.b)["tracking.key"] != before["tracking.key"]
    status = pair.a.txmail("secrets", "status").stdout
    assert "tracking  rotated 20" in status and "still verifies" in status


def scrape(node: Stack) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{8080 + node.offset}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_metrics_say_which_series_are_per_node(pair: Pair) -> None:
    """Installation-wide series read the shared Redis: the same at both nodes; per-node ones
    are this node's own. Every series says which it is."""
    a, b = scrape(pair.a), scrape(pair.b)
    assert all('scope="node"' in n or 'scope="installation"' in n for n in [*a, *b])
    accepted = 'txmail_messages_accepted_total{scope="installation"}'
    assert a[accepted] == b[accepted] > 0
    assert a['txmail_up{scope="node"}'] == b['txmail_up{scope="node"}'] == 1.0


def _records(node: Stack, domain: str) -> dict[bytes, bytes]:
    shown = json.loads(node.txmail("domains", "dns", domain, "--json").stdout)
    return {
        (r["name"] + ".").encode(): r["value"].encode()
        for r in shown
        if r["type"] == "TXT" and "._domainkey." in r["name"]  # the DKIM keys, not SPF or DMARC
    }


def signed_with(pair: Pair, node: Stack, domain: str, published: dict[bytes, bytes]) -> str:
    """Send through `node` as `domain`; the selector of the (verified) RSA signature."""
    sender = f"app@{domain}"
    rcpt = f"signed-{uuid.uuid4().hex[:8]}@example.net"
    node.send((pair.account, pair.password), sender, [rcpt], simple_message(sender, rcpt))
    found = wait_for(lambda: pair.sink.find(rcpt), 30, what=f"delivery to {rcpt}")
    data = bytes(found[-1].data)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return published.get(name)

    assert dkim.verify(data, dnsfunc=lookup), data[:2000]
    match = re.search(rb"DKIM-Signature:.*?\bs=([a-z0-9-]+)", data, re.S | re.I)
    assert match
    return match.group(1).decode()


def signed_soon(
    pair: Pair, node: Stack, domain: str, published: dict[bytes, bytes], selector: str
) -> None:
    """Within seconds mail through `node` is signed with `selector` (records are re-read every
    2 s; a domain just added may need the account cache to catch up)."""

    def attempt() -> bool:
        try:
            return signed_with(pair, node, domain, published) == selector
        except smtplib.SMTPException:
            return False

    wait_for(attempt, 40, interval=0.5, what=f"mail for {domain} signed with s={selector}")


def test_rotate_key_on_b_reaches_a(pair: Pair) -> None:
    domain = f"rot.{pair.domain}"
    pair.a.txmail("domains", "add", domain, "--account", pair.account, "--force-sign")
    first = _records(pair.a, domain)
    (old_selector,) = (n.decode().split(".")[0] for n in first)
    signed_soon(pair, pair.a, domain, first, old_selector)
    shown = pair.b.txmail("domains", "rotate-key", domain, "--force").stdout
    assert "IN TXT" in shown
    second = _records(pair.b, domain)
    (new_selector,) = (n.decode().split(".")[0] for n in second)
    assert new_selector != old_selector
    # the old selector's record stays published (as `rotate-key` says) while nodes catch up
    both = {**first, **second}
    signed_soon(pair, pair.a, domain, both, new_selector)
    signed_soon(pair, pair.b, domain, both, new_selector)


def test_b_signs_with_the_key_a_published_after_a_is_gone(pair: Pair) -> None:
    domain = f"gone.{pair.domain}"
    pair.a.txmail("domains", "add", domain, "--account", pair.account, "--force-sign")
    published = _records(pair.a, domain)
    (selector,) = (n.decode().split(".")[0] for n in published)
    signed_soon(pair, pair.a, domain, published, selector)
    pair.a.stop()
    subprocess.run(
        ["postfix", "-c", str(pair.a.state / "postfix/etc"), "stop"],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(pair.a.state)
    assert not pair.a.state.exists()
    signed_soon(pair, pair.b, domain, published, selector)


def test_a_node_joined_while_redis_was_away_fetches_the_keys_when_it_starts(
    sink: Sink, redis_server: RedisServer
) -> None:
    """`txmail init --redis-url` with Redis away writes no key of its own; `txmail up`, with
    Redis back, fetches the installation's keys into 0600 caches and the node starts."""
    prefix = f"late{uuid.uuid4().hex[:8]}:"
    installation = redis_server.client()
    node = Stack(relay_port=sink.port, redis_url="redis://127.0.0.1:1/0", name="node-late")
    try:
        assert not any((node.state / "secrets" / name).exists() for name in SHARED_KEYS)
        node.configure("redis", url=redis_server.url, prefix=prefix).start()
        for name in SHARED_KEYS:
            path = node.state / "secrets" / name
            assert path.stat().st_mode & 0o777 == 0o600
            stored = installation.hget(f"{prefix}secret:{name.removesuffix('.key')}", "current")
            assert path.read_bytes().strip() == stored.encode()
    finally:
        node.close()
        installation.close()
