"""Authenticated submission end to end: real Postfix, Dovecot and Redis, real SMTP clients."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def acme(stack: Stack) -> tuple[str, str]:
    return "acme", stack.add_account("acme", "acme.example")


def recorded(stack: Stack, queue_id: str) -> dict[str, str]:
    return stack.redis().hgetall(f"txmail:{{acme}}:message:{queue_id}")


def delivered_to(sink: Sink, recipient: str) -> bytes:
    wait_for(lambda: sink.find(recipient), 20, what=f"delivery to {recipient}")
    return bytes(sink.find(recipient)[0].data)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_587_starttls_auth(
    stack: Stack, sink: Sink, acme: tuple[str, str], mechanism: str
) -> None:
    recipient = f"smtplib-{mechanism.lower()}@example.net"
    with stack.client("submission") as smtp:
        smtp.user, smtp.password = acme
        code, _ = smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
        assert code == 235
        smtp.mail("app@acme.example")
        smtp.rcpt(recipient)
        code, reply = smtp.data(simple_message("app@acme.example", recipient))
    assert code == 250
    queue_id = queue_id_of(reply)
    assert b"Hello from the txmail tests." in delivered_to(sink, recipient)
    record = recorded(stack, queue_id)
    assert record["account"] == "acme"
    assert record["queue_id"] == queue_id
    assert recipient in record["recipients"]


def test_smtplib_465_implicit_tls(stack: Stack, sink: Sink, acme: tuple[str, str]) -> None:
    recipient = "implicit465@example.net"
    queue_id = stack.send(
        acme,
        "app@acme.example",
        [recipient],
        simple_message("app@acme.example", recipient),
        port="submissions",
    )
    delivered_to(sink, recipient)
    assert recorded(stack, queue_id)["account"] == "acme"


@pytest.mark.parametrize(
    "mechanism,tls", [("PLAIN", "--tls"), ("LOGIN", "--tls"), ("PLAIN", "--tlsc")]
)
def test_swaks(stack: Stack, sink: Sink, acme: tuple[str, str], mechanism: str, tls: str) -> None:
    port = stack.submissions if tls == "--tlsc" else stack.submission
    recipient = f"swaks-{mechanism.lower()}-{tls.strip('-')}@example.net"
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{port}",
            tls,
            "--auth",
            mechanism,
            "--auth-user",
            acme[0],
            "--auth-password",
            acme[1],
            "--from",
            "app@acme.example",
            "--to",
            recipient,
            "--h-Subject",
            "swaks test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    queue_id = queue_id_of(result.stdout.split("<~  250 2.0.0 Ok: ")[-1])
    delivered_to(sink, recipient)
    assert recorded(stack, queue_id)["queue_id"] == queue_id


def test_suspended_account_is_told_so(stack: Stack) -> None:
    password = stack.add_account("sleepy", "sleepy.example")
    stack.txmail("accounts", "suspend", "sleepy", "--reason", "unpaid invoice")
    with stack.client("submission", ("sleepy", password)) as smtp:
        code, text = smtp.mail("app@sleepy.example")
    assert code == 554
    assert text.startswith(b"5.7.1")
    assert b"suspended" in text and b"unpaid invoice" in text
    stack.txmail("accounts", "resume", "sleepy")
    with stack.client("submission", ("sleepy", password)) as smtp:
        code, _ = smtp.mail("app@sleepy.example")
    assert code == 250


def test_account_changes_reach_dovecot(stack: Stack, sink: Sink) -> None:
    password = stack.add_account("fresh", "fresh.example")
    with stack.client("submission", ("fresh", password)):
        pass
    passwd = stack.state / "dovecot/users"
    before = passwd.read_text()
    stack.txmail("accounts", "passwd", "fresh", "--password-stdin", input="a-new-password-1\n")
    # Wait for the sync rather than retrying logins: each failed login makes Dovecot delay
    # the next one from the same address (its auth penalty), up to 15 s.
    wait_for(lambda: passwd.read_text() != before, 15, what="the passwd-file sync")
    assert _can_login(stack, "fresh", "a-new-password-1")
    assert not _can_login(stack, "fresh", password)
    stack.txmail("accounts", "remove", "--yes", "fresh")
    stack.wait_passwd("fresh", present=False)
    assert not _can_login(stack, "fresh", "a-new-password-1")


def _can_login(stack: Stack, user: str, password: str) -> bool:
    try:
        with stack.client("submission", (user, password)):
            return True
    except smtplib.SMTPAuthenticationError:
        return False
