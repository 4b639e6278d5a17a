"""The milter's sending rules end to end: real Postfix, Dovecot, Redis and the milter, a real SMTP
client, and the sink standing in for the internet. Each test asserts the reply the client sees
and what arrives at the sink (envelope and headers)."""

from __future__ import annotations

import email
import email.message
import json

import dkim
import pytest

from txmail.store import Keys
from txmail.store.suppressions import Suppressions
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for

pytestmark = pytest.mark.e2e

Login = tuple[str, str]


@pytest.fixture(scope="module")
def multi(stack: Stack) -> Login:
    return "rules", stack.add_account(
        "rules", "rules.example", "second.example", settings=["max_message_size=40000"]
    )


@pytest.fixture(scope="module")
def single(stack: Stack) -> Login:
    password = stack.add_account("maxe", "maxe.example", settings=["recipient_mode=single"])
    # Set up signing before the first message: the signer caches "no key" for a while.
    stack.txmail(
        "domains",
        "add",
        "maxe.example",
        "--account",
        "maxe",
        "--selector",
        "e2e",
        "--force-sign",
        "--no-return-path",
    )
    return "maxe", password


def submit(
    stack: Stack,
    login: Login,
    sender: str,
    recipients: list[str],
    message: bytes,
    mail_options: tuple[str, ...] = (),
) -> tuple[int, str, dict[str, tuple[int, bytes]]]:
    """One transaction; returns the final (code, text) and each RCPT's reply. A refused MAIL
    FROM or a transaction without any accepted recipient returns that reply instead."""
    with stack.client("submission", login) as smtp:
        code, text = smtp.mail(sender, list(mail_options))
        if code >= 400:
            return code, text.decode(), {}
        replies = {r: smtp.rcpt(r) for r in recipients}
        if not any(c < 400 for c, _ in replies.values()):
            return 0, "", replies
        code, text = smtp.data(message)
    return code, text.decode(), replies


def at_sink(sink: Sink, recipient: str) -> tuple[email.message.Message, object]:
    wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    captured = sink.find(recipient)[0]
    return email.message_from_bytes(bytes(captured.data)), captured


def record(stack: Stack, account: str, queue_id: str) -> dict[str, str]:
    return stack.redis().hgetall(f"txmail:{{{account}}}:message:{queue_id}")


# -- 2. recipients ---------------------------------------------------------------------------


def test_too_many_recipients(stack: Stack, sink: Sink, multi: Login) -> None:
    recipients = [f"many{i}@example.net" for i in range(22)]
    code, _, replies = submit(
        stack,
        multi,
        "app@rules.example",
        recipients,
        simple_message("app@rules.example", recipients[0]),
    )
    assert code == 250
    assert [r for r, (c, _) in replies.items() if c == 250] == recipients[:20]
    for recipient in recipients[20:]:
        c, text = replies[recipient]
        assert c == 452
        assert text == (b"4.5.3 Too many recipients (maximum 20); send the rest in another message")
    _, captured = at_sink(sink, recipients[0])
    wait_for(lambda: all(sink.find(r) for r in recipients[:20]), 30, what="20 deliveries")
    assert not any(sink.find(r) for r in recipients[20:])


# -- 3. size ---------------------------------------------------------------------------------


def test_account_size_limit(stack: Stack, multi: Login) -> None:
    body = ("y" * 998 + "\r\n") * 50
    message = simple_message("app@rules.example", "big@example.net", body=body)
    code, text, _ = submit(stack, multi, "app@rules.example", ["big@example.net"], message)
    assert code == 552 and text.startswith("5.3.4 Message too big for this account")
    code, text, _ = submit(
        stack, multi, "app@rules.example", ["big@example.net"], b"", mail_options=("SIZE=100000",)
    )
    assert code == 552 and text.startswith("5.3.4")  # refused at MAIL FROM already


def test_lines_over_998_characters_are_refused(stack: Stack, multi: Login, sink: Sink) -> None:
    """Postfix would fold such a line after DKIM signing and break the signature."""
    body = "short line\r\n" + "w" * 1260 + "\r\n"
    message = simple_message("app@rules.example", "longline@example.net", body=body)
    code, text, _ = submit(stack, multi, "app@rules.example", ["longline@example.net"], message)
    assert code == 554 and text.startswith("5.6.0 Line 2 of the message body is longer than 998")
    assert not sink.find("longline@example.net")


def test_postfix_limit_covers_account_limits(stack: Stack) -> None:
    result = stack.txmail("accounts", "set", "rules", "max_message_size=999999999", check=False)
    assert result.returncode == 2
    assert "postfix.message_size_limit" in result.stderr


# -- 6. tags, 7. flags, 12. control headers --------------------------------------------------


def test_tags_flags_and_control_headers(stack: Stack, sink: Sink, multi: Login) -> None:
    recipient = "tagged@example.net"
    message = simple_message(
        "app@rules.example",
        recipient,
        extra_headers={
            "X-CloudMTA-Tags": "password-reset, account",
            "X-Mxm-Tag": "account,web",
            "X-Mxm-Flags": "3",
            "X-CloudMTA-Route": "priority",
            "X-Mxm-Campaign": "c1",
        },
    )
    code, text, _ = submit(stack, multi, "app@rules.example", [recipient], message)
    assert code == 250, text
    delivered, _ = at_sink(sink, recipient)
    assert not [k for k in delivered.keys() if k.lower().startswith(("x-cloudmta", "x-mxm"))]
    saved = record(stack, "rules", queue_id_of(text))
    assert json.loads(saved["tags"]) == ["password-reset", "account", "web"]
    assert saved["flags"] == "3"
    assert saved["message_class"] == "standard"  # a forged routing header routes nothing
    counts = stack.redis().hgetall("txmail:{rules}:tags")
    assert counts["account"] >= "1" and counts["web"] >= "1"


# -- 8. single-recipient mode ----------------------------------------------------------------


def test_single_recipient_mode(stack: Stack, sink: Sink, single: Login) -> None:
    to, bcc, dropped = "one@example.net", "copy@example.net", "dropped@example.net"
    message = simple_message(
        "Oxford Stones <newsletters@maxe.example>",
        to,
        extra_headers={"Cc": "cc@example.net", "To": f"{to}, other@example.net"},
    )
    code, text, _ = submit(stack, single, "outgoing@maxe.example", [bcc, to, dropped], message)
    assert code == 250, text
    delivered, captured = at_sink(sink, to)
    # The BCC recipient gets the same message in a queue file of its own, so that its bounce
    # address vouches for it alone (issue 15).
    assert captured.recipients == [to]  # type: ignore[attr-defined]
    copy, copied = at_sink(sink, bcc)
    assert copied.recipients == [bcc]  # type: ignore[attr-defined]
    for message in (delivered, copy):
        assert message["From"] == "Oxford Stones <outgoing@maxe.example>"
        assert message["To"] == to and message["Cc"] is None
    assert not sink.find(dropped)
    queue_id = queue_id_of(text)
    events = [
        json.loads(fields["event"]) for _, fields in stack.redis().xrange("txmail:{maxe}:events")
    ]
    # The maillog follower adds `delivery` events for the same message as the sink accepts it.
    mine = [e for e in events if e["message_id"] == queue_id and e["kind"] == "blocked"]
    assert [(e["kind"], e["recipient"], e["details"]["reason"]) for e in mine] == [
        ("blocked", dropped, "discarded")
    ]
    assert record(stack, "maxe", queue_id)["bcc"] == bcc


def test_single_recipient_to_must_be_a_recipient(stack: Stack, single: Login) -> None:
    message = simple_message("newsletters@maxe.example", "someone@example.net")
    code, text, _ = submit(stack, single, "outgoing@maxe.example", ["else@example.net"], message)
    assert code == 550 and text.startswith("5.7.1 The To header address someone@example.net")


# -- 9. suppressions -------------------------------------------------------------------------


def test_suppressed_recipients(stack: Stack, sink: Sink, multi: Login) -> None:
    lists = Suppressions(stack.redis(), Keys())
    lists.add("rules", "bounce", "gone@example.net", "userunknown")
    lists.add("rules", "unsubscribe", "optout@example.net", "list-unsubscribe")
    keep = "kept@example.net"
    message = simple_message("app@rules.example", keep, extra_headers={"X-Mxm-Flags": "4"})
    code, text, _ = submit(
        stack, multi, "app@rules.example", ["gone@example.net", keep, "optout@example.net"], message
    )
    assert code == 250, text
    _, captured = at_sink(sink, keep)
    assert captured.recipients == [keep]  # type: ignore[attr-defined]
    events = [json.loads(f["event"]) for _, f in stack.redis().xrange("txmail:{rules}:events")]
    mine = {e["recipient"]: e["details"] for e in events if e["message_id"] == queue_id_of(text)}
    assert mine["gone@example.net"]["list"] == "bounce"
    assert mine["optout@example.net"]["suppression_reason"] == "list-unsubscribe"
    code, text, _ = submit(
        stack,
        multi,
        "app@rules.example",
        ["gone@example.net"],
        simple_message("app@rules.example", "gone@example.net"),
    )
    assert code == 550 and "gone@example.net (bounce list: userunknown)" in text


# -- 13 through the glue: DKIM over the final message ----------------------------------------


def test_signature_covers_the_message_as_delivered(stack: Stack, sink: Sink, single: Login) -> None:
    shown = json.loads(stack.txmail("domains", "show", "maxe.example", "--json").stdout)
    dns_value = shown["dkim"][0]["dns_value"].encode()
    to = "signed@example.net"
    message = simple_message(
        "Shop <shop@maxe.example>",
        to,
        extra_headers={
            "Cc": "c@example.net",
            "X-Mxm-Tag": "receipt",
            "X-CloudMTA-Class": "priority",
        },
    )
    code, text, _ = submit(stack, single, "out@maxe.example", [to], message)
    assert code == 250, text
    wait_for(lambda: sink.find(to), 30, what="the signed message")
    data = bytes(sink.find(to)[0].data)
    delivered = email.message_from_bytes(data)
    assert delivered["From"] == "Shop <out@maxe.example>" and delivered["Cc"] is None
    assert delivered["X-CloudMTA-Route"] is None and delivered["X-Mxm-Tag"] is None
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: dns_value)
