"""Events: the one shape every outcome takes, and how an event is recorded.

SYNOPSIS
    event = make_event(kind, account, message_id, recipient, details, tags=..., trusted=...)
    Recorder(client, keys, ...).record(event, policy, untrusted_cap=..., counts=...) -> Recorded
    Recorder(client, keys, ...).record_many(events, repeats=...) -> [Recorded, ...]
    record_outcome(recorder, message, kind, recipient, details, policy, ...) -> Recorded

DESCRIPTION
    An event is {"id", "kind", "recipient", "message_id", "timestamp", "account", "tags",
    "details"} (DESIGN.md, Contracts). `kind` is one of KINDS. There is exactly one trusted
    event per (message, recipient, kind), except open and click, which are counted every time
    but go to the stream once; an untrusted report of the same outcome may add one more, marked
    details.trusted = false (below). Because of that rule the id of such an event is derived
    from the account, message, recipient, kind and trust, so whichever process reports it
    first (the maillog follower or the bounce pipe, a retried pipe run included) the id is the
    same and stays stable through retries, dead letters and replays.

    Recording an event (store/scripts/event_record.lua, one call):
      * appends it to the account's stream PREFIX {ACCOUNT}:events, unless it was recorded
        already (PREFIX {ACCOUNT}:seen:QID remembers "KIND:recipient" -> id);
      * counts it per account, UTC day and kind, and per tag, day and kind
        (PREFIX {ACCOUNT}:counts:YYYYMMDD, kept events.counter_days), the account's first
        events.tags_per_day distinct tags of a day each on its own, the rest as "(other)"
        (txmail/stats.py says what the hash holds and how it is read);
      * appends it to its message's own list (PREFIX {ACCOUNT}:message:QID:events), which
        lives as long as the message record and keeps at most MESSAGE_EVENTS_MAX events, so
        GET /v1/messages/{id} finds the events of a message of any age in one read, however
        many events the account had since and whatever the stream's trimming took
        (message_events());
    then, outside the script:
      * a trusted hard bounce whose reason is in the account's suppress_reasons (and came from a
        status code or a known MTA phrase, details.reason_source, unless the account's
        suppress_guessed_reasons lets guesses count too), or a trusted
        complaint (suppress_complaints), puts the recipient on the account's bounce list with
        the reason, the time and the event id (expiring after suppression_days when set). Soft
        bounces never suppress. This runs again when a duplicate is reported, so a process that
        died between the two steps cannot leave a hard bounce unsuppressed;
      * a trusted delivery, bounce or complaint feeds the account's reputation counters once,
        through the outcome hook the daemon passes in (Recorder(outcome_hook=...), built by
        txmail.accounts.reputation.outcome_hook): a "counted:" mark in the seen hash, checked
        and set by the hook in the call that counts (reputation_count.lua), makes a retry
        count what a crash left uncounted and nothing twice, and keeps the bounce pipe and
        the maillog follower (which marks the same way in maillog_batch.lua) from both
        counting one outcome.

    Untrusted events (a bounce whose address token was forged or missing) are recorded with
    details.trusted = false, are delivered to the webhook like any other, and never suppress
    anybody nor count against the account's reputation. They have ids and "seen" fields of
    their own ("untrusted:KIND:recipient"), so a forged report that arrives first never takes
    the place of the genuine one: the trusted outcome is always recorded and posted. An
    untrusted one is not recorded once the trusted outcome is there, and at most
    `untrusted_cap` of them are recorded per message (Recorder.record), so forged reports
    cannot flood an account's webhook.

    What counts against the reputation is the caller's to say (record(counts=...)): the bounce
    pipe counts a complaint only when a mailbox provider's feedback loop signed the report, and
    a bounce only when Postfix did not see the message delivered to that recipient, because a
    recipient can write a DSN or an ARF report about themselves, and one per thousand
    recipients would suspend an account.

    record_outcome() is the one way a delivery outcome of a message txmail sent becomes an
    event, for both processes that learn outcomes: the maillog follower (what Postfix saw,
    always trusted) and the bounce pipe (what a returned mail says, trusted as far as its
    token vouches). It makes the event under the id the client knows (a per-recipient copy's
    parent's) with the message's account and tags, and records it as above; what differs
    between the two (the details, trust, what counts, the untrusted cap) is its arguments.

    The stream is capped (events.stream_max) by the webhooks dispatcher only, and only below
    what its consumer group has acknowledged, so an event is never trimmed before it has been
    delivered or dead-lettered (store/scripts/events_trim.lua).

FAILURE
    StoreUnavailable (a TemporaryFailure) when Redis is down: the caller keeps what it was
    recording and tries again (the bounce pipe exits 75, the maillog follower keeps its
    offset). Recording twice is harmless.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.cluster

from txmail import logs
from txmail.accounts.settings import AccountSettings
from txmail.errors import TemporaryFailure
from txmail.store import Client, Keys, decoded_entries, guard, scripts
from txmail.store.messages import MessageRecord
from txmail.store.suppressions import Suppressions

log = logging.getLogger("txmail.events")

KINDS = ("delivery", "bounce", "soft_bounce", "open", "click", "complaint", "blocked")
REPEATING = ("open", "click")  # counted every time, sent once
WEBHOOK_GROUP = "webhooks"
DEFAULT_SUPPRESS_REASONS = ("userunknown", "hostunknown", "hasmoved")
MAX_FIELD = 1000  # cap what untrusted input can put into one detail
# Events a message's own list keeps (event_record.lua): a message to 1,000 recipients (the
# most one request of the HTTP API takes) has room for one outcome each, and an ordinary one
# for every outcome, open and click of every recipient. An event is a few hundred bytes (what
# a remote server writes into its details is cut at MAX_FIELD characters), so one message's
# list is bounded whatever its recipients' servers answer.
MESSAGE_EVENTS_MAX = 1000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# (account, kind, (seen hash, "counted:" field)) -> anything; counts unless the mark is set and
# sets it in the same call (accounts.reputation.outcome_hook); raises on Redis trouble
OutcomeHook = Callable[[str, str, tuple[str, str]], Any]


@dataclass
class Event:
    id: str
    kind: str
    recipient: str
    message_id: str
    timestamp: str
    account: str
    tags: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "recipient": self.recipient,
                "message_id": self.message_id,
                "timestamp": self.timestamp,
                "account": self.account,
                "tags": self.tags,
                "details": self.details,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Event:
        raw = json.loads(text)
        return cls(
            id=raw["id"],
            kind=raw["kind"],
            recipient=raw.get("recipient", ""),
            message_id=raw.get("message_id", ""),
            timestamp=raw.get("timestamp", ""),
            account=raw.get("account", ""),
            tags=list(raw.get("tags") or []),
            details=dict(raw.get("details") or {}),
        )

    @property
    def trusted(self) -> bool:
        return self.details.get("trusted", True) is not False


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def stable_event_id(
    account: str, message_id: str, recipient: str, kind: str, trusted: bool = True
) -> str:
    """The id of the one event of (message, recipient, kind): the same wherever it is seen.
    An untrusted report of the same outcome has an id of its own (see the module text)."""
    scope = "" if trusted else "\0untrusted"
    digest = hashlib.sha256(f"{account}\0{message_id}\0{recipient.lower()}\0{kind}{scope}".encode())
    return "evt_" + _base32(digest.digest()[:16])[:26]


def random_event_id(now: float) -> str:
    """A time-ordered id (ULID layout: 48 bits of milliseconds, 80 random bits)."""
    value = (int(now * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "evt_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def iso_timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def utc_day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


def event_day(event: Event) -> str:
    """The UTC day of an event's timestamp, as utc_day() writes it."""
    return event.timestamp[:10].replace("-", "")


def cap_details(details: dict[str, Any]) -> dict[str, Any]:
    """Details with long strings cut: they come from remote MTAs."""
    return {k: (v[:MAX_FIELD] if isinstance(v, str) else v) for k, v in details.items()}


def make_event(
    kind: str,
    account: str,
    message_id: str,
    recipient: str,
    details: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    now: float | None = None,
    trusted: bool = True,
) -> Event:
    """A new event; its id is stable for the kinds that happen once per recipient."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    now = time.time() if now is None else now
    event_id = (
        random_event_id(now)
        if kind in REPEATING
        else stable_event_id(account, message_id, recipient, kind, trusted)
    )
    details = cap_details(dict(details or {}))
    if not trusted:
        details["trusted"] = False
    return Event(
        id=event_id,
        kind=kind,
        recipient=recipient[:320].lower(),
        message_id=message_id,
        timestamp=iso_timestamp(now),
        account=account,
        tags=list(tags or []),
        details=details,
    )


@dataclass(frozen=True)
class Recorded:
    event_id: str
    new: bool  # False: this (message, recipient, kind) had been recorded before
    suppressed: bool = False
    capped: bool = False  # an untrusted event not recorded: the message has its cap of them


@dataclass(frozen=True)
class SuppressionPolicy:
    """What in an account's settings decides suppression (accounts.settings)."""

    reasons: tuple[str, ...] = DEFAULT_SUPPRESS_REASONS
    complaints: bool = True
    days: int = 0
    guesses: bool = False  # suppress_guessed_reasons

    @classmethod
    def from_settings(cls, settings: AccountSettings) -> SuppressionPolicy:
        return cls(
            reasons=settings.suppress_reasons,
            complaints=settings.suppress_complaints,
            days=settings.suppression_days,
            guesses=settings.suppress_guessed_reasons,
        )

    def suppresses(self, event: Event) -> bool:
        if not event.trusted:
            return False
        if event.kind == "complaint":
            return self.complaints
        if event.kind != "bounce" or event.details.get("reason") not in self.reasons:
            return False
        # A reason the parser guessed (no specific status code, no known MTA wording) stops
        # mail to an address only when the account says guesses may (reason_source absent:
        # an event recorded before sources were kept, judged as before).
        return self.guesses or event.details.get("reason_source") != "guess"


COUNTED_KINDS = ("delivery", "bounce", "complaint")


def record_call(
    keys: Keys,
    event: Event,
    day: str,
    seen_ttl: int,
    counter_ttl: int,
    untrusted_cap: int = 0,
    tags_per_day: int = 100,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of store/scripts/event_record.lua for `event` (documented there)."""
    trusted_field = f"{event.kind}:{event.recipient}"
    return (
        [
            keys.events(event.account),
            keys.event_seen(event.account, event.message_id or "-"),
            keys.event_counts(event.account, day),
            keys.message_events(event.account, event.message_id or "-"),
            keys.message(event.account, event.message_id or "-"),
            keys.event_totals(event.account),
        ],
        [
            trusted_field if event.trusted else f"untrusted:{trusted_field}",
            event.id,
            event.to_json(),
            seen_ttl,
            counter_ttl,
            "0" if event.kind in REPEATING else "1",
            event.kind,
            "" if event.trusted else trusted_field,
            0 if event.trusted else max(0, untrusted_cap),
            MESSAGE_EVENTS_MAX,
            *event.tags,
            max(0, tags_per_day),  # last: see event_record.lua
        ],
    )


def _announce(event: Event, event_id: str) -> None:
    """record()'s line for a new event (the reason, when there is one, after the kind)."""
    log.info(
        "%s: event %s %s to=<%s> id=%s%s",
        event.message_id or "NOQUEUE",
        event.kind,
        event.details.get("reason", ""),
        event.recipient,
        event_id,
        "" if event.trusted else " untrusted",
        extra=logs.about(event.message_id, event.account),
    )


def announce(event: Event, event_id: str) -> None:
    """The log line of a new event, as record() writes it (for a caller recording in a batch
    script of its own)."""
    _announce(event, event_id)


def _announcer(logger: logging.Logger) -> Callable[[Event, str], None]:
    """record_many()'s line for a new open or click, in its caller's log."""

    def announce(event: Event, event_id: str) -> None:
        logger.info(
            "%s: event %s to=<%s> id=%s",
            event.message_id,
            event.kind,
            event.recipient,
            event_id,
            extra=logs.about(event.message_id, event.account),
        )

    return announce


class Recorder:
    """Records events of any account into Redis. Clock and outcome hook are arguments."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        seen_ttl: int = 30 * 86400,
        counter_days: int = 400,
        outcome_hook: OutcomeHook | None = None,
        clock: Callable[[], float] = time.time,
        tags_per_day: int = 100,
    ) -> None:
        self.client = client
        self.keys = keys
        self.seen_ttl = seen_ttl
        self.counter_ttl = counter_days * 86400
        self.tags_per_day = tags_per_day
        self.outcome_hook = outcome_hook
        self.clock = clock
        self.suppressions = Suppressions(client, keys, clock=clock)
        self._record = scripts.get(client, "event_record")

    def record(
        self,
        event: Event,
        policy: SuppressionPolicy | None = None,
        untrusted_cap: int = 0,
        counts: bool = True,
    ) -> Recorded:
        """Record `event` (see the module text); safe to call again for the same event.
        `untrusted_cap` > 0: an untrusted event is not recorded once its message has that
        many untrusted events. `counts` False: a trusted delivery, bounce or complaint is
        recorded and suppresses, but does not feed the reputation counters (the caller
        knows its source cannot be told from the recipient's own word)."""
        keys, args = record_call(
            self.keys,
            event,
            utc_day(self.clock()),
            self.seen_ttl,
            self.counter_ttl,
            untrusted_cap,
            self.tags_per_day,
        )
        with guard(f"{event.message_id}: recording a {event.kind} event"):
            reply = self._record(keys=keys, args=args)
        return self._recorded(event, reply, keys, args, policy, untrusted_cap, counts)

    def record_many(
        self,
        events: Sequence[Event],
        repeats: Callable[[Event], bool] | None = None,
        logger: logging.Logger | None = None,
    ) -> list[Recorded]:
        """Record `events` in order, each as record(event) does (no suppression policy):
        what the tracker does with a batch of opens and clicks. `repeats(event)` True: an
        open or click recorded before is appended to the stream all the same (an account's
        webhook_every_open). On a single Redis each new event is logged to `logger` (the
        caller's) as "QUEUE_ID: event KIND to=<RECIPIENT> id=EVENT_ID".

        On a single Redis the script calls go in one pipeline, and the repeats in a second,
        whatever the batch's size; each event is counted on the UTC day of its own
        timestamp, so a batch written late still counts on the day it happened. On a Redis
        Cluster each event is one record() call (counted on the day it is recorded), and
        Redis failing part-way raises PartlyRecorded, which says how many were recorded."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            return self._record_one_by_one(events, repeats)
        calls = [
            record_call(
                self.keys,
                event,
                event_day(event),
                self.seen_ttl,
                self.counter_ttl,
                tags_per_day=self.tags_per_day,
            )
            for event in events
        ]
        with guard("recording opens and clicks"):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                self._record(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
            again = [
                event
                for event, (state, _, _) in zip(events, replies, strict=True)
                if int(state) == 2 and repeats is not None and repeats(event)
            ]
            if again:
                pipe = self.client.pipeline(transaction=False)
                for event in again:
                    pipe.xadd(self.keys.events(event.account), {"event": event.to_json()})
                pipe.execute()
        announce = _announcer(logger or log)
        return [
            self._recorded(event, reply, keys, args, announce=announce)
            for event, reply, (keys, args) in zip(events, replies, calls, strict=True)
        ]

    def _record_one_by_one(
        self, events: Sequence[Event], repeats: Callable[[Event], bool] | None
    ) -> list[Recorded]:
        done: list[Recorded] = []
        for event in events:
            try:
                recorded = self.record(event)
                if not recorded.new and repeats is not None and repeats(event):
                    with guard(f"{event.message_id}: posting a repeated {event.kind}"):
                        self.client.xadd(
                            self.keys.events(event.account), {"event": event.to_json()}
                        )
            except TemporaryFailure as exc:
                raise PartlyRecorded(len(done)) from exc
            done.append(recorded)
        return done

    def _recorded(
        self,
        event: Event,
        reply: Any,
        keys: list[str],
        args: list[Any],
        policy: SuppressionPolicy | None = None,
        untrusted_cap: int = 0,
        counts: bool = True,
        announce: Callable[[Event, str], None] | None = None,
    ) -> Recorded:
        """What follows event_record.lua's `reply` for `event` (called with `keys`, `args`):
        the log line (`announce`, else record()'s), suppression and the reputation count."""
        unique = event.kind not in REPEATING
        state, event_id, counted = reply
        state = int(state)
        if state == 3:
            log.info(
                "%s: untrusted %s to=<%s> not recorded: the message has %d untrusted "
                "events already",
                event.message_id or "NOQUEUE",
                event.kind,
                event.recipient,
                untrusted_cap,
            )
            return Recorded(event_id="", new=False, capped=True)
        if state == 1:
            (announce or _announce)(event, event_id)
        suppressed = False
        if unique and policy is not None and policy.suppresses(event):
            expires = self.clock() + policy.days * 86400 if policy.days else None
            self.suppressions.add(
                event.account,
                "bounce",
                event.recipient,
                str(event.details.get("reason") or event.kind),
                event_id=event_id,
                expires_at=expires,
            )
            suppressed = True
            if state == 1:
                log.info(
                    "%s: suppress: <%s> on the bounce list of %s (%s)",
                    event.message_id,
                    event.recipient,
                    event.account,
                    event.details.get("reason"),
                )
        if (
            counts
            and unique
            and event.trusted
            and event.kind in COUNTED_KINDS
            and not int(counted)
            and self.outcome_hook is not None
        ):
            # the hook checks the mark and sets it with its count, in one call
            self.outcome_hook(event.account, event.kind, (keys[1], f"counted:{args[0]}"))
        return Recorded(event_id=event_id, new=state == 1, suppressed=suppressed)

    def count_attempt(self, account: str, message_id: str, recipient: str) -> int:
        """One more delivery attempt that failed for (message, recipient); how many so far."""
        key = self.keys.event_seen(account, message_id)
        with guard(f"{message_id}: counting a delivery attempt"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(key, f"attempts:{recipient.lower()}", 1)
            pipe.expire(key, self.seen_ttl)
            attempts, _ = pipe.execute()
        return int(attempts)


def record_outcome(
    recorder: Recorder,
    message: MessageRecord,
    kind: str,
    recipient: str,
    details: dict[str, Any],
    policy: SuppressionPolicy,
    *,
    trusted: bool = True,
    counts: Callable[[Event], bool] | None = None,
    untrusted_cap: int = 0,
    now: float | None = None,
) -> Recorded:
    """Record one outcome (`kind`: delivery, bounce, soft_bounce, complaint) of `recipient`
    of `message`: its event, then suppression and reputation as Recorder.record does.

    `trusted` False: the outcome is the sender's word only (untrusted, see the module text),
    recorded within `untrusted_cap` per message. `counts` says whether a trusted outcome may
    count toward the account's reputation, asked of the event (its recipient as recorded);
    None: it does. `now` defaults to the recorder's clock."""
    event = make_event(
        kind,
        message.account,
        message.message_id,  # a per-recipient copy's: its parent's, the client's id
        recipient,
        details,
        tags=message.tags,
        now=recorder.clock() if now is None else now,
        trusted=trusted,
    )
    return recorder.record(
        event,
        policy,
        untrusted_cap=untrusted_cap,
        counts=trusted and (counts is None or counts(event)),
    )


class PartlyRecorded(TemporaryFailure):
    """Redis failed after `done` events of a batch were recorded (Recorder.record_many on a
    Redis Cluster): the caller retries the rest."""

    def __init__(self, done: int) -> None:
        super().__init__(f"Redis failed after {done} events")
        self.done = done


@dataclass(frozen=True)
class MessageEvents:
    events: list[Event]
    unlisted: int  # events recorded after the list was full: in the stream only


def message_events(client: Client, keys: Keys, account: str, message_id: str) -> MessageEvents:
    """The events of one message (the id the client knows) in the order they were recorded,
    from its own list: one round trip, whatever the message's age while its record lives.
    Only the first occurrence of a repeated open or click is listed."""
    with guard(f"{message_id}: reading its events"):
        pipe = client.pipeline(transaction=False)
        pipe.lrange(keys.message_events(account, message_id), 0, MESSAGE_EVENTS_MAX - 1)
        pipe.hget(keys.event_seen(account, message_id), "unlisted")
        listed, unlisted = pipe.execute()
    found: list[Event] = []
    for raw in listed:
        try:
            found.append(Event.from_json(raw))
        except (KeyError, ValueError, TypeError):
            log.warning("%s: skipping an unreadable listed event", message_id)
    return MessageEvents(found, int(unlisted or 0))


def stream_events(
    client: Client, keys: Keys, account: str, start: str = "-", count: int = 1000
) -> list[tuple[str, Event]]:
    """Events of an account from the stream, oldest first, as (stream id, event)."""
    with guard(f"reading the events of {account}"):
        rows = decoded_entries(client.xrange(keys.events(account), min=start, count=count))
    found: list[tuple[str, Event]] = []
    for stream_id, fields in rows:
        try:
            found.append((stream_id, Event.from_json(fields["event"])))
        except (KeyError, ValueError, TypeError):
            log.warning("%s: skipping an unreadable entry %s", account, stream_id)
    return found
