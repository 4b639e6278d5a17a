"""Attack: reports written by somebody who holds a bounce address (issue 15, findings 2 and 4).

Every recipient of a message holds its return path, and anyone who can make an application mail
them (a signup form) gets genuine ones. With one bounce address for all recipients of a message,
one recipient could file ARF complaints about the others: they went on the bounce list, and at
the 0.1% complaint threshold one forged report per thousand recipients suspended the account.
Forged reports could also take the event id of the genuine outcome (which was then dropped as
"reported again") and one DSN naming 1,000 recipients made 1,000 webhook events.

These tests drive the bounce pipe's process() against the session's real Redis with a settings
object of their own; the end-to-end versions through Postfix are in test_forged_bounces.py.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from pathlib import Path

import dkim
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from txmail.accounts.records import Accounts
from txmail.bounce_pipe import feedback
from txmail.bounce_pipe.parse import BounceReport, parse_report
from txmail.bounce_pipe.report import process
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.events import Recorder, make_event, stream_events
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages
from txmail.store.suppressions import Suppressions
from txmail.tokens.bounce_address import bounce_address
from txmail_testing.harness import bounce_settings

SECRET = b"0123456789abcdef0123456789abcdef"
PARENT = "4jPARENT0000001"
COPY = "4jCOPY000000001"
FORGER = "forger@dest.example"
VICTIM = "victim@dest.example"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return bounce_settings(tmp_path, SECRET)  # type: ignore[no-any-return]


@pytest.fixture
def account(client: redis.Redis, settings: Settings) -> str:
    name = f"acc{uuid.uuid4().hex[:6]}"
    Accounts(client, Keys(settings.redis.prefix)).add(name, [f"{name}.example"], "pw-123456789")
    return name


def sent_to_both(client: redis.Redis, settings: Settings, account: str) -> None:
    """A message to the forger and the victim, as the milter records it now: the forger stays
    on the client's queue file, the victim got a copy of their own."""
    messages = Messages(client, Keys(settings.redis.prefix), 86400)
    messages.record(
        MessageRecord(
            queue_id=PARENT,
            account=account,
            envelope_sender=f"app@{account}.example",
            recipients=[FORGER, VICTIM],
            copies={VICTIM: COPY},
        )
    )
    messages.record(
        MessageRecord(
            queue_id=COPY,
            account=account,
            envelope_sender=f"app@{account}.example",
            recipients=[VICTIM],
            parent=PARENT,
        )
    )


def return_path(queue_id: str) -> str:
    return bounce_address(queue_id, "acme.example", SECRET, "mta.acme.example")


def arf(about: str, to: str) -> bytes:
    return (
        f"From: someone@dest.example\r\nTo: {to}\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nspam\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nVersion: 1\r\nOriginal-Rcpt-To: <{about}>\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <{to}>\r\n"
        f"To: {about}\r\nMessage-ID: <m1@acme.example>\r\n\r\n--b--\r\n"
    ).encode()


def dsn(recipients: list[str], to: str) -> bytes:
    fields = "".join(
        f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{r}>: User unknown\r\n\r\n"
        for r in recipients
    )
    return (
        f"From: MAILER-DAEMON@mx.dest.example\r\nTo: {to}\r\nSubject: failure\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.dest.example\r\nX-Postfix-Queue-ID: {PARENT}\r\n\r\n"
        f"{fields}--b--\r\n"
    ).encode()


def complaints_counted(client: redis.Redis, settings: Settings, account: str) -> int:
    keys = Keys(settings.redis.prefix)
    today = int(time.time() // 86400)
    return int(client.hget(keys.outcomes(account, today), "complained") or 0)


def suppressed(client: redis.Redis, settings: Settings, account: str) -> list[str]:
    found = Suppressions(client, Keys(settings.redis.prefix)).list(account)
    return [entry.recipient for entry in found]


def never_forward(raw: bytes, to: str, queue_id: str) -> None:
    raise AssertionError("nothing here is forwarded")


def test_a_recipient_cannot_file_a_complaint_about_another(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    sent_to_both(client, settings, account)
    outcome = process(
        settings,
        client,
        arf(VICTIM, return_path(PARENT)),
        "",
        return_path(PARENT),
        forwarder=never_forward,
    )
    assert outcome.trusted  # the token is genuine: it names the forger's queue file...
    ((_, event),) = stream_events(client, Keys(settings.redis.prefix), account)
    assert (event.kind, event.recipient, event.trusted) == ("complaint", VICTIM, False)
    assert suppressed(client, settings, account) == []  # ...which never carried the victim
    assert complaints_counted(client, settings, account) == 0


def test_a_complaint_about_oneself_suppresses_but_counts_only_from_a_feedback_loop(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    sent_to_both(client, settings, account)
    raw = arf(FORGER, return_path(PARENT))
    process(settings, client, raw, "", return_path(PARENT), forwarder=never_forward)
    assert suppressed(client, settings, account) == [FORGER]  # their own outcome
    assert complaints_counted(client, settings, account) == 0  # not a feedback loop's word
    # The same outcome, reported by a feedback loop whose signature verified, counts.
    signed = dataclasses.replace(parse_report(raw), dkim_domains=("arf.mail.yahoo.com",))
    process(settings, client, raw, "", return_path(PARENT), forwarder=never_forward, report=signed)
    assert complaints_counted(client, settings, account) == 1


def test_a_feedback_loop_report_sent_to_a_fixed_address_finds_its_token(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    """Feedback loops mail the address the sender registered, not the bounce address; the
    returned message's Return-Path still carries the token, and the loop's signature says
    who complained."""
    sent_to_both(client, settings, account)
    raw = arf(VICTIM, return_path(COPY))
    report = dataclasses.replace(parse_report(raw), dkim_domains=("arf.mail.yahoo.com",))
    outcome = process(
        settings, client, raw, "", "fbl@mta.acme.example", forwarder=never_forward, report=report
    )
    assert outcome.trusted and outcome.queue_id == COPY
    assert suppressed(client, settings, account) == [VICTIM]
    assert complaints_counted(client, settings, account) == 1
    # Unsigned, the same report is the sender's word only.
    unsigned = dataclasses.replace(parse_report(raw), dkim_domains=("isp.example",))
    outcome = process(
        settings, client, raw, "", "fbl@mta.acme.example", forwarder=never_forward, report=unsigned
    )
    assert not outcome.trusted


def test_one_unauthenticated_dsn_cannot_flood_a_webhook(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    sent_to_both(client, settings, account)
    many = [f"user{i}@dest.example" for i in range(1000)]
    outcome = process(
        settings,
        client,
        dsn(many, "bounces@mta.acme.example"),
        "",
        "bounces@mta.acme.example",
        forwarder=never_forward,
    )
    limit = settings.bounce_pipe.untrusted_events_per_report
    events = stream_events(client, Keys(settings.redis.prefix), account)
    assert len(events) == limit
    assert all(not event.trusted for _, event in events)
    assert outcome.skipped == len(many) - limit
    assert "not recorded" in outcome.kept  # kept for `txmail bounces unparsed`


def test_untrusted_events_are_capped_per_message(client: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.redis.prefix)
    recorder = Recorder(client, keys)
    recorded = [
        recorder.record(
            make_event("bounce", "acme", PARENT, f"u{i}@dest.example", trusted=False),
            untrusted_cap=3,
        )
        for i in range(10)
    ]
    assert [r.new for r in recorded] == [True] * 3 + [False] * 7
    assert all(r.capped for r in recorded[3:])
    genuine = recorder.record(make_event("bounce", "acme", PARENT, "u9@dest.example"))
    assert genuine.new  # the cap is for untrusted reports only


def test_a_forged_report_first_never_hides_the_genuine_one(
    client: redis.Redis, settings: Settings
) -> None:
    recorder = Recorder(client, Keys(settings.redis.prefix))
    forged = recorder.record(
        make_event("bounce", "acme", PARENT, VICTIM, trusted=False), untrusted_cap=20
    )
    genuine = recorder.record(make_event("bounce", "acme", PARENT, VICTIM))
    assert forged.new and genuine.new and forged.event_id != genuine.event_id
    events = stream_events(client, Keys(settings.redis.prefix), "acme")
    assert [e.trusted for _, e in events] == [False, True]
    # Once the genuine outcome is there, a forged report of it adds nothing.
    recorder.record(make_event("bounce", "acme", PARENT, FORGER))
    late = recorder.record(
        make_event("bounce", "acme", PARENT, FORGER, trusted=False), untrusted_cap=20
    )
    assert not late.new
    assert len(stream_events(client, Keys(settings.redis.prefix), "acme")) == 3


def _signed(message: bytes, domain: str) -> tuple[bytes, dict[str, bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    signature = dkim.sign(
        message, b"fbl", domain.encode(), pem, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + message, {f"fbl._domainkey.{domain}.": record}


def test_only_signatures_that_verify_name_a_feedback_loop() -> None:
    raw = arf(VICTIM, "fbl@mta.acme.example")
    signed, zone = _signed(raw, "arf.mail.yahoo.com")

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return zone.get(name.decode())

    assert feedback.verified_signers(signed, lookup) == ("arf.mail.yahoo.com",)
    tampered = signed.replace(b"Subject: report", b"Subject: r3port")
    assert feedback.verified_signers(tampered, lookup) == ()
    assert feedback.verified_signers(raw, lookup) == ()  # unsigned
    loops = ["arf.mail.yahoo.com"]
    assert feedback.feedback_loop(("arf.mail.yahoo.com",), loops) == "arf.mail.yahoo.com"
    # A provider's main domain signs its users' mail: neither it nor a sibling is the loop.
    assert feedback.feedback_loop(("yahoo.com", "x.arf.mail.yahoo.com"), loops) == ""
    assert isinstance(BounceReport().dkim_domains, tuple)


def outcomes(client: redis.Redis, settings: Settings, account: str, field: str) -> int:
    keys = Keys(settings.redis.prefix)
    return int(client.hget(keys.outcomes(account, int(time.time() // 86400)), field) or 0)


def test_a_recipient_cannot_raise_the_bounce_rate_with_dsns_about_themselves(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    """After Postfix delivered the message, a DSN for that recipient is what the recipient can
    write: it suppresses them (their own outcome) but does not count toward suspension."""
    sent_to_both(client, settings, account)
    recorder = Recorder(client, Keys(settings.redis.prefix))
    recorder.record(make_event("delivery", account, PARENT, FORGER))
    bounce = dsn([FORGER], return_path(PARENT)).replace(PARENT.encode(), b"4jNOTHING000001")
    outcome = process(
        settings, client, bounce, "", return_path(PARENT), forwarder=lambda raw, to, queue_id: None
    )
    assert outcome.trusted
    assert suppressed(client, settings, account) == [FORGER]
    assert outcomes(client, settings, account, "bounced") == 0
    # Postfix never saw the victim's copy delivered: a bounce for it counts.
    process(
        settings,
        client,
        dsn([VICTIM], return_path(COPY)),
        "",
        return_path(COPY),
        forwarder=lambda raw, to, queue_id: None,
    )
    assert outcomes(client, settings, account, "bounced") == 1


def test_a_queue_file_of_several_mailboxes_vouches_for_nobody(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    """A record written before every recipient had a queue file of its own."""
    Messages(client, Keys(settings.redis.prefix), 86400).record(
        MessageRecord(
            queue_id=PARENT,
            account=account,
            envelope_sender=f"app@{account}.example",
            recipients=[FORGER, VICTIM],
        )
    )
    outcome = process(
        settings,
        client,
        arf(VICTIM, return_path(PARENT)),
        "",
        return_path(PARENT),
        forwarder=never_forward,
    )
    assert outcome.trusted
    assert suppressed(client, settings, account) == []


def test_a_dns_outage_is_a_reason_to_try_again_not_an_unsigned_report() -> None:
    signed, _ = _signed(arf(VICTIM, "fbl@mta.acme.example"), "arf.mail.yahoo.com")

    def silent(name: bytes, timeout: float = 5) -> bytes | None:
        raise TemporaryFailure("DNS did not answer")

    with pytest.raises(TemporaryFailure):
        feedback.verified_signers(signed, silent)


def test_only_the_configured_loops_signatures_are_looked_up() -> None:
    """DNS is asked only about a configured feedback loop's key: a report signed by another
    domain, whose DNS may never answer, is judged unsigned at once."""
    signed, zone = _signed(arf(VICTIM, "fbl@mta.acme.example"), "isp.example")
    asked: list[bytes] = []

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        asked.append(name)
        raise TemporaryFailure("DNS did not answer")

    assert feedback.verified_signers(signed, lookup, wanted=["arf.mail.yahoo.com"]) == ()
    assert asked == []
    assert feedback.verified_signers(
        signed, lambda n, timeout=5: zone.get(n.decode()), wanted=["ISP.example."]
    ) == ("isp.example",)


def test_a_bounce_address_cannot_relay_unlimited_mail_to_the_client(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    """Anyone who holds a bounce address can send it any mail, and auto-replies and unclassified
    mail are forwarded whatever NOTIFY says (forward_auto_replies, default true): at most
    bounce_pipe.forwards_per_message of them reach the client; the rest are still handled."""
    from txmail.bounce_pipe import unparsed
    from txmail.bounce_pipe.report import handle

    sent_to_both(client, settings, account)
    cap = settings.bounce_pipe.forwards_per_message
    assert cap == 5
    forwarded: list[bytes] = []

    def forwarder(raw: bytes, to: str, queue_id: str) -> None:
        assert to == f"app@{account}.example" and queue_id == PARENT
        forwarded.append(raw)

    for i in range(cap + 3):
        mail = (
            f"From: {VICTIM}\r\nTo: {return_path(COPY)}\r\nSubject: re: hello {i}\r\n"
            f"Message-ID: <spam{i}@dest.example>\r\n\r\nBuy now {i}\r\n"
        ).encode()
        outcome = process(settings, client, mail, "", return_path(COPY), forwarder=forwarder)
        assert outcome.trusted
        assert outcome.forwarded_to == (f"app@{account}.example" if i < cap else "")
    assert len(forwarded) == cap
    # a mail the parser fails on is capped alike
    code, said = handle(
        settings,
        client,
        b"From: x\r\n\r\nunreadable\r\n",
        "",
        return_path(COPY),
        read=lambda raw: (_ for _ in ()).throw(unparsed.Unreadable("test")),
        forwarder=forwarder,
    )
    assert code == 0 and "forwarded" not in said
    assert len(forwarded) == cap
    # the message with the cap is the copy's only: the parent's bounce address still forwards
    mail = f"From: {FORGER}\r\nTo: x\r\nSubject: away\r\n\r\nhi\r\n".encode()
    assert process(
        settings, client, mail, "", return_path(PARENT), forwarder=forwarder
    ).forwarded_to


def test_a_forward_postfix_did_not_take_is_not_counted(
    client: redis.Redis, settings: Settings, account: str
) -> None:
    sent_to_both(client, settings, account)
    mail = f"From: {VICTIM}\r\nTo: x\r\nSubject: away\r\n\r\nhi\r\n".encode()

    def refused(raw: bytes, to: str, queue_id: str) -> None:
        raise TemporaryFailure("Postfix said no")

    for _ in range(settings.bounce_pipe.forwards_per_message + 1):
        with pytest.raises(TemporaryFailure):
            process(settings, client, mail, "", return_path(COPY), forwarder=refused)
    keys = Keys(settings.redis.prefix)
    assert client.hget(keys.message(account, COPY), "forwarded") == "0"
    assert process(
        settings, client, mail, "", return_path(COPY), forwarder=lambda *a: None
    ).forwarded_to
