"""Attack: one account sending as another account's domain (or as a domain nobody here owns).

Account A ("idalpha") is logged in; account B ("idbeta") owns idbeta.example and has a DKIM
key for it. A must not get mail accepted with B's domain in MAIL FROM or in the header From,
neither over SMTP nor through the HTTP API with A's key, and no header trick (Sender,
Reply-To, a second From, an address hidden in a display name or comment) may get a message
signed with B's DKIM key: what A sends carries A's signature or none.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.test_api import post_send
from txmail.tokens.bounce_address import verify_bounce_address
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for

pytestmark = pytest.mark.e2e

OWN, OTHER = "idalpha.example", "idbeta.example"


@pytest.fixture(scope="module")
def login(stack: Stack) -> tuple[str, str]:
    """Account A's login; both domains sign, so a signature with B's key would show."""
    stack.add_account("idbeta", OTHER)
    password = stack.add_account("idalpha", OWN)
    for account, domain in (("idbeta", OTHER), ("idalpha", OWN)):
        stack.txmail(
            "domains", "add", domain, "--account", account, "--force-sign", "--no-return-path"
        )
    return "idalpha", password


@pytest.fixture(scope="module")
def api_key(stack: Stack, login: tuple[str, str]) -> str:
    return stack.txmail("accounts", "apikey", login[0]).stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def session(stack: Stack, login: tuple[str, str]) -> Iterator[smtplib.SMTP]:
    with contextlib.closing(stack.client("submission", login)) as smtp:
        yield smtp


def submit(
    stack: Stack, login: tuple[str, str], sender: str, recipient: str, message: bytes
) -> tuple[int, str]:
    """One transaction: the first refusal or the final reply."""
    with session(stack, login) as smtp:
        code, text = smtp.mail(sender)
        if code < 400:
            code, text = smtp.rcpt(recipient)
        if code < 400:
            code, text = smtp.data(message)
    return code, text.decode()


def signing_domains(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return re.findall(r"(?im)^DKIM-Signature:(?:.|\r\n[ \t])*?\bd=([^;\s]+)", head)


@pytest.mark.parametrize("domain", [OTHER, "nobodys.example", OTHER.upper()])
def test_mail_from_of_another_accounts_domain(
    stack: Stack, login: tuple[str, str], domain: str
) -> None:
    with session(stack, login) as smtp:
        code, text = smtp.mail(f"app@{domain}")
    assert code == 553
    assert text.decode().startswith(f"5.7.1 Sender (MAIL FROM) domain {domain.lower()}")
    assert OWN in text.decode()  # the sentence names the domains A may use


@pytest.mark.parametrize(
    "header_from",
    [
        f"app@{OTHER}",
        f"Boss <boss@{OTHER}>",
        f"app@{OWN}, boss@{OTHER}",  # a second mailbox
        f'"app@{OWN}" <boss@{OTHER}>',  # A's address only in the display name
        f"boss@{OTHER} (app@{OWN})",  # ... or in a comment
        f"=?utf-8?q?app=40{OWN}?= <boss@{OTHER}>",
    ],
)
def test_header_from_of_another_accounts_domain(
    stack: Stack, sink: Sink, login: tuple[str, str], header_from: str
) -> None:
    recipient = f"hf-{uuid.uuid4().hex[:8]}@example.net"
    code, text = submit(
        stack, login, f"app@{OWN}", recipient, simple_message(header_from, recipient)
    )
    assert (code, text[:6]) == (553, "5.7.1 "), text
    assert f"Header From domain {OTHER}" in text


def test_a_second_from_header_is_refused(stack: Stack, login: tuple[str, str]) -> None:
    recipient = "twofrom@example.net"
    message = simple_message(f"app@{OWN}", recipient).replace(
        b"To:", f"From: boss@{OTHER}\r\nTo:".encode(), 1
    )
    code, text = submit(stack, login, f"app@{OWN}", recipient, message)
    assert code >= 550 and text[:2] == "5.", text


def test_sender_and_reply_to_tricks_are_signed_with_the_own_key_only(
    stack: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    recipient = "replytotrick@example.net"
    message = simple_message(
        f"app@{OWN}",
        recipient,
        extra_headers={
            "Sender": f"boss@{OTHER}",
            "Reply-To": f"Boss <boss@{OTHER}>",
            "Return-Path": f"<boss@{OTHER}>",
            "Resent-From": f"boss@{OTHER}",
        },
    )
    code, text = submit(stack, login, f"app@{OWN}", recipient, message)
    assert code == 250, text
    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    assert signing_domains(bytes(found[0].data)) == [OWN]


def test_a_null_sender_still_needs_an_own_header_from(
    stack: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    """MAIL FROM:<> is allowed, so the header From is what is checked; the message leaves with
    A's signed bounce address."""
    code, text = submit(
        stack,
        login,
        "",
        "nullsender@example.net",
        simple_message(f"app@{OTHER}", "nullsender@example.net"),
    )
    assert (code, text[:6]) == (553, "5.7.1 ")
    recipient = "nullsender-own@example.net"
    code, text = submit(stack, login, "", recipient, simple_message(f"app@{OWN}", recipient))
    assert code == 250, text
    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    secret = (stack.state / "secrets/bounce.key").read_bytes().strip()
    assert verify_bounce_address(found[0].sender, secret) == queue_id_of(text)


@pytest.mark.parametrize(
    "envelope,header_from", [(f"app@{OTHER}", f"app@{OTHER}"), (f"app@{OWN}", f"app@{OTHER}")]
)
def test_the_http_api_refuses_it_as_smtp_does(
    stack: Stack, login: tuple[str, str], api_key: str, envelope: str, header_from: str
) -> None:
    message = simple_message(header_from, "x@example.net")
    code, text = submit(stack, login, envelope, "x@example.net", message)
    answer = post_send(
        stack,
        api_key,
        {"envelope": envelope, "recipients": ["x@example.net"], "mime": message.decode()},
    )
    error = answer.json()["error"]
    assert answer.status_code in (403, 422), answer.text
    assert (error["smtp_code"], error["status"]) == (code, "5.7.1") == (553, "5.7.1")
    assert f"{error['status']} {error['message']}" == " ".join(text.split())
