"""One returned mail, start to end: what the bounce pipe (the pipe(8) transport of the
return-path domains) does with it once `txmail bounces serve` has it.

SYNOPSIS
    bouncepipe unix - n n - 10 pipe
      flags=Rq user=txmail argv=PYTHON -m txmail.bounce_pipe --config FILE -- ${sender} ${recipient}

DESCRIPTION
    Postfix hands every mail for a return-path domain (bounces+TOKEN@mta.SENDER_DOMAIN or the
    configured bounce domain) to this command, one recipient at a time, the mail on standard
    input. It:

    1.  checks the TOKEN of the recipient address (txmail.tokens.bounce_address): a valid
        HMAC names the queue id of the message the bounce is about, and makes the bounce trusted;
    2.  parses the mail (txmail.bounce_pipe.parse): one outcome per recipient it reports;
    3.  finds the original message (match_message()): by the token, else by the report's
        X-Postfix-Queue-ID, Original-Envelope-Id, the queue id a token with a wrong MAC
        claims, or the returned message's Message-ID (those make it untrusted);
    4.  records one event per recipient outcome (record_events(), through
        txmail.events.record_outcome as the maillog follower does for what Postfix saw);
        trusted hard bounces and complaints suppress the recipient, untrusted ones never do.
        A token vouches only for the recipients its queue file carried (the milter gives
        every recipient of a bounce-tracked message a queue file, and so a token, of its
        own): an outcome for any other address is untrusted too. Untrusted outcomes are
        bounded: at most bounce_pipe.untrusted_events_per_report of one mail and
        untrusted_events_per_message of one message are recorded; a mail with more is kept
        for inspection. What the recipient could have written counts toward suspension only
        with more proof: a complaint when a feedback loop in bounce_pipe.feedback_loops
        DKIM-signed it (feedback.py; such a report may carry its token in the returned
        message's Return-Path instead of in the address it was sent to), a hard bounce when
        Postfix did not see the message delivered to that recipient;
    5.  keeps what it cannot read, or cannot match to a message, for `txmail bounces unparsed`
        (keep_for_inspection());
    6.  forwards the bounce to the original envelope sender when the client's NOTIFY asks for
        it, and auto-replies and unclassified mail whatever NOTIFY says (the account's
        forward_auto_replies can hold them back), with a null envelope sender
        (forward_to_sender(), txmail.bounce_pipe.forward); at most
        bounce_pipe.forwards_per_message of them per message, since every holder of the
        bounce address can send to it (forward_capped()).

    Where: master.cf runs `python -m txmail.bounce_pipe` as the unprivileged settings.user;
    it only hands the mail to the long-running `txmail bounces serve` (handoff.py, server.py),
    which runs as root, has a parser worker that holds no secret parse it (worker.py:
    read_report() below), then calls handle() and process() here. When the server does not
    answer, the pipe exits 75 and Postfix keeps the mail.

EXIT STATUS
    0   done (recorded, kept or forwarded as above; a mail the parser fails on, by an error,
        a timeout or a resource limit, is kept for `txmail bounces unparsed`: retrying it
        would fail the same way until Postfix gave up on it; with a valid token it is
        forwarded as it came as unclassified mail, as step 6 says);
    75  try again later (EX_TEMPFAIL): Redis is down, DNS did not answer while a complaint's
        signature was verified, no parser worker could start, Postfix would not take a
        forwarded bounce, or anything unexpected went wrong in the recorder. Postfix keeps
        the bounce and retries.
    Never anything else: a pipe command that dies makes Postfix discard the bounce, because
    a bounce has a null sender (POSTFIX-NOTES §7). Every exception is caught, logged, and 75.

LOGS
    One line per decision on standard error, starting with the queue id: the server's, as
    component bounce-pipe (txmail/logs.py); the pipe's (why it exits 75), in Postfix's maillog.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from txmail import logs, store
from txmail.accounts import reputation
from txmail.accounts import settings as account_settings
from txmail.accounts.settings import AccountSettings
from txmail.bounce_pipe import feedback, unparsed
from txmail.bounce_pipe import forward as forwarding
from txmail.bounce_pipe.handoff import EX_OK, EX_TEMPFAIL
from txmail.bounce_pipe.parse import BounceReport, parse_report
from txmail.config import Settings
from txmail.errors import TxmailError
from txmail.events import (
    Event,
    Recorder,
    SuppressionPolicy,
    record_outcome,
)
from txmail.outcomes.findings import BounceEvent
from txmail.store import scripts, secrets
from txmail.store.messages import MessageRecord, Messages
from txmail.tokens.bounce_address import verify_bounce_address

log = logging.getLogger("txmail.bounce_pipe")

EVENT_KINDS = ("bounce", "soft_bounce", "complaint", "delivery")

Forwarder = Callable[[bytes, str, str], None]  # (raw, to, queue id)


@dataclass
class Outcome:
    """What one run did (returned for tests and for the log)."""

    queue_id: str = ""
    trusted: bool = False
    events: list[str] = field(default_factory=list)  # event ids recorded or seen again
    kept: str = ""  # why the mail was kept for inspection ("" when not)
    skipped: int = 0  # untrusted outcomes not recorded (over the caps)
    forwarded_to: str = ""


def unverified_queue_id(recipient: str) -> str | None:
    """The queue id a bounce address claims, without checking its MAC (a hint, never proof)."""
    local = recipient.strip().strip("<>").rsplit("@", 1)[0].lower()
    token = local.split("+", 1)[1] if "+" in local else ""
    encoded = token.rsplit("-", 1)[0]
    if not encoded or len(encoded) > 60:
        return None
    try:
        queue_id = base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    return queue_id if queue_id.isalnum() else None


def find_message(
    messages: Messages, token_queue_id: str | None, report: BounceReport, recipient: str = ""
) -> tuple[MessageRecord | None, bool]:
    """The message a bounce is about, and whether the signed token proved it."""
    if token_queue_id:
        record = messages.get(token_queue_id)
        if record is not None:
            return record, True
    hints = (report.postfix_queue_id, report.original_envelope_id, unverified_queue_id(recipient))
    for queue_id in hints:
        if queue_id and len(queue_id) < 64 and queue_id.isalnum():
            record = messages.get(queue_id)
            if record is not None:
                return record, False
    if report.original_message_id:
        record = messages.find_by_header_message_id(report.original_message_id)
        if record is not None:
            return record, False
    return None, False


def _counts(
    client: store.Client, keys: store.Keys, record: MessageRecord, event: Event, loop: str
) -> bool:
    """Whether a trusted outcome may count toward the account's suspension. The recipient holds
    the bounce address and can write a report about themselves, so a complaint counts only when
    a feedback loop signed it, and a bounce only when Postfix did not see the message delivered
    to that recipient (a rejection Postfix saw was counted from its log already)."""
    if event.kind == "complaint":
        return bool(loop)
    if event.kind == "bounce":
        seen = keys.event_seen(record.account, record.message_id)
        with store.guard(f"{record.queue_id}: looking up the delivery of <{event.recipient}>"):
            return not client.hexists(seen, f"delivery:{event.recipient}")
    return True


def _recipient_as_sent(record: MessageRecord, reported: str) -> str:
    for address in record.recipients:
        if address.lower() == reported.lower():
            return address
    return reported


def read_report(settings: Settings, raw: bytes) -> BounceReport:
    """Parse one returned mail; for a complaint, also verify its DKIM signatures (DNS)."""
    report = parse_report(raw)
    if any(e.kind == "complaint" for e in report.events):
        report.dkim_domains = feedback.verified_signers(
            raw,
            feedback.dns_txt(list(settings.domains.nameservers)),
            wanted=settings.bounce_pipe.feedback_loops,
        )
    return report


@dataclass(frozen=True)
class Match:
    """What a returned mail is about (the find step): the message (None: no match), whether
    the signed token proved it, the queue id a valid token names, and the feedback loop that
    DKIM-signed the report ("" when none did)."""

    record: MessageRecord | None
    trusted: bool
    token_queue_id: str | None
    loop: str

    @property
    def queue_id(self) -> str:
        return self.record.queue_id if self.record else (self.token_queue_id or "")


def process(
    settings: Settings,
    client: store.Client,
    raw: bytes,
    sender: str,
    recipient: str,
    forwarder: Forwarder | None = None,
    clock: Callable[[], float] = time.time,
    report: BounceReport | None = None,
) -> Outcome:
    """Record, keep and forward one returned mail (the steps in the module text): find the
    message, record its recipients' outcomes, keep what cannot be used, forward to the
    sender. `report` is the mail already parsed (read_report) by a process that holds no
    secret; None: parse here."""
    keys = store.Keys(settings.redis.prefix)
    ttl = settings.milter.message_ttl_days * 86400
    secret = secrets.accepted(settings, client, "bounce_key_file")
    token_queue_id = verify_bounce_address(recipient, secret)
    if report is None:
        report = read_report(settings, raw)
    messages = Messages(client, keys, ttl)
    match = match_message(settings, messages, secret, token_queue_id, report, recipient)
    outcome = Outcome(queue_id=match.queue_id, trusted=match.trusted)
    record = match.record
    if record is None:
        outcome.kept = (
            "no message matches (token, X-Postfix-Queue-ID, Original-Envelope-Id "
            "and Message-ID all unknown)"
        )
        keep_for_inspection(settings, client, keys, raw, sender, recipient, outcome, now=clock())
        return outcome
    # Every line logged from here on names the message's queue id and account (logs.py).
    with logs.concerning(record.queue_id, record.account):
        raw_settings = store.decoded_hash(client.hgetall(keys.account(record.account)))
        account_values = account_settings.from_fields(raw_settings or {})
        recorded_kinds = record_events(
            settings, client, keys, record, match, report, account_values, outcome, clock
        )
        if outcome.kept:
            keep_for_inspection(
                settings, client, keys, raw, sender, recipient, outcome, now=clock()
            )
        forward_to_sender(
            settings,
            client,
            record,
            match.trusted,
            report,
            raw,
            recorded_kinds,
            account_values.forward_auto_replies,
            outcome,
            forwarder,
        )
    return outcome


def match_message(
    settings: Settings,
    messages: Messages,
    secret: tuple[bytes, ...],
    token_queue_id: str | None,
    report: BounceReport,
    recipient: str,
) -> Match:
    """The find step: the message the mail is about, by the token of the address it came to
    (`token_queue_id`, checked already), or of the returned message's Return-Path when a
    feedback loop signed the report, else by the report's hints (find_message)."""
    loop = feedback.feedback_loop(report.dkim_domains, settings.bounce_pipe.feedback_loops)
    if token_queue_id is None and loop:
        # A feedback loop writes to the address the sender registered with it, not to the
        # message's bounce address; the returned message's Return-Path still carries that.
        token_queue_id = verify_bounce_address(
            report.original_headers.get("return-path", ""), secret
        )
    record, trusted = find_message(messages, token_queue_id, report, recipient)
    match = Match(record, trusted, token_queue_id, loop)
    if token_queue_id is None:
        log.info(
            "%s: untrusted: the bounce address <%s> carries no valid token",
            match.queue_id or "NOQUEUE",
            recipient[:200],
        )
    return match


def record_events(
    settings: Settings,
    client: store.Client,
    keys: store.Keys,
    record: MessageRecord,
    match: Match,
    report: BounceReport,
    account_values: AccountSettings,
    outcome: Outcome,
    clock: Callable[[], float],
) -> dict[str, str]:
    """The record step, for the message `match` found (`record`): one event per recipient
    outcome the report gives, within the caps on untrusted ones. Fills in `outcome` (events,
    skipped, and why the mail is kept when it is); returns the kind recorded for each
    recipient the token vouches for, which alone may be forwarded."""
    policy = SuppressionPolicy.from_settings(account_values)
    recorder = Recorder(
        client,
        keys,
        seen_ttl=settings.milter.message_ttl_days * 86400,
        counter_days=settings.events.counter_days,
        tags_per_day=settings.events.tags_per_day,
        outcome_hook=reputation.outcome_hook(client, keys),
        clock=clock,
    )
    carried = {r.lower() for r in record.carried_recipients()}
    if len(carried) > 1:
        # A queue file with several mailboxes (a record written before the milter gave
        # each recipient a queue file of its own): its token vouches for nobody.
        carried = set()
    recorded_kinds: dict[str, str] = {}
    untrusted_left = settings.bounce_pipe.untrusted_events_per_report
    for found in report.events:
        if found.kind not in EVENT_KINDS:
            continue
        rcpt = _recipient_as_sent(record, found.recipient)
        # The token vouches for one queue file, and every recipient of that file holds it:
        # since the milter gives each recipient a queue file of its own, that is the one
        # recipient. Any other address is the sender's word only (a forger holding the
        # bounce address of a message sent to them).
        vouched = match.trusted and rcpt.lower() in carried
        if not vouched:
            if untrusted_left <= 0:
                outcome.skipped += 1
                continue
            untrusted_left -= 1
        result = record_outcome(
            recorder,
            record,
            found.kind,
            rcpt,
            _details(found, record, match.loop),
            policy,
            trusted=vouched,
            counts=lambda event: _counts(client, keys, record, event, match.loop),
            untrusted_cap=settings.bounce_pipe.untrusted_events_per_message,
            now=clock(),
        )
        if result.capped:
            outcome.skipped += 1
            continue
        outcome.events.append(result.event_id)
        if vouched:  # only what the token vouches for is forwarded to the client
            recorded_kinds[rcpt] = found.kind
        if not result.new:
            log.info(
                "%s: %s to=<%s> reported again (id=%s); not recorded twice",
                record.queue_id,
                found.kind,
                rcpt,
                result.event_id,
            )
    if not report.events:
        outcome.kept = "no recipient outcome found in the returned mail"
    elif outcome.skipped:
        outcome.kept = (
            f"{outcome.skipped} outcomes this mail reports without a token that "
            "vouches for them were not recorded (bounce_pipe.untrusted_events_"
            "per_report, untrusted_events_per_message)"
        )
        log.warning("%s: %s", record.queue_id, outcome.kept)
    return recorded_kinds


def _details(found: BounceEvent, record: MessageRecord, loop: str) -> dict[str, Any]:
    """An outcome's event details: what the report says, and where it came from."""
    details: dict[str, Any] = {
        "status": found.status,
        "reason": found.reason,
        "reason_source": found.reason_source,
        "diagnostic": found.diagnostic,
        "remote_mta": found.remote_mta,
        "class": record.message_class,
        "source": "bounce-pipe",
        "detector": found.detector,
    }
    if found.feedback_type:
        details["feedback_type"] = found.feedback_type
    if found.kind == "complaint" and loop:
        details["feedback_loop"] = loop
    return {k: v for k, v in details.items() if v is not None}


def keep_for_inspection(
    settings: Settings,
    client: store.Client,
    keys: store.Keys,
    raw: bytes,
    sender: str,
    recipient: str,
    outcome: Outcome,
    now: float,
) -> None:
    """The keep step: the mail as it came, for `txmail bounces unparsed`, with why
    (outcome.kept)."""
    log.info(
        "%s: kept for `txmail bounces unparsed`: %s", outcome.queue_id or "NOQUEUE", outcome.kept
    )
    _keep(settings, client, keys, raw, outcome.kept, sender, recipient, outcome.queue_id, now=now)


def forward_to_sender(
    settings: Settings,
    client: store.Client,
    record: MessageRecord,
    trusted: bool,
    report: BounceReport,
    raw: bytes,
    recorded_kinds: dict[str, str],
    forward_auto_replies: bool,
    outcome: Outcome,
    forwarder: Forwarder | None,
) -> None:
    """The forward step: the mail to the message's envelope sender, with a null envelope
    sender, when the client's DSN parameters and the account's forward_auto_replies ask
    for it (forwarding.decide()); its headers only
    when the client asked for RET=HDRS; at most bounce_pipe.forwards_per_message per
    message (forward_capped())."""
    why = forwarding.decide(
        record,
        recorded_kinds,
        any(e.kind == "auto_reply" for e in report.events),
        unreadable=not report.events,
        forward_auto_replies=forward_auto_replies,
        trusted=trusted,
    )
    if not why:
        return
    body = (
        forwarding.headers_only_of(raw, report.headers_only)
        if forwarding.ret_of(record) == "HDRS"
        else raw
    )
    if not forward_capped(settings, client, record, body, forwarder):
        return
    outcome.forwarded_to = record.envelope_sender
    log.info(
        "%s: forwarded to <%s> with MAIL FROM:<> (%s)",
        record.queue_id,
        record.envelope_sender,
        why,
    )


def forward_capped(
    settings: Settings,
    client: store.Client,
    record: MessageRecord,
    body: bytes,
    forwarder: Forwarder | None,
) -> bool:
    """Forward `body` to the message's envelope sender unless the message has had
    bounce_pipe.forwards_per_message forwards already (counted in its record, field
    `forwarded`, by forward_count.lua): every holder of its bounce address can send it mail,
    and each forward is relayed to the client from this node. False: not forwarded (one log
    line says why); ForwardFailed when Postfix does not take it (the count is given back)."""
    cap = settings.bounce_pipe.forwards_per_message
    count = scripts.get(client, "forward_count")
    key = store.Keys(settings.redis.prefix).message(record.account, record.queue_id)
    with store.guard(f"{record.queue_id}: counting the forwards to <{record.envelope_sender}>"):
        counted = count(keys=[key], args=[cap, 1])
    if not counted:
        log.warning(
            "%s: not forwarded to <%s>: the message had its %d forwards "
            "(bounce_pipe.forwards_per_message); recorded as usual",
            record.queue_id,
            record.envelope_sender,
            cap,
        )
        return False
    send = forwarder or _reinject(settings)
    try:
        send(body, record.envelope_sender, record.message_id)
    except Exception:  # the pipe answers 75 and Postfix retries: this one did not count
        with contextlib.suppress(redis.RedisError):
            count(keys=[key], args=[cap, -1])
        raise
    return True


def _reinject(settings: Settings) -> Forwarder:
    def send(raw: bytes, to: str, queue_id: str) -> None:
        forwarding.forward(raw, to, queue_id, settings.listen.reinject)

    return send


def handle(
    settings: Settings,
    client: store.Client,
    raw: bytes,
    sender: str,
    recipient: str,
    read: Callable[[bytes], BounceReport],
    forwarder: Forwarder | None = None,
) -> tuple[int, str]:
    """process() one returned mail that `read` parses (in a parser worker that holds no
    secret, server.py): (0, "done"); (0, "kept ...") when the parser failed on the mail
    itself (unparsed.Unreadable: kept unparsed, as every retry would fail alike until Postfix
    discarded it, and forwarded as it came when its token is valid and the client's NOTIFY
    asks for failures); or (75, why) for anything else that goes wrong, a forward Postfix
    refused included."""
    try:
        try:
            report = read(raw)
        except unparsed.Unreadable as exc:
            return EX_OK, _keep_unreadable(
                settings, client, raw, sender, recipient, str(exc), forwarder
            )
        process(settings, client, raw, sender, recipient, forwarder=forwarder, report=report)
        return EX_OK, "done"
    except Exception as exc:  # noqa: BLE001 - anything else would make Postfix drop it
        return EX_TEMPFAIL, _failed(exc)


def _keep(
    settings: Settings,
    client: store.Client,
    keys: store.Keys,
    raw: bytes,
    why: str,
    sender: str,
    recipient: str,
    queue_id: str,
    now: float,
) -> None:
    """Keep a returned mail for `txmail bounces unparsed`; say so when the oldest had to go."""
    pipe = settings.bounce_pipe
    if unparsed.keep(
        client,
        keys,
        raw,
        why,
        sender,
        recipient,
        queue_id,
        pipe.unparsed_max,
        pipe.unparsed_max_bytes,
        now=now,
    ):
        log.warning(
            "%s: bounces:unparsed is full (%d); the oldest kept bounce was dropped",
            queue_id or "NOQUEUE",
            pipe.unparsed_max,
        )


def _keep_unreadable(
    settings: Settings,
    client: store.Client,
    raw: bytes,
    sender: str,
    recipient: str,
    why: str,
    forwarder: Forwarder | None = None,
) -> str:
    """Keep a mail the parser failed on for `txmail bounces unparsed`, as it came; and when
    the token of its bounce address is valid (checked without parsing the mail) and
    forwarding.decide() forwards unclassified mail for it, forward it as it came too. Only
    the token can vouch here: without a valid one nothing is forwarded."""
    keys = store.Keys(settings.redis.prefix)
    queue_id = (
        verify_bounce_address(recipient, secrets.accepted(settings, client, "bounce_key_file"))
        or ""
    )
    record = None
    if queue_id:
        record = Messages(client, keys, settings.milter.message_ttl_days * 86400).get(queue_id)
    log.warning(
        "%s: the parser failed on this returned mail; kept unparsed for `txmail "
        "bounces unparsed`: %s",
        queue_id or "NOQUEUE",
        why,
    )
    _keep(settings, client, keys, raw, why, sender, recipient, queue_id, now=time.time())
    if record is None:
        return f"kept unparsed: {why}"
    raw_settings = store.decoded_hash(client.hgetall(keys.account(record.account)))
    because = forwarding.decide(
        record,
        {},
        auto_reply=False,
        unreadable=True,
        forward_auto_replies=account_settings.from_fields(raw_settings or {}).forward_auto_replies,
        trusted=True,
    )
    if not because:
        return f"kept unparsed: {why}"
    if not forward_capped(settings, client, record, raw, forwarder):  # ForwardFailed: 75
        return f"kept unparsed: {why}"
    hdrs = (
        " as it came: RET=HDRS asked for its headers only, which cannot be cut without "
        "parsing the mail"
        if forwarding.ret_of(record) == "HDRS"
        else ""
    )
    log.info(
        "%s: forwarded to <%s> with MAIL FROM:<>%s (%s)",
        record.queue_id,
        record.envelope_sender,
        hdrs,
        because,
    )
    return f"kept unparsed and forwarded to <{record.envelope_sender}>: {why}"


def _failed(exc: BaseException) -> str:
    """Log why a returned mail must wait (exit 75) and return it in one line."""
    why = f"{exc.__class__.__name__}: {str(exc)[:300]}"
    # An expected outage needs no traceback; anything else is a bug worth one.
    expected = isinstance(exc, TxmailError | redis.RedisError)
    log.error("NOQUEUE: try again later (exit 75): %s", why, exc_info=not expected)
    return why
