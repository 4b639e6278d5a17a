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

    The position in the log is saved only after the lines before it were recorded, so a
    restart resumes where the last one stopped and nothing is skipped.

FAILURE
    Redis down: the lines not yet recorded are read again once it answers (one log line per
    outage, then retries every few seconds). Never exits on bad input.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from txmail import logs, store
from txmail.accounts import reputation
from txmail.accounts import settings as account_settings
from txmail.accounts.settings import AccountSettings
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.events import Recorder, SuppressionPolicy, record_outcome
from txmail.maillog.follower import LogFollower
from txmail.maillog.journal import JournalFollower
from txmail.maillog.lines import DeliveryStatus, parse_line
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import Finding
from txmail.outcomes.reasons import command_in
from txmail.store.messages import MessageRecord, Messages

log = logging.getLogger("txmail.maillog")

CACHE_SIZE = 10_000
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
    ) -> None:
        self.client = client
        self.keys = keys
        self.messages = messages
        self.recorder = recorder
        self.clock = clock
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
        """Record what one status line says; the event id, or None when it says nothing."""
        record = self._record(status.queue_id)
        if record is None:
            return None
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
                log.info(
                    "%s: deferred again to=<%s> (attempt %s); soft_bounce was sent once",
                    record.queue_id,
                    recipient,
                    details.get("attempts"),
                )
        return result.event_id


def handle_lines(lines: list[str], recorder: StatusRecorder) -> int:
    """Record every status line of `lines`; how many events (new or seen) they gave."""
    statuses = [status for status in map(parse_line, lines) if status is not None]
    recorder.prefetch([status.queue_id for status in statuses])
    return sum(1 for status in statuses if recorder.handle(status))


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
    return StatusRecorder(client, keys, Messages(client, keys, ttl), recorder, clock, cache)


def follower_for(settings: Settings, journalctl: str = "journalctl") -> Follower:
    """The follower of maillog.source: a log file's, or the journal's."""
    position_file = settings.path(settings.maillog.offset_file)
    if settings.maillog.source == "journald":
        return JournalFollower(
            position_file,
            settings.maillog.journal_namespace,
            settings.maillog.journal_match,
            journalctl,
            since_days=settings.milter.message_ttl_days,
        )
    return LogFollower(settings.maillog_path, position_file, settings.maillog.rotate_grace)


def describe(settings: Settings) -> str:
    """Where the follower reads, for its first log line and `txmail doctor`."""
    if settings.maillog.source == "journald":
        namespace = settings.maillog.journal_namespace
        where = f"the journal{f' (namespace {namespace})' if namespace else ''}"
        return f"{where}, entries matching {' or '.join(settings.maillog.journal_match)}"
    return str(settings.maillog_path)


def serve(settings: Settings, stop: Callable[[], bool] = lambda: False) -> None:
    """Follow the maillog until `stop()` says so."""
    follower = follower_for(settings)
    follower.position_file.parent.mkdir(parents=True, exist_ok=True)
    client = store.connect(settings)
    statuses = build(settings, client)
    outage = False
    log.info("following %s", describe(settings))
    while not stop():
        lines = follower.read_lines()
        if not lines:
            time.sleep(settings.maillog.poll_interval)
            continue
        try:
            handle_lines(lines, statuses)
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
        follower.commit()
    follower.close()
