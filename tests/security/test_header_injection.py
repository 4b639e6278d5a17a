"""Attack: smuggling headers or broken records in through tag, flag and class values.

Tags, flags and the delivery class arrive as control headers (X-CloudMTA-Tags, X-Mxm-Tag,
X-Mxm-Flags, X-CloudMTA-Class) or as the HTTP API's `tags`; txmail copies tags into the message
record, every event, the webhook JSON and per-tag counters. A value with CR or LF, a bare CR,
NUL, a tab, a Unicode line separator, a folded continuation that looks like a header, an encoded
word hiding CRLF, or a very long value must be refused with 554 5.6.0 (400 from the API) or
stored as the harmless text it is. Nothing of it reaches the delivered message's headers
(control headers never leave the relay), and the record and the events stay valid JSON with
the tags as sent.
"""

from __future__ import annotations

import contextlib
import email
import json
from typing import Any

import pytest

from tests.e2e.test_api import post_send
from tests.e2e.test_events import Account, receiver  # noqa: F401 - the fixture
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

MARK = "INJECTED"
REFUSED = "refused"
# (header, value as written in the message, REFUSED or what the record stores). Postfix
# itself turns a bare CR into a space, and a NUL ends the value the milter is given.
CASES: list[tuple[str, str, Any]] = [
    ("X-CloudMTA-Tags", f"a,\r\n X-Injected: {MARK}", {"tags": ["a", f"X-Injected: {MARK}"]}),
    ("X-CloudMTA-Tags", f"a\rX-Injected: {MARK}", {"tags": [f"a X-Injected: {MARK}"]}),
    ("X-CloudMTA-Tags", f"a\x00X-Injected: {MARK}", {"tags": ["a"]}),
    ("X-CloudMTA-Tags", f"a\t{MARK}", REFUSED),
    ("X-CloudMTA-Tags", f"a\u2028X-Injected: {MARK}", REFUSED),
    ("X-CloudMTA-Tags", f"a\x85{MARK}", REFUSED),
    ("X-CloudMTA-Tags", "x" * 900, REFUSED),
    ("X-Mxm-Tag", ",".join(f"t{i}" for i in range(11)), REFUSED),
    ("X-Mxm-Tag", 'café, 日本語, "quoted\\" tag"', {"tags": ["café", "日本語", '"quoted\\" tag"']}),
    (
        "X-Mxm-Tag",
        f"=?utf-8?q?a=0D=0AX-Injected:_{MARK}?=",
        {"tags": [f"=?utf-8?q?a=0D=0AX-Injected:_{MARK}?="]},
    ),  # never decoded into a CRLF
    ("X-Mxm-Flags", f"1\r\n X-Injected: {MARK}", REFUSED),
    ("X-Mxm-Flags", f"3\x00{MARK}", {"flags": "3"}),
    ("X-Mxm-Flags", "\uff13", REFUSED),  # a fullwidth digit three
    ("X-Mxm-Flags", "16", REFUSED),
    ("X-CloudMTA-Class", f"priority\r\n X-CloudMTA-Route: {MARK}", REFUSED),
    ("X-CloudMTA-Class", "bulk", REFUSED),
]


@pytest.fixture(scope="module")
def account(stack: Stack, receiver: WebhookReceiver) -> Account:  # noqa: F811
    return Account(stack, receiver)


@pytest.fixture(scope="module")
def api_key(stack: Stack, account: Account) -> str:
    return stack.txmail("accounts", "apikey", account.name).stdout.strip().splitlines()[-1]


def submit(account: Account, recipient: str, message: bytes) -> tuple[int, str]:
    with contextlib.closing(
        account.stack.client("submission", (account.name, account.password))
    ) as smtp:
        smtp.mail(account.sender)
        smtp.rcpt(recipient)
        code, text = smtp.data(message)
    return code, text.decode("utf-8", "replace")


def delivered_headers(sink: Sink, recipient: str) -> list[tuple[str, str]]:
    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    return list(email.message_from_bytes(bytes(found[0].data)).items())


@pytest.mark.parametrize("case", range(len(CASES)))
def test_control_header_values(stack: Stack, sink: Sink, account: Account, case: int) -> None:
    header, value, expected = CASES[case]
    recipient = f"inject{case}-{account.name}@dest.example"
    message = simple_message(account.sender, recipient, extra_headers={header: value})
    code, text = submit(account, recipient, message)
    if expected == REFUSED:
        assert (code, text[:6]) == (554, "5.6.0 "), text
        assert text.isprintable() and "; " in text  # one clean sentence saying what to do
        return
    assert code == 250, text

    queue_id = queue_id_of(text)
    for name, delivered_value in delivered_headers(sink, recipient):
        assert MARK not in name + delivered_value
        assert not name.lower().startswith(("x-cloudmta", "x-mxm")), name
    record = stack.redis().hgetall(f"txmail:{{{account.name}}}:message:{queue_id}")
    tags = expected.get("tags", [])
    assert json.loads(record["tags"]) == tags
    assert record.get("flags", "") == expected.get("flags", "")
    event = account.wait("delivery", recipient, queue_id)  # parsed from the webhook's JSON
    assert event["tags"] == tags
    shown = json.loads(stack.txmail("messages", "show", queue_id, "--json").stdout)
    assert shown["message"]["tags"] == tags


@pytest.mark.parametrize(
    ("tag", "status", "says"),
    [
        # what the milter would refuse: the same 422 and sentence as SMTP's 554 5.6.0
        ("a\r\nBcc: victim@example.net", 422, "printable characters"),
        ("a\nX-Injected: x", 422, "printable characters"),
        ("a\rb", 422, "printable characters"),
        ("a\x00b", 422, "printable characters"),
        ("a\tb", 422, "printable characters"),
        ("x" * 101, 422, "printable characters"),
        # what cannot be one tag of X-Mxm-Tag at all: bad input
        ("a,b", 400, "tags must be"),
        ("", 400, "tags must be"),
    ],
)
def test_api_tags_with_control_characters_are_refused(
    stack: Stack, account: Account, api_key: str, tag: str, status: int, says: str
) -> None:
    recipient = "api-inject@dest.example"
    answer = post_send(
        stack,
        api_key,
        {
            "envelope": account.sender,
            "recipients": [recipient],
            "tags": [tag],
            "mime": simple_message(account.sender, recipient).decode(),
        },
    )
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]


def test_api_tags_that_are_text_are_stored_as_sent(
    stack: Stack, sink: Sink, account: Account, api_key: str
) -> None:
    recipient = f"api-tags-{account.name}@dest.example"
    tags = ["café", "X-Injected: INJECTED", "日本語"]
    answer = post_send(
        stack,
        api_key,
        {
            "envelope": account.sender,
            "recipients": [recipient],
            "tags": tags,
            "mime": simple_message(account.sender, recipient).decode(),
        },
    )
    assert answer.status_code == 200, answer.text
    for name, value in delivered_headers(sink, recipient):
        assert MARK not in name + value
    event = account.wait("delivery", recipient, answer.json()["message_id"])
    assert event["tags"] == tags
