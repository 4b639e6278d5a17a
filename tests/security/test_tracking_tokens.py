"""Attack: tampering with tracking tokens.

Tracked links and open pixels carry a signed token (txmail/tokens/links.py). Someone holding a
genuine link must not be able to make the tracker redirect elsewhere (an open redirect on the
customer's tracking domain), nor record opens and clicks for messages they invent: a token that
was cut, had one character changed, was signed with any other key (another of the node's own
secrets included), or is used as the other kind (an open as a click) is answered 404 with a
JSON error, and never redirects. A genuine token's target cannot be changed from the query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.test_tracker import delivered_html, html_message, target, tracker_url  # noqa: F401
from txmail import config
from txmail.tokens.links import LinkSigner, Mark
from txmail_testing.harness import Sink, Stack

pytestmark = pytest.mark.e2e

DOMAIN = "trksec.example"


@pytest.fixture(scope="module")
def html(stack: Stack, sink: Sink, target: str) -> Iterator[str]:  # noqa: F811
    """The HTML part of a tracked message as delivered."""
    password = stack.add_account(
        "trksec", DOMAIN, settings=["track_opens=true", "track_clicks=true", "warmup=false"]
    )
    recipient = "reader@trksec-dest.example"
    stack.send(
        ("trksec", password),
        f"shop@{DOMAIN}",
        [recipient],
        html_message(f"shop@{DOMAIN}", recipient, target),
    )
    yield delivered_html(sink, recipient)


def tokens(html: str) -> dict[str, str]:
    """{"c": a click token, "o": the open token} of a delivered message."""
    found = dict(re.findall(r"/([co])/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", html))
    assert set(found) == {"c", "o"}, html
    return found


def get(stack: Stack, path: str) -> requests.Response:
    return requests.get(tracker_url(stack) + path, allow_redirects=False, timeout=10)


def refused(answer: requests.Response) -> bool:
    return (
        answer.status_code == 404
        and "Location" not in answer.headers
        and bool(answer.json()["error"]["message"])
    )


def test_cut_or_changed_tokens_are_404(stack: Stack, html: str) -> None:
    payload, mac = tokens(html)["c"].split(".")
    flipped = "A" if payload[5] != "A" else "B"
    for bad in (
        f"/c/{payload[:5]}{flipped}{payload[6:]}.{mac}",
        f"/c/{payload}.{mac[:-2]}xx",
        f"/c/{payload}",
        f"/c/.{mac}",
        "/c/",
        "/c/x.y",
        f"/c/{payload}.{mac}.{mac}",
        f"/c/{payload[:-4]}.{mac}",
        f"/c/{'A' * 7000}.{mac}",
        "/c/%00.%0d%0a",
        f"/c/{payload}.{mac}%0d%0aLocation:%20https://evil.example/",
    ):
        assert refused(get(stack, bad)), bad[:80]
    # longer than an HTTP request line may be: the server's parser refuses it first
    answer = get(stack, f"/c/{'A' * 9000}.{mac}")
    assert answer.status_code in (400, 404, 414) and "Location" not in answer.headers


def test_a_token_is_only_good_for_its_own_kind(stack: Stack, html: str) -> None:
    found = tokens(html)
    assert refused(get(stack, f"/c/{found['o']}"))
    assert get(stack, f"/o/{found['c']}.gif").status_code == 404
    assert get(stack, f"/o/{found['o']}.gif").status_code == 200


def test_tokens_signed_with_any_other_key_are_404(stack: Stack) -> None:
    """Including the node's bounce and webhook keys: each secret signs one thing only."""
    settings = config.load(stack.config)
    mark = Mark(
        "click",
        "trksec",
        "4jXCs06YbRzJJ2Y",
        "reader@trksec-dest.example",
        0,
        "https://evil.example/",
        int(time.time()),
    )
    for key in (
        settings.read_secret("bounce_key_file"),
        settings.read_secret("webhook_key_file"),
        b"a key an attacker made up, 32 b.",
    ):
        assert refused(get(stack, f"/c/{LinkSigner(key).sign(mark)}"))
    genuine = LinkSigner(settings.read_secret("tracking_key_file")).sign(mark)
    assert get(stack, f"/c/{genuine}").status_code == 302  # the control: only the key signs


def test_the_query_cannot_change_where_a_genuine_link_goes(
    stack: Stack,
    html: str,
    target: str,  # noqa: F811
) -> None:
    token = tokens(html)["c"]
    for query in ("?url=https://evil.example/", "?u=//evil.example", "?next=https:evil.example"):
        answer = get(stack, f"/c/{token}{query}")
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith(f"{target}/order?id=7")
        assert "evil" not in answer.headers["Location"]
