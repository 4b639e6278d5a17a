"""The end-of-message order: rules, suppressions, strip and route, envelope rewrite, DKIM last;
the message record; and 451 4.3.0 for Redis trouble or any internal error."""

from __future__ import annotations

import json
from collections.abc import Callable

import dkim
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.unit.milter.driver import QUEUE_ID, Conversation, basic, eml, make_context
from txmail.accounts.domains import Domain, Domains
from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail.milter import dkim as txdkim
from txmail.milter.server import TxmailMilter
from txmail.store import Keys
from txmail.tokens.bounce_address import bounce_address, verify_bounce_address
from txmail_testing.harness import free_port

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, tuple[txdkim.DkimKey, ...]]:
    settings = Settings(state_dir=str(tmp_path_factory.mktemp("node")))
    return settings, txdkim.create_keys(settings, "acme.example", selector="s1")


@pytest.fixture
def signing(
    smtp: Callable[..., Conversation],
    client: redis.Redis,
    prefix: str,
    node: tuple[Settings, tuple[txdkim.DkimKey, ...]],
) -> tuple[dict[str, object], bytes]:
    """Services for a node whose acme.example has an active DKIM key and return path."""
    smtp()  # creates the account
    settings, keys = node
    domains = Domains(client, Keys(prefix))
    domains.add(
        Domain(
            name="acme.example",
            account="acme",
            dkim=keys,
            dkim_active=True,
            return_path="mta.acme.example",
            return_path_active=True,
        )
    )
    record = keys[0].dns_value().encode()
    services = {
        "node": settings,
        "domains": domains,
        "bounce_address": bounce_address,
        "bounce_secret": SECRET,
        "signer": txdkim.Signer(domains),
    }
    return services, record


def test_everything_in_order(
    smtp: Callable[..., Conversation], signing: tuple[dict[str, object], bytes]
) -> None:
    services, dns_record = signing
    message = eml(
        [
            ("From", "Shop <news@acme.example>"),
            ("To", "a@example.net"),
            ("Cc", "c@example.net"),
            ("Subject", "Receipt"),
            ("X-CloudMTA-Class", "priority"),
            ("X-Mxm-Tag", "receipt"),
            ("X-Mxm-Flags", "1"),
        ],
        "Thanks for your order.\r\n",
    )
    outcome = smtp({"recipient_mode": "single"}, **services).send(
        message,
        "out@acme.example",
        ["a@example.net", "b@example.net", "z@example.net"],
        sender_params=("RET=HDRS", "ENVID=e1"),
        recipient_params={"a@example.net": ("NOTIFY=FAILURE", "ORCPT=rfc822;a@example.net")},
    )
    assert outcome.accepted, outcome.reply
    kinds = [a[0] for a in outcome.actions]
    # header edits first, then recipients, the routing header, the envelope, DKIM last
    assert kinds == ["chgheader"] * kinds.count("chgheader") + [
        "delrcpt",
        "delrcpt",
        "addrcpt",
        "addheader",
        "chgfrom",
        "addheader",
    ]
    assert outcome.actions[-1][1] == "DKIM-Signature" and outcome.actions[-1][3] == 0
    # NOTIFY=FAILURE leaves as FAILURE,DELAY (milter/notify.py), with the client's ORCPT
    assert ("addrcpt", "<a@example.net>", "NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@example.net") in (
        outcome.actions
    )
    assert sorted(outcome.recipients) == ["a@example.net", "b@example.net"]
    assert verify_bounce_address(outcome.sender, SECRET) == QUEUE_ID
    assert outcome.sender.endswith("@mta.acme.example")
    assert outcome.header("From") == ["Shop <out@acme.example>"]
    assert outcome.header("Cc") == []
    assert outcome.header("X-CloudMTA-Route") == ["priority"]
    # What leaves the relay: Postfix strips the routing header (smtp_header_checks).
    outcome.headers = [(k, v) for k, v in outcome.headers if k != "X-CloudMTA-Route"]
    assert not [k for k, _ in outcome.headers if k.lower().startswith(("x-cloudmta", "x-mxm"))]
    sent = outcome.message()
    assert dkim.verify(sent, dnsfunc=lambda name, timeout=5: dns_record)


def test_record_keeps_the_client_envelope(
    smtp: Callable[..., Conversation],
    signing: tuple[dict[str, object], bytes],
    client: redis.Redis,
    prefix: str,
) -> None:
    services, _ = signing
    smtp(**services).send(
        basic(extra=[("X-CloudMTA-Class", "digest"), ("X-CloudMTA-Tags", "a, b")]),
        "app@acme.example",
        ["a@example.net"],
        sender_params=("RET=FULL", "ENVID=abc"),
        recipient_params={
            "a@example.net": ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@example.net")
        },
    )
    record = client.hgetall(f"{prefix}{{acme}}:message:{QUEUE_ID}")
    assert record["envelope_sender"] == "app@acme.example"
    assert verify_bounce_address(record["return_path"], SECRET) == QUEUE_ID
    assert json.loads(record["envelope_params"]) == ["RET=FULL", "ENVID=abc"]
    assert json.loads(record["recipient_params"]) == {
        "a@example.net": ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@example.net"]
    }
    assert record["message_class"] == "digest"
    assert json.loads(record["tags"]) == ["a", "b"]
    assert record["header_message_id"] == "<m1@acme.example>"
    assert client.get(f"{prefix}queue:{QUEUE_ID}") == "acme"


def test_null_sender_is_rewritten_for_the_from_domain(
    smtp: Callable[..., Conversation], signing: tuple[dict[str, object], bytes]
) -> None:
    services, _ = signing
    outcome = smtp(**services).send(basic(), "", ["a@example.net"])
    assert verify_bounce_address(outcome.sender, SECRET) == QUEUE_ID


@pytest.mark.parametrize(
    "notify,added",
    [
        (None, None),  # no NOTIFY: Postfix and remote servers report failures and delays
        ("NOTIFY=FAILURE,DELAY", None),
        ("NOTIFY=NEVER", "NOTIFY=FAILURE,DELAY"),
        ("NOTIFY=SUCCESS", "NOTIFY=SUCCESS,FAILURE,DELAY"),
        ("NOTIFY=delay", "NOTIFY=FAILURE,DELAY"),
    ],
)
def test_a_tracked_recipient_leaves_asking_for_failures_and_delays(
    smtp: Callable[..., Conversation],
    signing: tuple[dict[str, object], bytes],
    client: redis.Redis,
    prefix: str,
    notify: str | None,
    added: str | None,
) -> None:
    services, _ = signing
    params = (notify, "ORCPT=rfc822;Orig@example.net") if notify else ()
    outcome = smtp(**services).send(
        basic(), "app@acme.example", ["a@example.net"], recipient_params={"a@example.net": params}
    )
    changes = [a for a in outcome.actions if a[0] in ("delrcpt", "addrcpt")]
    if added is None:
        assert changes == []
    else:
        assert changes == [
            ("delrcpt", "<a@example.net>"),
            ("addrcpt", "<a@example.net>", f"{added} ORCPT=rfc822;Orig@example.net"),
        ]
    assert outcome.recipients == ["a@example.net"]
    # the record keeps what the client gave: it decides what is forwarded
    record = client.hgetall(f"{prefix}{{acme}}:message:{QUEUE_ID}")
    # (none: the field is not stored, store/messages.py)
    assert json.loads(record.get("recipient_params", "{}")) == (
        {"a@example.net": list(params)} if params else {}
    )


def test_untracked_mail_keeps_the_clients_notify(
    smtp: Callable[..., Conversation], signing: tuple[dict[str, object], bytes]
) -> None:
    services, _ = signing
    outcome = smtp({"track_bounces": False}, **services).send(
        basic(),
        "app@acme.example",
        ["a@example.net"],
        recipient_params={"a@example.net": ("NOTIFY=NEVER",)},
    )
    assert not [a for a in outcome.actions if a[0] in ("delrcpt", "addrcpt")]


@pytest.mark.parametrize(
    "listener,header,account_on,tracked",
    [
        ("txmail-api", "false", True, False),  # the send API's trackbounces: false
        ("txmail-api", "true", False, True),  # the send API's trackbounces: true
        ("txmail-api", "maybe", True, True),  # unreadable: the account's
        ("submission", "false", True, True),  # an SMTP client cannot choose (seed 004)
        ("submission", "true", False, False),
    ],
)
def test_per_message_bounce_tracking_comes_from_the_send_api_only(
    smtp: Callable[..., Conversation],
    signing: tuple[dict[str, object], bytes],
    listener: str,
    header: str,
    account_on: bool,
    tracked: bool,
) -> None:
    services, _ = signing
    outcome = smtp({"track_bounces": account_on}, **services).send(
        basic(extra=[("X-CloudMTA-Track-Bounces", header)]),
        "app@acme.example",
        ["a@example.net"],
        macros={"{daemon_name}": listener},
    )
    assert outcome.accepted, outcome.reply
    assert (verify_bounce_address(outcome.sender, SECRET) == QUEUE_ID) is tracked
    assert outcome.header("X-CloudMTA-Track-Bounces") == []  # never leaves the relay


@pytest.mark.parametrize(
    "api,client_copy,account_on,tracked",
    [
        ("default", "true", False, False),  # no trackbounces in the request: the account's
        ("default", "false", True, True),
        ("false", "true", True, False),  # the request's own choice
    ],
)
def test_only_the_send_apis_own_track_bounces_header_is_read(
    smtp: Callable[..., Conversation],
    signing: tuple[dict[str, object], bytes],
    api: str,
    client_copy: str,
    account_on: bool,
    tracked: bool,
) -> None:
    """The API puts its header on top; a copy in the client's own `mime` comes after it."""
    services, _ = signing
    message = eml(
        [
            ("X-CloudMTA-Track-Bounces", api),
            ("From", "app@acme.example"),
            ("To", "a@example.net"),
            ("Subject", "x"),
            ("X-CloudMTA-Track-Bounces", client_copy),
        ]
    )
    outcome = smtp({"track_bounces": account_on}, **services).send(
        message, "app@acme.example", ["a@example.net"], macros={"{daemon_name}": "txmail-api"}
    )
    assert outcome.accepted, outcome.reply
    assert (verify_bounce_address(outcome.sender, SECRET) == QUEUE_ID) is tracked
    assert outcome.header("X-CloudMTA-Track-Bounces") == []


def test_track_bounces_off_keeps_the_sender(
    smtp: Callable[..., Conversation], signing: tuple[dict[str, object], bytes]
) -> None:
    services, _ = signing
    outcome = smtp({"track_bounces": False}, **services).send(
        basic(), "app@acme.example", ["a@example.net"]
    )
    assert outcome.sender == "app@acme.example"
    assert not [a for a in outcome.actions if a[0] == "chgfrom"]


def dead_redis() -> redis.Redis:
    return redis.Redis(
        port=free_port(),
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def test_redis_down_at_mail_from(smtp: Callable[..., Conversation]) -> None:
    conversation = smtp()
    conversation.context = make_context(dead_redis(), "x:")
    outcome = conversation.send(basic(), "app@acme.example", ["a@example.net"])
    assert outcome.mail_reply is not None
    assert outcome.code == "451 4.3.0"
    assert "try again" in outcome.text


def test_redis_down_at_end_of_message(smtp: Callable[..., Conversation], prefix: str) -> None:
    conversation = smtp()
    broken = make_context(dead_redis(), prefix)
    conversation.context.messages = broken.messages
    outcome = conversation.send(basic(), "app@acme.example", ["a@example.net"])
    assert outcome.code == "451 4.3.0"
    assert outcome.actions == []  # nothing changed, nothing accepted


def test_a_bug_is_a_tempfail(
    smtp: Callable[..., Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("txmail.milter.rules.tags.check", broken)
    outcome = smtp().send(basic(), "app@acme.example", ["a@example.net"])
    assert outcome.code == "451 4.3.0"


def test_reply_text_is_safe_for_libmilter(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(
        basic(extra=[("X-CloudMTA-Class", "100%\x01")]), "app@acme.example", ["a@example.net"]
    )
    assert outcome.code == "554 5.6.0"
    assert "%%" in outcome.text and "\x01" not in outcome.text


def test_state_is_reset_for_each_message(smtp: Callable[..., Conversation]) -> None:
    conversation = smtp()
    first = conversation.send(
        basic(extra=[("X-Mxm-Tag", "x")]), "app@acme.example", ["a@example.net"]
    )
    second = conversation.send(basic(), "app@acme.example", ["b@example.net"])
    assert first.accepted and second.accepted
    assert TxmailMilter.protocol_mask()  # callbacks negotiated away (connect, helo, data, eoh)


def test_a_rewritten_from_is_signed_for_the_sending_domain_never_the_written_one(
    smtp: Callable[..., Conversation],
    signing: tuple[dict[str, object], bytes],
    client: redis.Redis,
    prefix: str,
    node: tuple[Settings, tuple[txdkim.DkimKey, ...]],
) -> None:
    """victim.example is another account's, with an active key: a From naming it, however
    written, never makes acme's mail carry its signature."""
    services, dns_record = signing
    Accounts(client, Keys(prefix)).add("victim", ["victim.example"], "a-long-password-2")
    Domains(client, Keys(prefix)).add(
        Domain(name="victim.example", account="victim", dkim=node[1], dkim_active=True)
    )
    outcome = smtp({"rewrite_from": "on"}, **services).send(
        basic(sender='"=?utf-8?q?Shop?= <x@y.example>" <ceo@victim.example>'),
        "out@acme.example",
        ["a@example.net"],
    )
    assert outcome.accepted, outcome.reply
    (signature,) = outcome.header("DKIM-Signature")
    assert " d=acme.example;" in " " + " ".join(signature.split())
    assert dkim.verify(outcome.message(), dnsfunc=lambda name, timeout=5: dns_record)
