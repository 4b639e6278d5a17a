"""The console in a real browser (issue 22): Debian's headless chromium, driven through selenium
(txmail_testing/browser.py), against one node of this module's own with real traffic through
Postfix (Traffic.make: delivered, bounced, deferred, tagged, opened and clicked mail, and dead
letters of a webhook endpoint that answered 410 Gone).

Every page visited is saved as a screenshot into the test's output folder (pytest's tmp_path,
or $TXMAIL_SCREENSHOTS); with TXMAIL_README_SCREENSHOTS=1 the overview and a timeline are also
written to docs/ for the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.browser import Browser, Traffic
from txmail_testing.harness import Sink, Stack
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(sink: Sink) -> Iterator[Stack]:
    stack = Stack(relay_port=sink.port, name="console")
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def traffic(node: Stack, sink: Sink, receiver: WebhookReceiver) -> Traffic:
    return Traffic.make(node, sink, receiver)


@pytest.fixture
def browser(traffic: Traffic, tmp_path: Path) -> Iterator[Browser]:
    made = Browser(tmp_path, traffic.console).start()
    yield made
    made.close()


def test_chromium_opens_the_tracker_of_a_node_with_traffic(
    browser: Browser, traffic: Traffic
) -> None:
    browser.get(f"{traffic.api}/healthz")
    assert "ok" in browser.text()
    assert browser.shot("healthz").stat().st_size > 0
