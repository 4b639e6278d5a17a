"""Attack: logging in where the password can be read off the wire, or guessing it.

SASL credentials must never cross the network in clear: on 587 and 25 AUTH is neither offered
nor accepted before STARTTLS (and on 587 no mail is taken before it either), 465 speaks
nothing but TLS, and a wrong password is refused with 535 5.7.8. The listeners without a login
of their own (reinjection, the copy listener) are in test_relay.py.
"""

from __future__ import annotations

import base64
import smtplib
import socket

import pytest

from txmail_testing.harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def account(stack: Stack) -> tuple[str, str]:
    return "authsec", stack.add_account("authsec", "authsec.example")


def ehlo_lines(port: int) -> list[str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        code, text = smtp.ehlo("client.test")
        assert code == 250
        return text.decode().upper().splitlines()


@pytest.mark.parametrize("listener", ["submission", "smtp"])
def test_no_auth_before_starttls(stack: Stack, listener: str) -> None:
    port = getattr(stack, listener)
    lines = ehlo_lines(port)
    assert "STARTTLS" in lines
    assert not any(line.startswith("AUTH") for line in lines)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        token = base64.b64encode(b"\0authsec\0whatever").decode()
        code, text = smtp.docmd("AUTH", f"PLAIN {token}")
    if listener == "submission":
        assert (code, text[:5]) == (530, b"5.7.0")
    else:
        # Port 25 must also take plaintext bounces, so TLS is optional there and Postfix
        # answers 503 5.5.1; the footer says what to do.
        assert (code, text[:5]) == (503, b"5.5.1")
        assert b"STARTTLS first" in text


def test_auth_offered_after_starttls(stack: Stack) -> None:
    with stack.client("submission") as smtp:
        assert "PLAIN" in smtp.esmtp_features["auth"].upper()
        assert "LOGIN" in smtp.esmtp_features["auth"].upper()
    with stack.client("smtp") as smtp:  # port 25 also submits over TLS with AUTH
        assert "auth" in smtp.esmtp_features


def test_mail_before_starttls_on_587(stack: Stack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.submission, timeout=10) as smtp:
        smtp.ehlo("client.test")
        code, text = smtp.mail("app@authsec.example")
    assert code == 530
    assert b"5.7.0" in text and b"STARTTLS" in text


def test_wrong_password(stack: Stack, account: tuple[str, str]) -> None:
    with stack.client("submission") as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as err:
        smtp.login(account[0], account[1] + "-wrong")
    assert err.value.smtp_code == 535
    assert err.value.smtp_error.startswith(b"5.7.8")


def test_plaintext_on_465_gets_nothing(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.submissions), timeout=5) as raw:
        raw.sendall(b"EHLO client.test\r\n")
        try:
            answer = raw.recv(1024)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"250")
