"""Analytics by tag end to end (issue 18; CloudMailin's x-cloudmta-tags and Maxemail's X-Mxm-Tag
"allowing filtering of reports by one or more tags"): messages with different tags go through
the real Postfix and milter over SMTP, the sink delivers some recipients and refuses others,
and then `GET /v1/stats?tag=`, `txmail stats --tag`, `GET /v1/events?tag=` and `txmail events
tail --tag` show each tag's messages and outcomes, and another account's tag of the same name
is neither counted nor visible.
"""

from __future__ import annotations

import json
import time
import uuid
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


class Account:
    def __init__(self, stack: Stack) -> None:
        self.name = f"tag{uuid.uuid4().hex[:8]}"
        self.sender = f"app@{self.name}.example"
        self.password = stack.add_account(self.name, f"{self.name}.example", settings=NO_LIMITS)
        self.key = stack.txmail("accounts", "apikey", self.name).stdout.strip().splitlines()[-1]
        self.stack = stack

    def send(self, recipients: list[str], **headers: str) -> str:
        return self.stack.send(
            (self.name, self.password),
            self.sender,
            recipients,
            simple_message(self.sender, recipients[0], extra_headers=headers or None),
        )

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(
            f"http://127.0.0.1:{8080 + self.stack.offset}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )

    def totals(self, tag: str) -> dict[str, int]:
        # two days, so a test that runs across midnight UTC still sees every count
        answer = self.get("/v1/stats", tag=tag, days=2)
        assert answer.status_code == 200, answer.text
        return answer.json()["totals"]  # type: ignore[no-any-return]

    def events(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.get("/v1/events", limit=1000, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()["events"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sent(stack: Stack, sink: Sink) -> dict[str, Any]:
    """Two accounts' tagged mail, sent over SMTP and waited for until every outcome is in."""
    acme, other = Account(stack), Account(stack)
    local = acme.name
    order_one = acme.send(
        [f"ok1-{local}@example.net", f"reject-{local}@example.net"], **{"X-Mxm-Tag": "order"}
    )
    order_two = acme.send([f"ok2-{local}@example.net"], **{"X-CloudMTA-Tags": "receipt, order"})
    untagged = acme.send([f"ok3-{local}@example.net"])
    theirs = other.send([f"ok4-{local}@example.net"], **{"X-Mxm-Tag": "order"})
    expected = {"accepted": 2, "delivery": 2, "bounce": 1}
    wait_for(lambda: acme.totals("order") == expected, 60, what="the order tag's outcomes")
    wait_for(
        lambda: other.totals("order") == {"accepted": 1, "delivery": 1},
        60,
        what="the other account's outcomes",
    )
    wait_for(
        lambda: acme.get("/v1/stats", days=2).json()["totals"].get("delivery") == 3,
        60,
        what="the untagged delivery",
    )
    return {
        "acme": acme,
        "other": other,
        "order": {order_one, order_two},
        "receipt": {order_two},
        "untagged": untagged,
        "theirs": theirs,
    }


def test_stats_by_tag_count_accepted_messages_and_outcomes_per_day(sent: dict[str, Any]) -> None:
    acme = sent["acme"]
    assert acme.totals("order") == {"accepted": 2, "delivery": 2, "bounce": 1}
    assert acme.totals("receipt") == {"accepted": 1, "delivery": 1}
    assert acme.totals("nothing-like-it") == {}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    one_day = acme.get("/v1/stats", tag="order", since=today)
    assert one_day.status_code == 200
    body = one_day.json()
    assert body["tag"] == "order" and [d["date"] for d in body["days"]] == [today]
    if body["days"][0]["counts"]:  # empty only if the day turned since the mail was sent
        assert body["days"][0]["counts"] == body["totals"]
    whole = acme.get("/v1/stats", days=2).json()
    assert whole["totals"] == {"accepted": 3, "delivery": 3, "bounce": 1}
    assert whole["tags"] == {
        "order": {"accepted": 2, "delivery": 2, "bounce": 1},
        "receipt": {"accepted": 1, "delivery": 1},
    }


def test_another_accounts_tag_of_the_same_name_is_its_own(sent: dict[str, Any]) -> None:
    other = sent["other"]
    assert other.totals("order") == {"accepted": 1, "delivery": 1}
    assert {e["message_id"] for e in other.events(tag="order")} == {sent["theirs"]}
    assert sent["theirs"] not in {e["message_id"] for e in sent["acme"].events()}


def test_events_filtered_by_tag(sent: dict[str, Any]) -> None:
    acme = sent["acme"]
    order = acme.events(tag="order")
    assert {e["message_id"] for e in order} == sent["order"]
    assert sorted(e["kind"] for e in order) == ["bounce", "delivery", "delivery"]
    assert all("order" in e["tags"] for e in order)
    assert {e["message_id"] for e in acme.events(tag="receipt")} == sent["receipt"]
    assert [e["kind"] for e in acme.events(tag="order", kind="bounce")] == ["bounce"]
    assert acme.events(tag="nothing-like-it") == []


def test_cli_stats_and_events_tail_by_tag(stack: Stack, sent: dict[str, Any]) -> None:
    acme, other = sent["acme"], sent["other"]
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    rows = json.loads(
        stack.txmail("stats", "--tag", "order", "--since", yesterday, "--json").stdout
    )
    by_account = {r["account"]: r for r in rows}
    assert by_account[acme.name]["totals"] == {"accepted": 2, "delivery": 2, "bounce": 1}
    assert by_account[other.name]["totals"] == {"accepted": 1, "delivery": 1}
    assert by_account[acme.name]["since"] == yesterday
    assert len(by_account[acme.name]["days"]) == 2
    table = stack.txmail("stats", "--tag", "receipt", "--account", acme.name).stdout
    assert table.splitlines()[-1].split() == ["total", "1", "1"]
    tail = stack.txmail(
        "events", "tail", "--account", acme.name, "--tag", "receipt", "--json"
    ).stdout
    assert {json.loads(line)["message_id"] for line in tail.splitlines()} == sent["receipt"]


def test_bad_tag_and_since_are_a_clear_400(sent: dict[str, Any]) -> None:
    acme = sent["acme"]
    for path, params in (
        ("/v1/stats", {"since": "last week"}),
        ("/v1/stats", {"since": "2999-01-01"}),
        ("/v1/stats", {"since": "2000-01-01"}),
        ("/v1/stats", {"since": "2026-01-01", "days": "3"}),
        ("/v1/stats", {"tag": ""}),
        ("/v1/events", {"tag": "a,b"}),
        ("/v1/events", {"tag": "x" * 65}),
    ):
        answer = acme.get(path, **params)
        assert answer.status_code == 400, (path, params, answer.text)
        error = answer.json()["error"]
        assert error["status"] == "5.5.4" and error["message"], (path, params)
