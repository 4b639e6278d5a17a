"""The HTTP send API against a real node: real HTTP requests, real Postfix, the real milter.

A send through the API is delivered under the same rules as one through SMTP: the same
refusal sentence and codes for a forbidden attachment or a foreign sender domain. schemathesis
explores the OpenAPI document and must never get a 5xx.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e

DOMAIN = "api.test"
ATTACHMENTS = Path(__file__).resolve().parents[1] / "data" / "attachments"


@pytest.fixture(scope="module")
def account(stack: Stack) -> dict[str, str]:
    name = "apiuser"
    password = stack.add_account(
        name,
        DOMAIN,
        settings=[
            "warmup=false",
            "messages_per_minute=0",
            "recipients_per_minute=0",
            "messages_per_hour=0",
            "recipients_per_hour=0",
        ],
    )
    output = stack.txmail("accounts", "apikey", name).stdout.strip().splitlines()
    return {"name": name, "password": password, "key": output[-1]}


def base(stack: Stack) -> str:
    return f"http://127.0.0.1:{8080 + stack.offset}"


def post_send(stack: Stack, key: str, body: dict) -> requests.Response:
    return requests.post(
        f"{base(stack)}/v1/send", json=body, timeout=60, headers={"Authorization": f"Bearer {key}"}
    )


def test_a_send_through_the_api_is_delivered_and_recorded(
    stack: Stack, sink: Sink, account: dict[str, str]
) -> None:
    recipient = "api-reader@example.net"
    mime = simple_message(f"app@{DOMAIN}", recipient, subject="via api").decode()
    answer = post_send(
        stack,
        account["key"],
        {
            "envelope": f"app@{DOMAIN}",
            "recipients": [recipient],
            "mime": mime,
            "dsn": {"notify": "FAILURE,DELAY", "ret": "HDRS", "envid": "order-7"},
            "tags": ["password-reset"],
        },
    )
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["message_id"]
    delivered = wait_for(lambda: sink.find(recipient), 30, what="delivery of the API send")
    assert b"Subject: via api" in delivered[-1].data
    assert delivered[-1].sender.startswith("bounces+")  # the milter's bounce address
    record = requests.get(
        f"{base(stack)}/v1/messages/{message_id}",
        timeout=10,
        headers={"Authorization": f"Bearer {account['key']}"},
    )
    assert record.status_code == 200
    assert record.json()["recipients"] == [recipient]
    assert record.json()["tags"] == ["password-reset"]
    params = stack.redis().hget(
        f"txmail:{{{account['name']}}}:message:{message_id}", "envelope_params"
    )
    assert json.loads(params) == ["RET=HDRS", "ENVID=order-7"]


def smtp_refusal(
    stack: Stack, account: dict[str, str], sender: str, message: bytes
) -> tuple[int, str]:
    with contextlib.closing(
        stack.client("submission", (account["name"], account["password"]))
    ) as smtp:
        code, reply = smtp.mail(sender)
        if code >= 400:
            return code, reply.decode()
        code, reply = smtp.rcpt("x@example.net")
        if code >= 400:
            return code, reply.decode()
        try:
            code, reply = smtp.data(message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        if code >= 400:
            return code, reply.decode()
    raise AssertionError("SMTP accepted what it should refuse")


def api_refusal(
    stack: Stack, account: dict[str, str], sender: str, message: bytes
) -> requests.Response:
    return post_send(
        stack,
        account["key"],
        {"envelope": sender, "recipients": ["x@example.net"], "mime": message.decode()},
    )


def test_a_forbidden_attachment_gets_the_smtp_sentence(
    stack: Stack, account: dict[str, str]
) -> None:
    message = (
        (ATTACHMENTS / "plain-exe.eml")
        .read_bytes()
        .replace(b"app@acme.example", f"app@{DOMAIN}".encode())
    )
    code, text = smtp_refusal(stack, account, f"app@{DOMAIN}", message)
    answer = api_refusal(stack, account, f"app@{DOMAIN}", message)
    error = answer.json()["error"]
    assert answer.status_code == 403
    assert (error["smtp_code"], f"{error['status']} {error['message']}") == (
        code,
        " ".join(text.split()),
    )
    assert "setup.exe" in error["message"]


def test_keys_are_required_and_bad_input_is_a_clear_4xx(
    stack: Stack, account: dict[str, str]
) -> None:
    for headers in ({}, {"Authorization": "Bearer txm_nope_nope"}, {"Authorization": "Basic x"}):
        answer = requests.get(f"{base(stack)}/v1/events", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.json()["error"]["status"] == "5.7.8"
    auth = {"Authorization": f"Bearer {account['key']}"}
    for body in (
        b"not json",
        b"[]",
        b'{"mime": ""}',
        b'{"mime": "x", "recipients": []}',
        b'{"mime": "x", "recipient": "no-at-sign"}',
        b'{"mime": "x", "bogus": 1}',
        b'{"mime": "x", "recipient": "a@b.test", "dsn": {"notify": "SOMETIMES"}}',
    ):
        answer = requests.post(f"{base(stack)}/v1/send", data=body, headers=auth, timeout=10)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["message"]
    assert (
        requests.get(
            f"{base(stack)}/v1/messages/NOSUCHMESSAGE1", headers=auth, timeout=10
        ).status_code
        == 404
    )


def test_suppressions_round_trip(stack: Stack, account: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {account['key']}"}
    url = f"{base(stack)}/v1/suppressions"
    added = requests.post(
        url, json={"recipient": "Gone@Example.net", "reason": "asked"}, headers=auth, timeout=10
    )
    assert added.status_code == 201 and added.json()["suppression"]["list"] == "unsubscribe"
    listed = requests.get(url, headers=auth, timeout=10).json()["suppressions"]
    assert [e["recipient"] for e in listed] == ["gone@example.net"]
    removed = requests.delete(
        url, params={"recipient": "gone@example.net"}, headers=auth, timeout=10
    )
    assert removed.json() == {"removed": True}
    assert requests.get(url, headers=auth, timeout=10).json()["suppressions"] == []


def test_stats_and_metrics(stack: Stack, account: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {account['key']}"}
    stats = requests.get(
        f"{base(stack)}/v1/stats", params={"days": 2}, headers=auth, timeout=10
    ).json()
    assert len(stats["days"]) == 2
    metrics = requests.get(f"{base(stack)}/metrics", timeout=10)
    assert metrics.status_code == 200
    text = metrics.text
    assert 'txmail_up{scope="node"} 1.0' in text
    assert 'txmail_messages_accepted_total{scope="installation"}' in text
    assert 'txmail_postfix_queue_messages{queue="deferred",scope="node"}' in text
    for family in (
        "txmail_messages_refused",
        "txmail_events_today",
        "txmail_webhook_backlog_events",
        "txmail_webhook_dead_letters",
    ):
        assert f"# HELP {family}" in text
    # The API's sends went through policyd, which writes its counts every second.
    wait_for(
        lambda: (
            'txmail_policy_decisions_total{outcome="dunno",scope="installation"}'
            in requests.get(f"{base(stack)}/metrics", timeout=10).text
        ),
        15,
        what="policy decisions in /metrics",
    )


def test_openapi_document_and_schemathesis_find_no_5xx(
    stack: Stack, account: dict[str, str], tmp_path: Path
) -> None:
    document = requests.get(f"{base(stack)}/v1/openapi.json", timeout=10).json()
    assert set(document["paths"]) == {
        "/v1/send",
        "/v1/messages/{message_id}",
        "/v1/events",
        "/v1/suppressions",
        "/v1/stats",
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base(stack)}/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "6",
            "--request-timeout",
            "60",
            "--header",
            f"Authorization: Bearer {account['key']}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# -- the API agrees with SMTP (issue 18) --------------------------------------------------------

OTHER_DOMAIN = "api-other.test"


@pytest.fixture(scope="module")
def other_account(stack: Stack) -> dict[str, str]:
    name = "apiother"
    password = stack.add_account(name, OTHER_DOMAIN)
    output = stack.txmail("accounts", "apikey", name).stdout.strip().splitlines()
    return {"name": name, "password": password, "key": output[-1]}


def auth_of(account: dict[str, str], **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {account['key']}", **more}


def test_too_many_recipients_is_a_422_naming_the_limit(
    stack: Stack, account: dict[str, str]
) -> None:
    # the account has the default max_recipients, 20
    recipients = [f"many{n}@example.net" for n in range(21)]
    mime = simple_message(f"app@{DOMAIN}", recipients[0], subject="too many").decode()
    answer = post_send(
        stack, account["key"], {"envelope": f"app@{DOMAIN}", "recipients": recipients, "mime": mime}
    )
    assert answer.status_code == 422, answer.text
    assert "Retry-After" not in answer.headers
    error = answer.json()["error"]
    assert (error["smtp_code"], error["status"]) == (552, "5.5.3")
    assert "21" in error["message"] and "at most 20" in error["message"]


@pytest.mark.parametrize(
    "tags",
    [[f"tag{n}" for n in range(11)], ["t" * 65]],
    ids=["eleven-tags", "a-65-character-tag"],
)
def test_tag_limits_are_the_milters_with_its_sentence(
    stack: Stack, account: dict[str, str], tags: list[str]
) -> None:
    sender = f"app@{DOMAIN}"
    tagged = simple_message(sender, "x@example.net", extra_headers={"X-Mxm-Tag": ",".join(tags)})
    code, text = smtp_refusal(stack, account, sender, tagged)
    answer = post_send(
        stack,
        account["key"],
        {
            "envelope": sender,
            "recipients": ["x@example.net"],
            "mime": simple_message(sender, "x@example.net").decode(),
            "tags": tags,
        },
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["smtp_code"], f"{error['status']} {error['message']}") == (
        code,
        " ".join(text.split()),
    )


def test_an_old_messages_events_are_found_after_many_newer_ones(
    stack: Stack, sink: Sink, account: dict[str, str], other_account: dict[str, str]
) -> None:
    from txmail.events import Recorder, make_event
    from txmail.store import Keys

    recipient = "old-message@example.net"
    mime = simple_message(f"app@{DOMAIN}", recipient, subject="old message").decode()
    answer = post_send(
        stack,
        account["key"],
        {"envelope": f"app@{DOMAIN}", "recipients": [recipient], "mime": mime, "tags": ["old"]},
    )
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["message_id"]
    url = f"{base(stack)}/v1/messages/{message_id}"

    def delivery() -> list[dict]:
        found = requests.get(url, headers=auth_of(account), timeout=10).json()["events"]
        return [e for e in found if e["kind"] == "delivery"]

    first = wait_for(delivery, 30, what="the delivery event of the API send")
    # More than the 5,000 newest events the handler used to scan, written by the recorder
    # every daemon uses, for other messages of the same account.
    client = stack.redis()
    newer = [
        make_event("delivery", account["name"], f"NEWER{n:07d}", f"r{n}@example.net")
        for n in range(5200)
    ]
    Recorder(client, Keys("txmail:")).record_many(newer)
    assert client.xlen(f"txmail:{{{account['name']}}}:events") > 5200
    record = requests.get(url, headers=auth_of(account), timeout=10)
    assert record.status_code == 200
    assert [e for e in record.json()["events"] if e["kind"] == "delivery"] == first
    assert first[0]["recipient"] == recipient and first[0]["tags"] == ["old"]
    assert record.json()["events_unlisted"] == 0

    # Another account's message is as unknown as a missing one: the same 404.
    theirs = requests.get(url, headers=auth_of(other_account), timeout=10)
    missing = requests.get(
        f"{base(stack)}/v1/messages/NOSUCHMESSAGE1", headers=auth_of(other_account), timeout=10
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"] == missing.json()["error"]["message"].replace(
        "NOSUCHMESSAGE1", message_id
    )


def at_sink_once(sink: Sink, stack: Stack, account: dict[str, str], recipient: str, subject: str):
    """How many messages with `subject` reached `recipient`, asked after a later message to the
    same recipient arrived (so a second copy sent before it had its chance to arrive too)."""
    sentinel = simple_message(f"app@{DOMAIN}", recipient, subject="sentinel").decode()
    answer = post_send(
        stack,
        account["key"],
        {"envelope": f"app@{DOMAIN}", "recipients": [recipient], "mime": sentinel},
    )
    assert answer.status_code == 200, answer.text
    wait_for(
        lambda: any(b"Subject: sentinel" in m.data for m in sink.find(recipient)),
        30,
        what="the sentinel at the sink",
    )
    return sum(f"Subject: {subject}".encode() in m.data for m in sink.find(recipient))


def test_an_idempotency_key_sends_once_and_answers_the_same(
    stack: Stack, sink: Sink, account: dict[str, str]
) -> None:
    recipient = "idempotent@example.net"
    body = {
        "envelope": f"app@{DOMAIN}",
        "recipients": [recipient],
        "mime": simple_message(f"app@{DOMAIN}", recipient, subject="sent once").decode(),
    }
    headers = auth_of(account, **{"Idempotency-Key": "order-1842/confirmation"})
    url = f"{base(stack)}/v1/send"
    first = requests.post(url, json=body, headers=headers, timeout=60)
    again = requests.post(url, json=body, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    assert (again.status_code, again.json()) == (200, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    changed = requests.post(url, json={**body, "tags": ["x"]}, headers=headers, timeout=60)
    assert changed.status_code == 422
    assert "different request" in changed.json()["error"]["message"]

    malformed = requests.post(
        url, json=body, headers=auth_of(account, **{"Idempotency-Key": "two words"}), timeout=60
    )
    assert malformed.status_code == 400
    assert "Idempotency-Key" in malformed.json()["error"]["message"]

    wait_for(lambda: sink.find(recipient), 30, what="the idempotent send at the sink")
    assert at_sink_once(sink, stack, account, recipient, "sent once") == 1


def test_concurrent_requests_with_one_idempotency_key_send_once(
    stack: Stack, sink: Sink, account: dict[str, str]
) -> None:
    recipient = "idempotent-race@example.net"
    body = {
        "envelope": f"app@{DOMAIN}",
        "recipients": [recipient],
        "mime": simple_message(f"app@{DOMAIN}", recipient, subject="raced once").decode(),
    }
    headers = auth_of(account, **{"Idempotency-Key": "3f1c2b9e-7d1a-4c55-9a0e-0b6f9b1c2d3e"})
    start = threading.Barrier(4)

    def post() -> requests.Response:
        start.wait()
        return requests.post(f"{base(stack)}/v1/send", json=body, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(), range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 409} and 200 in statuses, [a.text for a in answers]
    assert len({a.json()["message_id"] for a in answers if a.status_code == 200}) == 1
    for busy in (a for a in answers if a.status_code == 409):
        assert busy.headers["Retry-After"] and "still being sent" in busy.json()["error"]["message"]
    wait_for(lambda: sink.find(recipient), 30, what="the raced send at the sink")
    assert at_sink_once(sink, stack, account, recipient, "raced once") == 1
