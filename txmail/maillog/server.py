"""txmail maillog: turn Postfix's delivery log lines into delivery and deferral events.

SYNOPSIS
    txmail maillog            (started by `txmail up`)

DESCRIPTION
    Follows Postfix's log where maillog.source says: a file (maillog.path, else
    postfix.maillog, the maillog_file of txmail's own Postfix) with txmail.maillog.follower,
    or the systemd journal with txmail.maillog.journal; and for every recipient status line
    of a message txmail recorded (txmail.maillog.lines):

      status=sent              a `delivery` event (details: status, diagnostic = the remote
                               server's reply, remote_mta, class);
      status=deferred          a `soft_bounce` event on the recipient's first deferral only
                               (details: attempts so far, status, reason, diagnostic); later
                               deferrals only count attempts;
      status=bounced/expired   a `bounce` event (details: status, reason, diagnostic).

    Lines of queue ids txmail never recorded (bounce notices Postfix made, forwarded bounces,
    mail from elsewhere) give nothing. The reason word comes from the bounce parser's
    classifier (txmail.outcomes), so a bounce seen here and again in the DSN the
    bounce pipe reads has the same reason; both record it with txmail.events.record_outcome,
    which keeps exactly one event per message, recipient and kind, whichever of the two sees
    it first (same event id either way).

    On a single Redis, a batch of lines is one call of store/scripts/maillog_batch.lua (cut
    once a call's items touch BATCH_KEYS keys: a script call blocks Redis while it runs, and a
    line's items touch from a few keys to 20 and more, by its kind and the account's
    reputation window), after one call that reads the batch's message
    records (messages_get.lua): the events, the attempts of deferrals, the reputation counts
    with their "counted:" marks and the suppressions of the batch, and the follower's position
    after it (PREFIX maillog:position:NODE, txmail.maillog.position). Redis holds both or
    neither, so after a crash of the machine under appendfsync everysec the follower reads
    again exactly the lines whose writes were lost; reading a line again records nothing twice
    (event ids per message, recipient and kind; an attempt is counted only when its delay= is
    later than the last one counted). The reputation guard's judgement of the new totals
    (warnings, suspension) follows the call. On a Redis Cluster each line is recorded in
    calls of its own and the position is saved in maillog.offset_file after them.
    Either way a restart resumes where the last one stopped and nothing is skipped.

FAILURE
    Redis down: the lines not yet recorded are read again once it answers (one log line per
    outage, then retries every few seconds). Never exits on bad input.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.cluster

from txmail import logs, store
from txmail.accounts import reputation
from txmail.accounts import settings as account_settings
from txmail.accounts.settings import AccountSettings
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.events import (
    COUNTED_KINDS,
    Event,
    Recorder,
    SuppressionPolicy,
    announce,
    make_event,
    record_call,
    record_outcome,
    utc_day,
)
from txmail.histograms import node_name
from txmail.maillog.follower import LogFollower
from txmail.maillog.journal import JournalFollower
from txmail.maillog.lines import DeliveryStatus, parse_line
from txmail.maillog.position import Positions, RedisPosition
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import Finding
from txmail.outcomes.reasons import command_in
from txmail.store import scripts
from txmail.store.messages import MessageRecord, Messages

log = logging.getLogger("txmail.maillog")

CACHE_SIZE = 10_000
BATCH_KEYS = 4000  # a maillog_batch.lua call is cut once its items touch this many keys
RETRY_DELAY = 2.0
SETTINGS_SECONDS = 10.0

Follower = LogFollower | JournalFollower


class SettingsCache:
    """Accounts' settings (None: no such account), each read again every SETTINGS_SECONDS:
    they decide suppression and the reputation guard's thresholds, which operators change
    rarely, while every event of a busy account needs them."""

    def __init__(
        self, client: store.Client, keys: store.Keys, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        self.accounts: dict[str, tuple[float, AccountSettings | None]] = {}

    def get(self, account: str) -> AccountSettings | None:
        now = self.clock()
        cached = self.accounts.get(account)
        if cached and 0 <= now - cached[0] < SETTINGS_SECONDS:
            return cached[1]
        with store.guard(f"reading the settings of {account}"):
            raw = store.decoded_hash(self.client.hgetall(self.keys.account(account)))
        found = account_settings.from_fields(raw) if raw else None
        self.accounts[account] = (now, found)
        return found


class Batch:
    """The items of one maillog_batch.lua call: their ops, KEYS and ARGV."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.keys: list[str] = []
        self.args: list[Any] = []

    def add(self, op: str, keys: list[str], args: list[Any]) -> int:
        """Add an item; the index of its reply."""
        self.ops.append(op)
        self.keys += keys
        self.args += [op, len(keys), len(args), *args]
        return len(self.ops) - 1


@dataclass
class Planned:
    """One status line's event in a batch, and the indexes of its items' replies."""

    record: MessageRecord
    recipient: str
    event: Event | None = None
    recorded: int | None = None
    attempt: int | None = None
    counted: int | None = None
    suppressed: int | None = None
    settings: AccountSettings | None = field(default=None, repr=False)


class StatusRecorder:
    """Turns parsed status lines into events. Redis, recorder, clock and the settings cache
    (shared with the recorder's reputation hook) are arguments."""

    def __init__(
        self,
        client: store.Client,
        keys: store.Keys,
        messages: Messages,
        recorder: Recorder,
        clock: Callable[[], float] = time.time,
        settings: SettingsCache | None = None,
        position_key: str = "",
    ) -> None:
        self.client = client
        self.keys = keys
        self.messages = messages
        self.recorder = recorder
        self.clock = clock
        # where the follower's position goes with each batch (build(): this node's)
        self.position_key = position_key or keys.maillog_position("-")
        # Long queue ids are never reused, so both answers can be cached.
        self.records: OrderedDict[str, MessageRecord | None] = OrderedDict()
        self.account_settings = settings or SettingsCache(client, keys, clock)

    def _remember(self, queue_id: str, record: MessageRecord | None) -> None:
        self.records[queue_id] = record
        if len(self.records) > CACHE_SIZE:
            self.records.popitem(last=False)

    def _record(self, queue_id: str) -> MessageRecord | None:
        if queue_id in self.records:
            self.records.move_to_end(queue_id)
            return self.records[queue_id]
        record = self.messages.get(queue_id)
        self._remember(queue_id, record)
        return record

    def prefetch(self, queue_ids: list[str]) -> None:
        """Read the records of a batch of lines' messages in two round trips, not two each."""
        wanted = list(dict.fromkeys(q for q in queue_ids if q not in self.records))
        for queue_id, record in self.messages.get_many(wanted).items():
            self._remember(queue_id, record)

    def settings(self, account: str) -> AccountSettings | None:
        """The account's settings (None: no such account), from the cache."""
        return self.account_settings.get(account)

    def _policy(self, account: str) -> SuppressionPolicy:
        return SuppressionPolicy.from_settings(
            self.settings(account) or account_settings.from_fields({})
        )

    def handle(self, status: DeliveryStatus) -> str | None:
        """Record what one status line says, in calls of its own (a Redis Cluster: see
        record_statuses); the event id, or None when it says nothing."""
        record = self._record(status.queue_id)
        if record is None:
            return None
        recipient, kind, details = self._outcome(status, record)
        if kind == "soft_bounce":
            details["attempts"] = self.recorder.count_attempt(
                record.account, record.message_id, recipient
            )
        # Every line logged from here on names the message's queue id and account (logs.py).
        with logs.concerning(record.queue_id, record.account):
            result = record_outcome(
                self.recorder,
                record,
                kind,
                recipient,
                details,
                self._policy(record.account),
                now=self.clock(),
            )
            if not result.new and kind == "soft_bounce":
                self._deferred_again(record, recipient, details.get("attempts"))
        return result.event_id

    @staticmethod
    def _deferred_again(record: MessageRecord, recipient: str, attempts: Any) -> None:
        log.info(
            "%s: deferred again to=<%s> (attempt %s); soft_bounce was sent once",
            record.queue_id,
            recipient,
            attempts,
        )

    def _outcome(
        self, status: DeliveryStatus, record: MessageRecord
    ) -> tuple[str, str, dict[str, Any]]:
        """(recipient, event kind, details) of a status line of `record`'s message."""
        recipient = status.original_recipient or status.recipient
        details: dict[str, Any] = {
            "status": status.dsn,
            "diagnostic": status.text,
            "class": record.message_class,
            "source": "maillog",
        }
        if status.remote_mta:
            details["remote_mta"] = status.remote_mta
        if status.status == "sent":
            kind = "delivery"
        else:
            found = finish(
                [
                    Finding(
                        recipient=recipient,
                        diagnostic=status.text,
                        status=status.dsn,
                        command=command_in(status.text),
                        remote_mta=status.remote_mta,
                        temporary=status.status == "deferred",
                    )
                ],
                "maillog",
            )
            details["reason"] = found[0].reason if found else "undefined"
            details["reason_source"] = found[0].reason_source if found else "guess"
            if status.status == "expired":
                details["reason"], details["reason_source"] = "expired", "status"
            kind = "soft_bounce" if status.status == "deferred" else "bounce"
        return recipient, kind, details

    # -- one script call per batch -------------------------------------------------------

    def record_statuses(
        self, statuses: list[DeliveryStatus], position: str | None = None
    ) -> list[str | None]:
        """Record what `statuses` say; their event ids (None: the line says nothing). On a
        single Redis the lines go in maillog_batch.lua calls of about BATCH_KEYS keys, the last
        one also writing `position` (the follower's, after these lines) to self.position_key, so the
        events and the position are stored together or not at all. On a Redis Cluster (one
        script cannot reach every account's slot) each line is handle()d and `position` is
        the caller's to save."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            return [self.handle(status) for status in statuses]
        found: list[str | None] = []
        batch, planned = Batch(), []
        for index, status in enumerate(statuses):
            planned.append(self._plan(status, batch))
            if len(batch.keys) >= BATCH_KEYS and index < len(statuses) - 1:
                found += self._record_batch(batch, planned, None)
                batch, planned = Batch(), []
        return found + self._record_batch(batch, planned, position)

    def _record_batch(
        self, batch: Batch, planned: list[Planned | None], position: str | None
    ) -> list[str | None]:
        """One maillog_batch.lua call of `batch` (the items of the lines `planned`), then
        what follows it for each line."""
        if not batch.ops and position is None:
            return [None] * len(planned)
        with store.guard(f"recording {len(batch.ops)} items of the maillog"):
            replies = scripts.get(self.client, "maillog_batch")(
                keys=[self.position_key, *batch.keys],
                args=[position or "", len(batch.ops), *batch.args],
            )
        return [None if plan is None else self._settle(plan, replies) for plan in planned]

    def _plan(self, status: DeliveryStatus, batch: Batch) -> Planned | None:
        """Add the items of one status line to `batch` (maillog_batch.lua documents them)."""
        record = self._record(status.queue_id)
        if record is None:
            return None
        recipient, kind, details = self._outcome(status, record)
        settings = self.settings(record.account)
        policy = SuppressionPolicy.from_settings(settings or account_settings.from_fields({}))
        now = self.clock()
        plan = Planned(record, recipient)
        if kind == "soft_bounce":
            details["attempts"] = None  # the script writes the count in
            plan.attempt = batch.add(
                "attempt",
                [self.keys.event_seen(record.account, record.message_id)],
                [recipient.lower(), status.delay, self.recorder.seen_ttl],
            )
        plan.event = event = make_event(
            kind, record.account, record.message_id, recipient, details, record.tags, now
        )
        keys, args = record_call(
            self.keys,
            event,
            utc_day(now),
            self.recorder.seen_ttl,
            self.recorder.counter_ttl,
            tags_per_day=self.recorder.tags_per_day,
        )
        plan.recorded = batch.add("event", keys, args)
        if kind in COUNTED_KINDS and settings is not None:
            plan.settings = settings
            counted_keys, counted_args = reputation.record_call(
                self.keys, record.account, reputation.COUNTED[kind], settings, now
            )
            plan.counted = batch.add(
                "reputation", [keys[1], *counted_keys], [f"counted:{args[0]}", *counted_args]
            )
        if policy.suppresses(event):
            entry = self.recorder.suppressions.entry(
                "bounce",
                event.recipient,
                str(event.details.get("reason") or event.kind),
                event_id=event.id,
                expires_at=now + policy.days * 86400 if policy.days else None,
            )
            plan.suppressed = batch.add(
                "suppress", *self.recorder.suppressions.add_call(record.account, entry)
            )
        return plan

    def _settle(self, plan: Planned, replies: list[Any]) -> str:
        """What follows the script for one line: its log lines and the reputation guard's
        judgement of the account's new totals."""
        record, event = plan.record, plan.event
        assert event is not None and plan.recorded is not None
        state, event_id, _ = replies[plan.recorded]
        state = int(state)
        with logs.concerning(record.queue_id, record.account):
            if state == 1:
                announce(event, event_id)
            if plan.suppressed is not None and state == 1:
                log.info(
                    "%s: suppress: <%s> on the bounce list of %s (%s)",
                    record.queue_id,
                    event.recipient,
                    record.account,
                    event.details.get("reason"),
                )
            if state != 1 and plan.attempt is not None:
                self._deferred_again(record, plan.recipient, replies[plan.attempt])
            row = replies[plan.counted] if plan.counted is not None else None
            if row and plan.settings is not None:
                reputation.act_on(
                    self.client, self.keys, record.account, row, plan.settings, self.clock()
                )
        return str(event_id)


def handle_lines(lines: list[str], recorder: StatusRecorder, position: str | None = None) -> int:
    """Record every status line of `lines`, and on a single Redis the follower's `position`
    after them with their events; how many events (new or seen) they gave."""
    statuses = [status for status in map(parse_line, lines) if status is not None]
    recorder.prefetch([status.queue_id for status in statuses])
    return sum(1 for found in recorder.record_statuses(statuses, position) if found)


def build(
    settings: Settings, client: store.Client, clock: Callable[[], float] = time.time
) -> StatusRecorder:
    keys = store.Keys(settings.redis.prefix)
    ttl = settings.milter.message_ttl_days * 86400
    cache = SettingsCache(client, keys, clock)
    recorder = Recorder(
        client,
        keys,
        seen_ttl=ttl,
        counter_days=settings.events.counter_days,
        tags_per_day=settings.events.tags_per_day,
        outcome_hook=reputation.outcome_hook(client, keys, settings_of=cache.get),
        clock=clock,
    )
    return StatusRecorder(
        client,
        keys,
        Messages(client, keys, ttl),
        recorder,
        clock,
        cache,
        position_key=keys.maillog_position(node_name(settings)),
    )


def positions_for(settings: Settings, client: store.Client) -> Positions | None:
    """Where the follower's position is kept: in Redis with the events (None: a Redis
    Cluster, where it stays in maillog.offset_file; see txmail.maillog.position)."""
    if isinstance(client, redis.cluster.RedisCluster):
        return None
    keys = store.Keys(settings.redis.prefix)
    return RedisPosition(
        client,
        keys.maillog_position(node_name(settings)),
        settings.path(settings.maillog.offset_file),
    )


def follower_for(
    settings: Settings, journalctl: str = "journalctl", positions: Positions | None = None
) -> Follower:
    """The follower of maillog.source: a log file's, or the journal's."""
    position_file = settings.path(settings.maillog.offset_file)
    if settings.maillog.source == "journald":
        return JournalFollower(
            position_file,
            settings.maillog.journal_namespace,
            settings.maillog.journal_match,
            journalctl,
            since_days=settings.milter.message_ttl_days,
            positions=positions,
        )
    return LogFollower(
        settings.maillog_path,
        position_file,
        settings.maillog.rotate_grace,
        positions=positions,
    )


def describe(settings: Settings) -> str:
    """Where the follower reads, for its first log line and `txmail doctor`."""
    if settings.maillog.source == "journald":
        namespace = settings.maillog.journal_namespace
        where = f"the journal{f' (namespace {namespace})' if namespace else ''}"
        return f"{where}, entries matching {' or '.join(settings.maillog.journal_match)}"
    return str(settings.maillog_path)


def serve(settings: Settings, stop: Callable[[], bool] = lambda: False) -> None:
    """Follow the maillog until `stop()` says so."""
    client = store.connect(settings)
    positions = positions_for(settings, client)
    follower = follower_for(settings, positions=positions)
    follower.position_file.parent.mkdir(parents=True, exist_ok=True)
    statuses = build(settings, client)
    outage = False
    log.info("following %s", describe(settings))
    while not stop():
        try:
            lines = follower.read_lines()
            if not lines:
                time.sleep(settings.maillog.poll_interval)
                continue
            # In Redis, the position goes with the events (maillog_batch.lua).
            handle_lines(lines, statuses, follower.position() if positions else None)
        except TemporaryFailure as exc:
            if not outage:
                log.warning("NOQUEUE: cannot record events (%s); the lines will be read again", exc)
            outage = True
            follower.rewind()
            time.sleep(RETRY_DELAY)
            continue
        if outage:
            log.info("NOQUEUE: recording events again")
            outage = False
        follower.commit()  # the position file; in Redis mode nothing (the script wrote it)
    follower.close()
