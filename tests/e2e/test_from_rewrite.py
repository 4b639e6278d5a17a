"""Maxemail's From rule end to end: "This address [MAIL FROM] will then be used in the email's
From header, overwriting any existing value. Where the existing value has an alias, the alias
will be maintained." A header From of any domain is rewritten, not refused, and DKIM signs what
leaves; with rewrite_from off a foreign From is still refused."""

from __future__ import annotations

import email
import email.utils
import json

import dkim
import pytest

from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for

pytestmark = pytest.mark.e2e


def submit(
    stack: Stack, login: tuple[str, str], sender: str, to: str, message: bytes
) -> tuple[int, str]:
    with stack.client("submission", login) as smtp:
        code, text = smtp.mail(sender)
        assert code == 250, text
        code, text = smtp.rcpt(to)
        assert code == 250, text
        code, text = smtp.data(message)
    return code, text.decode()


def test_a_foreign_from_is_overwritten_with_its_display_name_and_signed(
    stack: Stack, sink: Sink
) -> None:
    login = (
        "maxfrom",
        stack.add_account("maxfrom", "oxfordstones.example", settings=["recipient_mode=single"]),
    )
    stack.txmail(
        "domains",
        "add",
        "oxfordstones.example",
        "--account",
        "maxfrom",
        "--selector",
        "e2e",
        "--force-sign",
        "--no-return-path",
    )
    shown = json.loads(stack.txmail("domains", "show", "oxfordstones.example", "--json").stdout)
    dns_value = shown["dkim"][0]["dns_value"].encode()
    to = "rewritten-from@example.net"
    message = simple_message("Oxford Stones <newsletters@elsewhere.example>", to)
    code, text = submit(stack, login, "outgoing@oxfordstones.example", to, message)
    assert code == 250, text
    wait_for(lambda: sink.find(to), 30, what="the rewritten message")
    data = bytes(sink.find(to)[0].data)
    delivered = email.message_from_bytes(data)
    assert delivered.get_all("From") == ["Oxford Stones <outgoing@oxfordstones.example>"]
    assert b"elsewhere.example" not in data
    # signed by the sending domain, over the From as it left
    checker = dkim.DKIM(data)
    assert checker.verify(dnsfunc=lambda name, timeout=5: dns_value)
    assert checker.domain == b"oxfordstones.example"
    assert b"from" in [h.lower() for h in checker.include_headers]
    record = stack.redis().hgetall(f"txmail:{{maxfrom}}:message:{queue_id_of(text)}")
    assert record["account"] == "maxfrom"


def test_with_rewrite_from_off_a_foreign_from_is_still_refused(stack: Stack, sink: Sink) -> None:
    login = (
        "maxfromoff",
        stack.add_account(
            "maxfromoff",
            "keepfrom.example",
            settings=["recipient_mode=single", "rewrite_from=off"],
        ),
    )
    to = "refused-from@example.net"
    message = simple_message("Oxford Stones <newsletters@elsewhere.example>", to)
    code, text = submit(stack, login, "outgoing@keepfrom.example", to, message)
    assert code == 553, text
    assert text.startswith("5.7.1 Header From domain elsewhere.example is not one of"), text
    assert not sink.find(to)


@pytest.mark.parametrize(
    "case,header_from",
    [
        (1, '"=?utf-8?q?Shop?= <x@y.example>" <ceo@victim.example>'),
        (2, '"=?utf-8?q?x?=, ceo@victim.example," <me@hostile.example>'),
    ],
)
def test_a_display_name_cannot_smuggle_another_author(
    stack: Stack, sink: Sink, case: int, header_from: str
) -> None:
    """Whatever the display name holds, what leaves has one author, the MAIL FROM address, and
    is signed for its domain."""
    name, domain = f"hostile{case}", f"hostile{case}.example"
    login = (name, stack.add_account(name, domain, settings=["rewrite_from=on"]))
    stack.txmail(
        "domains",
        "add",
        domain,
        "--account",
        name,
        "--selector",
        "e2e",
        "--force-sign",
        "--no-return-path",
    )
    shown = json.loads(stack.txmail("domains", "show", domain, "--json").stdout)
    dns_value = shown["dkim"][0]["dns_value"].encode()
    to = f"{name}@example.net"
    code, text = submit(stack, login, f"out@{domain}", to, simple_message(header_from, to))
    assert code == 250, text
    wait_for(lambda: sink.find(to), 30, what="the rewritten message")
    data = bytes(sink.find(to)[0].data)
    delivered = email.message_from_bytes(data)
    values = delivered.get_all("From")
    assert len(values) == 1
    assert [a for _, a in email.utils.getaddresses(values) if a] == [f"out@{domain}"]
    assert b"victim.example>" not in data
    checker = dkim.DKIM(data)
    assert checker.verify(dnsfunc=lambda name, timeout=5: dns_value)
    assert checker.domain == domain.encode()
