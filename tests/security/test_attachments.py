"""Attack: getting an executable past the attachment rule.

The hostile-attachment corpus in tests/data/attachments tries every disguise we know: double
and fullwidth extensions, trailing dots and spaces, right-to-left override, RFC 2231 and 2047
encoded names, NTFS streams, executables named .pdf or labelled text, zip members and zips in
zips, uuencoded bodies, attached messages, malformed MIME. Its table of expected replies is
tests/unit/milter/test_attachments.py, where each file runs against the rule in-process; here
every file goes through a real node (Postfix, the milter, the account's rules) over
authenticated SMTP, and the client must see the same reply, while harmless files arrive.
"""

from __future__ import annotations

import contextlib
import smtplib

import pytest

from tests.harness import Sink, Stack, wait_for
from tests.unit.milter.test_attachments import CORPUS, EXPECTED

pytestmark = pytest.mark.e2e

DOMAIN = "attsec.example"


@pytest.fixture(scope="module")
def login(stack: Stack) -> tuple[str, str]:
    return "attsec", stack.add_account("attsec", DOMAIN, settings=[
        "warmup=false", "messages_per_minute=0", "recipients_per_minute=0"])


def submit(stack: Stack, login: tuple[str, str], recipient: str,
           message: bytes) -> tuple[int, str]:
    with contextlib.closing(stack.client("submission", login)) as smtp:
        smtp.mail(f"app@{DOMAIN}")
        smtp.rcpt(recipient)
        try:
            code, text = smtp.data(message)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    return code, " ".join(text.decode("utf-8", "replace").split())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_through_a_real_node(stack: Stack, sink: Sink, login: tuple[str, str],
                                    name: str) -> None:
    expected, words = EXPECTED[name]
    recipient = f"att-{name}@example.net"
    message = (CORPUS / f"{name}.eml").read_bytes().replace(b"app@acme.example",
                                                             f"app@{DOMAIN}".encode())
    code, text = submit(stack, login, recipient, message)
    if not expected:
        assert code == 250, text
        wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
        return
    assert f"{code} {text}".startswith(expected), text
    for word in words:
        assert word in text
    if expected == "554 5.7.1":
        assert text.endswith("; remove it (or send a link to it instead)")
