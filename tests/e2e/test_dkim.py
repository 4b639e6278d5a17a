"""DKIM end to end: mail submitted to the stack reaches the sink signed, and the signatures
verify with dkimpy and with rspamd (an independent implementation, asking a loopback DNS server
for the keys `txmail domains dns` tells the operator to publish)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dkim
import pytest

from txmail_testing.harness import Sink, Stack, simple_message, wait_for
from txmail_testing.loopback_dns import LoopbackDns
from txmail_testing.rspamd import Rspamd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def verifier(dns: LoopbackDns) -> Iterator[Rspamd]:
    rspamd = Rspamd(filters="dkim", dns_port=dns.port).start()
    yield rspamd
    rspamd.close()


@pytest.fixture(scope="module")
def login(stack: Stack, dns: LoopbackDns) -> tuple[str, str]:
    password = stack.add_account("dkimsender", "signed.example", "unsigned.example")
    stack.txmail(
        "domains", "add", "signed.example", "--account", "dkimsender", "--ed25519", "--force-sign"
    )
    for record in json.loads(stack.txmail("domains", "dns", "signed.example", "--json").stdout):
        if record["type"] == "TXT":
            dns.set_txt(record["name"], record["value"])
    return "dkimsender", password


def dnsfunc(dns: LoopbackDns):  # type: ignore[no-untyped-def]
    """dkimpy's key lookup, answered from what the loopback DNS server publishes."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        values = dns.records.get((name.decode().rstrip("."), "TXT"))
        return "".join(values[0][1:-1].split('" "')).encode() if values else None

    return lookup


def delivered(sink: Sink, recipient: str) -> bytes:
    wait_for(lambda: sink.find(recipient), 20, what=f"delivery to {recipient}")
    return bytes(sink.find(recipient)[0].data)


def test_signatures_verify_after_postfix(
    stack: Stack, sink: Sink, dns: LoopbackDns, verifier: Rspamd, login: tuple[str, str]
) -> None:
    recipient = "dkim-check@example.net"
    message = simple_message(
        "Signed Sender <app@signed.example>",
        recipient,
        subject="Ihre Bestellung",
        body="Grüße aus dem Test.\r\n" + "A long line of text. " * 40 + "\r\n",
        extra_headers={
            "Reply-To": "support@signed.example",
            "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Transfer-Encoding": "8bit",
            "List-Unsubscribe": "<mailto:unsubscribe@signed.example>",
        },
    )
    stack.send(login, "app@signed.example", [recipient], message)
    data = delivered(sink, recipient)
    assert data.count(b"DKIM-Signature:") == 2
    checker = dkim.DKIM(data)
    assert checker.verify(idx=0, dnsfunc=dnsfunc(dns))
    assert checker.verify(idx=1, dnsfunc=dnsfunc(dns))
    for header in (
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"list-unsubscribe",
    ):
        assert header in checker.include_headers

    verdict = verifier.check(data)
    symbols = verdict["symbols"]
    assert "R_DKIM_ALLOW" in symbols, symbols
    assert not {"R_DKIM_REJECT", "R_DKIM_TEMPFAIL", "R_DKIM_PERMFAIL"} & set(symbols)
    # both signatures, RSA (s=SELECTOR) and Ed25519 (s=SELECTORe), pass rspamd's own checks
    allowed = symbols["R_DKIM_ALLOW"]["options"]
    selectors = sorted(s.split("=", 1)[1] for s in allowed)
    assert len(allowed) == 2 and selectors[1] == selectors[0] + "e", allowed


def test_rspamd_notices_a_broken_signature(
    stack: Stack, sink: Sink, verifier: Rspamd, login: tuple[str, str]
) -> None:
    recipient = "dkim-tamper@example.net"
    stack.send(
        login,
        "app@signed.example",
        [recipient],
        simple_message("app@signed.example", recipient, subject="original"),
    )
    tampered = delivered(sink, recipient).replace(b"Subject: original", b"Subject: changed")
    symbols = verifier.check(tampered)["symbols"]
    assert "R_DKIM_REJECT" in symbols and "R_DKIM_ALLOW" not in symbols


def test_a_domain_whose_record_did_not_verify_is_not_signed(
    stack: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    stack.txmail("domains", "add", "unsigned.example", "--account", "dkimsender")
    recipient = "dkim-unsigned@example.net"
    stack.send(
        login,
        "app@unsigned.example",
        [recipient],
        simple_message("app@unsigned.example", recipient),
    )
    assert b"DKIM-Signature:" not in delivered(sink, recipient)


# -- domains verify and rotate-key, against the loopback DNS server ------------------------------


def publish(stack: Stack, dns: LoopbackDns, domain: str) -> None:
    """Publish what `txmail domains dns` asks for, as an operator would."""
    for record in json.loads(stack.txmail("domains", "dns", domain, "--json").stdout):
        if record["type"] == "TXT":
            dns.set_txt(record["name"], record["value"])
        else:
            dns.set(record["name"], record["type"], record["value"] + ".")


def selectors_at_sink(
    stack: Stack, sink: Sink, login: tuple[str, str], sender: str, dns: LoopbackDns
) -> tuple[list[str], str, bytes]:
    """Send one message; return the s= of its valid signatures, the envelope sender, the data."""
    recipient = f"rotation-{len(sink.messages)}@example.net"
    stack.send(login, sender, [recipient], simple_message(sender, recipient))
    data = delivered(sink, recipient)
    checker = dkim.DKIM(data)
    selectors = []
    for index in range(data.count(b"DKIM-Signature:")):
        assert checker.verify(idx=index, dnsfunc=dnsfunc(dns))
        selectors.append(checker.selector.decode())
    return selectors, sink.find(recipient)[0].sender, data


def test_verify_switches_signing_on_and_rotation_takes_over(
    stack: Stack, sink: Sink, dns: LoopbackDns, verifier: Rspamd, login: tuple[str, str]
) -> None:
    domain, sender = "verified.example", "app@verified.example"
    nameserver = ("--nameserver", f"127.0.0.1:{dns.port}")
    stack.txmail("domains", "add", domain, "--account", "dkimsender", "--selector", "first")
    before = stack.txmail("domains", "verify", domain, *nameserver, check=False)
    assert before.returncode == 1 and "missing" in before.stdout, before.stdout
    assert selectors_at_sink(stack, sink, login, sender, dns)[0] == []

    publish(stack, dns, domain)
    after = stack.txmail("domains", "verify", domain, *nameserver)
    assert "signing for verified.example is on" in after.stdout, after.stdout
    assert "now go to mta.verified.example" in after.stdout
    # the milter re-reads a domain's record within a few seconds
    wait_for(
        lambda: selectors_at_sink(stack, sink, login, sender, dns)[0] == ["first"],
        15,
        interval=0.5,
        what="mail signed with s=first",
    )
    assert selectors_at_sink(stack, sink, login, sender, dns)[1].endswith("@mta.verified.example")

    rotated = stack.txmail("domains", "rotate-key", domain, "--selector", "second")
    assert "second._domainkey.verified.example" in rotated.stdout
    assert selectors_at_sink(stack, sink, login, sender, dns)[0] == ["first"]  # not yet
    publish(stack, dns, domain)
    promoted = stack.txmail("domains", "verify", domain, *nameserver)
    assert "now signing with s=second" in promoted.stdout, promoted.stdout
    wait_for(
        lambda: selectors_at_sink(stack, sink, login, sender, dns)[0] == ["second"],
        15,
        interval=0.5,
        what="mail signed with s=second",
    )
    data = selectors_at_sink(stack, sink, login, sender, dns)[2]
    assert "R_DKIM_ALLOW" in verifier.check(data)["symbols"]
    shown = json.loads(stack.txmail("domains", "show", domain, "--json").stdout)
    assert [k["selector"] for k in shown["dkim"]] == ["second"] and shown["dkim_next"] == []
