"""Attack: forging or replaying webhook posts to a customer's endpoint.

A customer's receiver must be able to tell txmail's posts from anybody else's, and to refuse an
old post replayed later. The posts are signed per Standard Webhooks: headers webhook-id,
webhook-timestamp and webhook-signature `v1,BASE64(HMAC-SHA256(secret, "ID.TIMESTAMP.BODY"))`,
the secret given to the customer as `whsec_BASE64`. Here a real post, delivered by the node's
dispatcher, is checked with an implementation of the scheme written from its description in
this file (not txmail's signing module), and the receiver example in README.md is run as
published: it accepts genuine posts and refuses a stale timestamp, a tampered body and another
account's signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_events import Account, receiver  # noqa: F401 - the fixture
from txmail_testing.harness import REPO, Stack, free_listening_port, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

README_TOLERANCE = 300  # seconds, as the README's example says


def standard_webhooks_valid(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    now: float,
    tolerance: float = README_TOLERANCE,
) -> bool:
    """Standard Webhooks verification, independent of txmail.webhooks.signing."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    content = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
    offered = [s.split(",", 1) for s in headers["webhook-signature"].split(" ")]
    return any(v == "v1" and hmac.compare_digest(sig.encode(), expected) for v, sig in offered)


def sign(secret: str, msg_id: str, stamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret[len("whsec_") :])
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def readme_receiver(secret: str, port: int) -> str:
    """The Python receiver of README.md, with the customer's secret and port filled in."""
    readme = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verified(" in b]
    assert len(blocks) == 1, "README.md should show one webhook receiver in Python"
    code = blocks[0]
    for placeholder in ('"whsec_..."', '("127.0.0.1", 8000)'):
        assert placeholder in code, f"the README example no longer has {placeholder}"
    return code.replace('"whsec_..."', json.dumps(secret)).replace(
        '("127.0.0.1", 8000)', f'("127.0.0.1", {port})'
    )


@pytest.fixture(scope="module")
def account(stack: Stack, receiver: WebhookReceiver) -> Account:  # noqa: F811
    return Account(stack, receiver)


@pytest.fixture(scope="module")
def secret(stack: Stack, account: Account) -> str:
    return stack.txmail("webhooks", "secret", account.name).stdout.strip()


@pytest.fixture(scope="module")
def delivered_post(account: Account) -> tuple[dict[str, str], bytes, float]:
    """A real post of the node's dispatcher: the delivery event of one message."""
    rcpt = f"hook-{account.name}@dest.example"
    event = account.wait("delivery", rcpt, account.send([rcpt]))
    return account.receiver.post_of(event["id"])


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, secret: str) -> Iterator[Any]:
    """The README's receiver running on a free port; yields (url, its output so far)."""
    port = free_listening_port()
    script = tmp_path_factory.mktemp("readme") / "receiver.py"
    script.write_text(readme_receiver(secret, port))
    output = script.with_suffix(".out")
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(script)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/hook"

    def up() -> bool:
        try:
            return (
                requests.post(
                    url,
                    data=b"{}",
                    timeout=2,
                    headers={
                        "webhook-id": "x",
                        "webhook-timestamp": "0",
                        "webhook-signature": "v1,x",
                    },
                ).status_code
                == 401
            )
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 20, what="the README's receiver")
        yield url, Path(output).read_text
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_delivered_post_verifies_per_standard_webhooks(
    secret: str, delivered_post: tuple[dict[str, str], bytes, float]
) -> None:
    headers, body, arrived = delivered_post
    assert headers["webhook-id"].startswith("msg_")
    assert abs(arrived - int(headers["webhook-timestamp"])) < README_TOLERANCE
    assert standard_webhooks_valid(secret, headers, body, now=arrived)
    assert not standard_webhooks_valid(secret, headers, body + b" ", now=arrived)
    assert not standard_webhooks_valid(
        secret, dict(headers, **{"webhook-id": "msg_other"}), body, now=arrived
    )


def test_each_account_has_its_own_secret(
    stack: Stack,
    secret: str,
    receiver: WebhookReceiver,  # noqa: F811
    delivered_post: tuple[dict[str, str], bytes, float],
) -> None:
    other = Account(stack, receiver)
    other_secret = stack.txmail("webhooks", "secret", other.name).stdout.strip()
    assert other_secret != secret
    headers, body, arrived = delivered_post
    assert not standard_webhooks_valid(other_secret, headers, body, now=arrived)


def test_the_readme_example_accepts_a_genuine_post(
    stack: Stack, account: Account, example: Any
) -> None:
    url, output = example
    stack.txmail("webhooks", "url", account.name, url)
    try:
        answer = stack.txmail("webhooks", "test", account.name).stdout
        assert "answered 204" in answer
        wait_for(lambda: "test" in output(), 10, what="the README receiver's output")
    finally:
        stack.txmail("webhooks", "url", account.name, account.receiver.url)


def test_the_readme_example_refuses_stale_tampered_and_foreign_posts(
    stack: Stack, secret: str, example: Any, delivered_post: tuple[dict[str, str], bytes, float]
) -> None:
    url, _ = example
    headers, body, _ = delivered_post
    now = int(time.time())

    def answer(headers: dict[str, str], body: bytes) -> int:
        return requests.post(url, data=body, headers=headers, timeout=10).status_code

    assert answer(sign(secret, headers["webhook-id"], now, body), body) == 204  # control
    stale = sign(secret, headers["webhook-id"], now - README_TOLERANCE - 60, body)
    assert answer(stale, body) == 401
    assert (
        answer(sign(secret, headers["webhook-id"], now + README_TOLERANCE + 60, body), body) == 401
    )
    tampered = body.replace(b'"delivery"', b'"bounce"')
    assert tampered != body
    assert answer(sign(secret, headers["webhook-id"], now, body), tampered) == 401
    foreign = "whsec_" + base64.b64encode(b"a key of somebody else, 32 bytes").decode()
    assert answer(sign(foreign, headers["webhook-id"], now, body), body) == 401
