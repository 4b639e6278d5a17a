"""End of message: every decision about one message, in order, and what the milter must change.

    1. the rules of stage "eom" up to single-recipient mode and the From rewrite (refusals);
    2. suppressions: the remaining recipients are looked up on the lists the flags ask for and
       the suppressed ones are taken off (rule `suppressed`; 550 5.7.1 when nobody is left);
    3. spam: rspamd's score against the account's spam_threshold (550 5.7.1);
    4. control headers are stripped and, for priority and digest, the routing header added;
    5. the envelope sender becomes the signed bounce address (unless bounce tracking is off
       for the message: tracks_bounces()), and then every recipient whose NOTIFY would keep
       failure or delay notices from that address is added back asking for them
       (milter/notify.py; the record keeps the client's parameters);
    6. DKIM signs the message as Postfix will send it, after every other change; a tracked or
       bounce-tracked message with several recipients is split first: the others get copies
       of their own (their own tracking tokens, their own bounce address, so a recipient's
       return path vouches for that recipient alone), injected through Postfix's copy
       listener once the message is signed (milter/copies.py, finish_copy runs on that
       listener);
    7. the message record, the tag counts and the count against policyd's quotas are written in
       one round trip, in one script call (store/scripts/message_accept.lua) beside the plain
       commands for the keys outside the account's slot, then the blocked events through the
       event recorder.

Reads:  the Submission the milter buffered, the account, and the services in MilterContext
        (Redis, suppressions, spam checker, DKIM signer, return-path domains), which are
        passed in so the order above is tested without a milter.
Fails:  TemporaryFailure (Redis, rspamd under the tempfail policy, a DKIM key that cannot be
        read) propagates; the milter turns it into 451 4.3.0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from txmail import store
from txmail.accounts.cache import AccountCache
from txmail.accounts.domains import Domains
from txmail.accounts.records import Account, Accounts
from txmail.accounts.settings import AccountSettings
from txmail.accounts.usage import commit_call
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.events import Recorder
from txmail.milter import copies, notify, rules, tracking
from txmail.milter.blocked import record_blocked
from txmail.milter.copies import Copier
from txmail.milter.dkim import Signer
from txmail.milter.rules import (
    HeaderEdit,
    Plan,
    Refusal,
    control_headers,
    message_class,
    suppressed,
)
from txmail.milter.spam import SpamChecker
from txmail.milter.submission import Submission, UnreadableMessage, domain_of
from txmail.milter.tracking import TrackingContext
from txmail.stats import tags_count_call
from txmail.store import Client, Keys, secrets
from txmail.store.counters import count_message
from txmail.store.messages import Counting, MessageRecord, Messages
from txmail.store.secrets import SharedSecrets
from txmail.store.suppressions import Suppressions
from txmail.submit import TRACK_BOUNCES_HEADER
from txmail.tokens.bounce_address import bounce_address

log = logging.getLogger("txmail.milter")

# bounce_address(queue_id, sender_domain, secret, return_path_domain) -> the envelope sender
BounceAddress = Callable[[str, str, bytes, str], str]

_SPLIT = rules.RULES.index(suppressed)
BEFORE_SUPPRESSION = rules.RULES[:_SPLIT]
SUPPRESSION = [suppressed]
AFTER_SPAM = rules.RULES[_SPLIT + 1 :]


@dataclass
class MilterContext:
    """What every connection shares: settings, the store and the services the milter calls.
    build_context() sets every service; a service that is None is left out, so a unit test
    can run the order of finish() without DKIM, suppressions, spam checking or copies."""

    settings: Settings
    client: Client | None
    keys: Keys
    accounts: Accounts | AccountCache[Account]
    messages: Messages
    suppressions: Suppressions | None = None
    spam: SpamChecker | None = None
    signer: Signer | None = None
    domains: ReturnPaths | Domains | None = None  # return-path domains
    bounce_secret: bytes = b""  # when `secrets` is None (unit tests)
    secrets: SharedSecrets | None = None  # the installation's keys, shared through Redis
    bounce_address: BounceAddress | None = None  # txmail.tokens.bounce_address.bounce_address
    events: Recorder | None = None  # blocked events
    tracking: TrackingContext | None = None  # issue 6
    copier: Copier | None = None  # per-recipient copies


@dataclass
class Accepted:
    """A message that passed, and the changes the milter hands to Postfix."""

    plan: Plan
    record: MessageRecord
    header_edits: list[HeaderEdit] = field(default_factory=list)
    removed_recipients: list[str] = field(default_factory=list)
    added_recipients: list[tuple[str, str]] = field(default_factory=list)  # (rcpt, ESMTP params)
    route_headers: list[tuple[str, str]] = field(default_factory=list)
    return_path: str = ""
    signatures: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # tracking: the rewritten body for smfi_replacebody


def finish(submission: Submission, account: Account, context: MilterContext) -> Refusal | Accepted:
    settings = account.settings
    plan = submission.plan
    plan.recipients = list(submission.recipients)
    try:
        refusal = rules.run(rules.EOM, submission, settings, BEFORE_SUPPRESSION)
        if refusal is None:
            if context.suppressions is not None:
                wanted = suppressed.lists(plan)
                if wanted and plan.recipients:
                    submission.suppressed = context.suppressions.check(
                        submission.account, list(plan.recipients), wanted
                    )
            refusal = rules.run(rules.EOM, submission, settings, SUPPRESSION)
        if refusal is None:
            refusal = spam_check(submission, settings, context)
        if refusal is None:
            refusal = rules.run(rules.EOM, submission, settings, AFTER_SPAM)
    except UnreadableMessage as exc:
        refusal = Refusal(
            "554",
            "5.6.0",
            f"The message's structure cannot be read ({exc}); "
            "send it as a well-formed MIME message",
        )
    if refusal is not None:
        return refusal
    accepted = Accepted(
        plan=plan,
        record=_record(submission),
        header_edits=list(plan.header_edits),
        removed_recipients=[b.recipient for b in plan.blocked],
    )
    tracked = account.tracks_bounces(submission.sender, submission.track_bounces)
    orders, copy_text = _track(submission, settings, context, accepted, tracked)
    _seal(submission, settings, context, accepted, tracked)
    if orders and context.copier is not None:  # _track makes orders only with a copier
        # Last but the record, so that a copy that fails leaves the smallest window in which
        # other copies are queued while the client is told 451 (milter/copies.py, FAILURE).
        accepted.record.copies = context.copier.inject(submission, orders, copy_text)
    _store(submission, accepted, context)
    return accepted


def _track(
    submission: Submission,
    settings: AccountSettings,
    context: MilterContext,
    accepted: Accepted,
    track_bounces: bool,
) -> tuple[list[copies.CopyOrder], bytes]:
    """Tracking (milter/tracking.py): links and the open pixel go in after every rule and
    before the envelope rewrite and DKIM, so the signature covers the message as it leaves.
    A tracked or bounce-tracked message with several recipients keeps the first (in
    single-recipient mode the To recipient), tracked for them; the others are taken off and
    returned as the copies to make, with the copies' text (the rules' header edits, the body
    as the client sent it). Mail with one recipient, and mail neither tracked nor
    bounce-tracked, take no other step."""
    plan = submission.plan
    if context.copier is None:
        accepted.body = tracking.apply(submission, settings, context.tracking)
        return [], b""
    choice = tracking.wanted(plan.flags, settings)
    if context.tracking is None:
        choice = tracking.Tracking(opens=False, clicks=False)
    # Every holder of a bounce address can report outcomes with it, so a bounce-tracked
    # message gives each recipient a queue file, and a bounce address, of its own.
    split = track_bounces and context.bounce_address is not None
    if not plan.recipients or not (choice or split):
        return [], b""
    kept = copies.kept_recipient(plan)
    others = copies.other_recipients(plan, kept)
    copy_text = submission.message_bytes(plan.header_edits) if others else b""
    if choice and context.tracking is not None:
        accepted.body = tracking.track_for(submission, context.tracking, choice, kept)
    if not others or (accepted.body is None and not split):
        return [], b""
    accepted.removed_recipients.extend(others)
    return copies.copy_orders(submission, others, choice, track_bounces=track_bounces), copy_text


def _seal(
    submission: Submission,
    settings: AccountSettings,
    context: MilterContext,
    accepted: Accepted,
    track_bounces: bool,
) -> None:
    """The routing header, the signed bounce address and, last, the DKIM signature over the
    message as Postfix will send it: the finishing steps of every message and every copy."""
    plan = accepted.plan
    if plan.message_class != "standard":
        accepted.route_headers.append((message_class.ROUTE_HEADER, plan.message_class))
    accepted.return_path = _return_path(submission, track_bounces, context)
    accepted.record.return_path = accepted.return_path
    _widen_notify(submission, accepted)
    if context.signer is not None:
        author_domain = _author_domain(submission, plan)
        if author_domain:
            final = submission.message_bytes(plan.header_edits)
            accepted.signatures = context.signer.sign(
                author_domain, final, allowed=submission.domains
            )


def _widen_notify(submission: Submission, accepted: Accepted) -> None:
    """With a signed bounce address, each recipient that stays on this queue file and whose
    NOTIFY lacks FAILURE or DELAY is removed and added back asking for both (notify.py)."""
    if not accepted.return_path:
        return
    done = {r.lower() for r in accepted.removed_recipients}
    for recipient in accepted.plan.recipients:
        if recipient.lower() in done:
            continue
        done.add(recipient.lower())
        params = notify.outbound_params(submission.recipient_params.get(recipient, []))
        if params is not None:
            accepted.removed_recipients.append(recipient)
            accepted.added_recipients.append((recipient, params))


def finish_copy(submission: Submission, context: MilterContext) -> Refusal | Accepted:
    """End of message on the copy listener: a copy the milter itself injected for one
    recipient of a message that passed every rule (milter/copies.py). No client rule runs
    again; the copy gets its own bounce address, tracking for its recipient (tokens naming the
    parent), DKIM and a record that points at the parent. Never counted against quotas, tags
    or /metrics: the parent was."""
    values = submission.header_values(copies.HEADER)
    header = (
        context.copier.signer.verify(values[0])
        if len(values) == 1 and context.copier is not None
        else None
    )
    if header is None:
        return Refusal(
            "554",
            "5.7.1",
            "Only the txmail milter hands mail to this listener, "
            f"with one {copies.HEADER} header it signed; this message has none "
            "that verifies",
        )
    if [r.lower() for r in submission.recipients] != [header.recipient.lower()]:
        return Refusal(
            "554",
            "5.7.1",
            f"This copy was signed for <{header.recipient}> only; give exactly that recipient",
        )
    account = context.accounts.find(header.account)
    if account is None:
        raise TemporaryFailure(f"the account {header.account} of {header.parent} is gone")
    submission.account = account.name
    submission.domains = tuple(account.domains)  # what the signer may sign for (dkim.py)
    submission.plan = plan = Plan(
        recipients=list(submission.recipients),
        message_class=header.message_class,
        tags=list(header.tags),
        flags=header.flags,
        bcc=submission.recipients[0] if header.bcc else None,
    )
    rules.run(rules.EOM, submission, account.settings, [control_headers])  # strips the header
    accepted = Accepted(plan=plan, record=_record(submission), header_edits=list(plan.header_edits))
    accepted.record.parent = header.parent
    if header.tracking and context.tracking is not None:
        accepted.body = tracking.track_for(
            submission,
            context.tracking,
            header.tracking,
            submission.recipients[0],
            message_id=header.parent,
        )
    _seal(submission, account.settings, context, accepted, header.track_bounces)
    context.messages.record(accepted.record)
    return accepted


def spam_check(
    submission: Submission, settings: AccountSettings, context: MilterContext
) -> Refusal | None:
    if context.spam is None:
        return None
    score = context.spam.score(
        submission.message_bytes(),
        submission.sender,
        list(submission.plan.recipients),
        submission.queue_id,
        login=submission.account,
    )
    if score is None:
        return None
    threshold = settings.spam_threshold
    log.info("%s: spam score %.2f (threshold %.2f)", submission.queue_id, score, threshold)
    if score >= threshold:
        return Refusal(
            "550",
            "5.7.1",
            f"Message refused as spam (score {score:.1f}, limit "
            f"{threshold:.1f}); change the content that makes it look like spam",
        )
    return None


def message_track_bounces(submission: Submission) -> bool | None:
    """The send API's per-message `trackbounces`: the first X-CloudMTA-Track-Bounces header,
    which the API puts on top of every message it sends ("true", "false", or "default" when
    the request has none); None for "default", anything unreadable, or no header. Only that
    first copy is read: any other is the client's own, written into its `mime`, and is never
    taken for the API's. Only read for mail from the API's listener (API_LISTENER), where the
    session is the account's own; the rule control_headers strips every copy of the header
    from every message, so a client elsewhere can neither set nor leak it."""
    values = submission.header_values(TRACK_BOUNCES_HEADER)
    if not values:
        return None
    return {"true": True, "false": False}.get(values[0].strip().lower())


def _return_path(submission: Submission, track_bounces: bool, context: MilterContext) -> str:
    if not track_bounces or context.bounce_address is None:
        return ""
    sender_domain = domain_of(submission.sender) or _author_domain(submission, submission.plan)
    if not sender_domain or not submission.queue_id:
        return ""
    return_path_domain = (
        context.domains.return_path_domain(sender_domain, context.settings)
        if context.domains is not None
        else context.settings.bounce_domain
    )
    return context.bounce_address(
        submission.queue_id,
        sender_domain,
        context.secrets.current("bounce_key_file")
        if context.secrets is not None
        else context.bounce_secret,
        return_path_domain,
    )


def _author_domain(submission: Submission, plan: Plan) -> str:
    """The domain of the From header as it will leave. After a From rewrite that is the MAIL
    FROM address's (rule sender checked it), never the original From's: the client wrote that
    one, and rule sender did not check it."""
    if any(edit.name.lower() == "from" and edit.value for edit in plan.header_edits):
        return domain_of(submission.sender)
    found = submission.authors()
    return domain_of(found[0][1]) if found else ""


def _record(submission: Submission) -> MessageRecord:
    plan = submission.plan
    message_ids = submission.header_values("Message-ID")
    return MessageRecord(
        queue_id=submission.queue_id,
        account=submission.account,
        envelope_sender=submission.sender,
        recipients=list(plan.recipients),
        size=submission.size,
        envelope_params=list(submission.sender_params),
        recipient_params=dict(submission.recipient_params),
        header_message_id=message_ids[0].strip()[:998] if message_ids else "",
        tags=list(plan.tags),
        message_class=plan.message_class,
        flags=plan.flags,
        bcc=plan.bcc or "",
        blocked={b.recipient: b.reason for b in plan.blocked},
    )


def _store(submission: Submission, accepted: Accepted, context: MilterContext) -> None:
    """The record, the tag counts, the count against policyd's quotas (only a message that
    passed every rule) and the count for /metrics in one round trip (write_accepted), then
    the blocked events through the event recorder."""
    plan = accepted.plan
    account = submission.account
    write_accepted(
        context.settings,
        context.messages,
        accepted.record,
        len(plan.recipients),
        submission.size,
        count_usage=context.client is not None,
    )
    if context.events is not None:
        for blocked in plan.blocked:
            record_blocked(
                context.events,
                account,
                submission.queue_id,
                blocked.recipient,
                blocked.reason,
                blocked.details,
                tags=plan.tags,
            )


def write_accepted(
    settings: Settings,
    messages: Messages,
    record: MessageRecord,
    recipients: int,
    size: int,
    *,
    count_usage: bool = True,
) -> None:
    """What the milter writes for an accepted message, in one round trip (Messages.accept):
    its record, its tags on the account's totals and the day's counts, the count against
    policyd's quotas when `count_usage`, and the count for /metrics. bench/redis_memory.py
    writes through it too, so its figures are those of this path."""
    keys = messages.keys
    day_key, day_args = tags_count_call(  # per UTC day and tag, for `txmail stats --tag`
        keys,
        record.account,
        record.accepted_at,
        settings.events.counter_days,
        settings.events.tags_per_day,
    )
    counting = Counting(
        day_key,
        day_args,
        commit_call(settings, keys, record.account, record.queue_id, recipients, size)
        if count_usage
        else None,
    )
    messages.accept(
        record,
        counting,
        also=lambda pipe: count_message(pipe, keys, "accepted"),  # /metrics
    )


class ReturnPaths:
    """Return-path domains of sending domains, each kept `refresh` seconds (as the DKIM signer
    keeps domain records), so a busy domain costs a Redis read every few seconds instead of one
    per message."""

    def __init__(
        self, domains: Domains, refresh: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.domains = domains
        self.refresh = refresh
        self.clock = clock
        self._kept: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def return_path_domain(self, sender_domain: str, settings: Settings) -> str:
        now = self.clock()
        kept = self._kept.get(sender_domain)
        if kept is not None and now - kept[0] < self.refresh:
            return kept[1]
        found = self.domains.return_path_domain(sender_domain, settings)
        with self._lock:
            if len(self._kept) > 10_000:  # bounded: sender domains come from client input
                self._kept.clear()
            self._kept[sender_domain] = (now, found)
        return found


def build_context(settings: Settings) -> MilterContext:
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    ttl = settings.milter.message_ttl_days * 86400
    accounts: AccountCache[Account] = AccountCache(Accounts(client, keys), log=log)
    accounts.start()
    shared_secrets = secrets.shared(settings, client)
    shared_secrets.current("bounce_key_file")  # a key it cannot get: say so at start
    return MilterContext(
        settings=settings,
        client=client,
        keys=keys,
        accounts=accounts,
        messages=Messages(client, keys, ttl),
        suppressions=Suppressions(client, keys),
        spam=SpamChecker.from_settings(settings),
        signer=Signer.from_settings(settings, client),
        domains=ReturnPaths(Domains(client, keys)),
        secrets=shared_secrets,
        bounce_address=bounce_address,
        events=Recorder(
            client,
            keys,
            counter_days=settings.events.counter_days,
            tags_per_day=settings.events.tags_per_day,
        ),
        tracking=TrackingContext.from_settings(settings, shared_secrets),
        copier=copies.build(settings, shared_secrets),
    )
