"""The reputation guard: hard-bounce and complaint rates per account, and automatic suspension.

count_outcome() is called once for every final delivery outcome of a recipient: `delivery`,
`bounce` (hard) and `complaint` count; `soft_bounce` and the other event kinds are ignored. It
counts the outcome in today's bucket and reads the totals over the account's window in one Lua
call (store/scripts/reputation_record.lua), then judges them (judge()):

  * above max_bounce_rate or max_complaint_rate, once the window holds
    reputation_min_recipients recipients with an outcome: the account is suspended through
    txmail.accounts.records with the reason "Sending suspended: hard bounce rate 3.4% (34 of
    1000) over the last 7 days exceeds 2%; contact the operator", so the milter refuses its
    mail and `txmail accounts resume NAME` lifts it (the window then starts afresh);
  * at 80% of a threshold: a warning log line, once per crossing.

Both also go to the account's capped alert stream (PREFIX {ACCOUNT}:reputation:alerts), and
the judgements are returned so that the event recorder can turn them into events.

outcome_hook() is that call as txmail.events.Recorder takes it (outcome_hook=...): the daemons
that record outcomes (bounce pipe, maillog follower) build it here and pass it in, so the event
recorder never imports the guard. judge() is pure and also serves `txmail stats`.

Writes: PREFIX {ACCOUNT}:outcomes:d:DAY, PREFIX {ACCOUNT}:reputation, the alert stream, and
        the account's status.
Fails:  StoreUnavailable when Redis is down; the caller keeps the outcome and retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from txmail.accounts.records import Accounts
from txmail.accounts.settings import AccountSettings
from txmail.store import Client, Keys, guard, scripts

# The name it had under policyd, kept: it appears in every log line (%(name)s).
log = logging.getLogger("txmail.policyd.reputation")

COUNTED = {"delivery": "delivered", "bounce": "bounced", "complaint": "complained"}
BUCKET_TTL = 31 * 86400  # longer than the longest window (30 days)
ALERTS_CAP = 1000
WARN_FRACTION = 0.8  # of a reputation threshold: log a warning and raise an alert
EPSILON = 1e-9  # so that 1 of 1250 is exactly 80% of 0.1% despite binary fractions


@dataclass(frozen=True)
class Outcomes:
    """Final outcomes of an account's recipients over its reputation window."""

    delivered: int
    bounced: int
    complained: int

    @property
    def total(self) -> int:
        """Recipients with a final outcome: the base of both rates."""
        return self.delivered + self.bounced


@dataclass(frozen=True)
class Judgement:
    metric: str  # "hard bounce" or "complaint"
    count: int
    total: int
    threshold: float  # percent
    window_days: int
    level: str  # "ok", "warning" (at 80% of the threshold) or "suspend" (above it)

    @property
    def rate(self) -> float:
        return 100.0 * self.count / self.total if self.total else 0.0

    @property
    def key(self) -> str:
        return "bounce" if self.metric == "hard bounce" else "complaint"

    def describe(self) -> str:
        window = "day" if self.window_days == 1 else f"{self.window_days} days"
        rate = percent(self.rate)
        for digits in (3, 4, 6):  # a rate above the threshold must not read as equal to it
            if (float(rate) > self.threshold) == (self.rate > self.threshold + EPSILON):
                break
            rate = percent(self.rate, digits)
        return f"{self.metric} rate {rate}% ({self.count} of {self.total}) over the last {window}"

    def suspension_reason(self) -> str:
        return (
            f"Sending suspended: {self.describe()} exceeds {percent(self.threshold)}%; "
            "contact the operator"
        )

    def warning(self) -> str:
        return (
            f"{self.describe()} has reached {percent(100 * self.rate / self.threshold)}% "
            f"of the {percent(self.threshold)}% at which sending is suspended"
        )


def percent(value: float, digits: int = 2) -> str:
    """2.0 -> "2", 3.4 -> "3.4", 0.25 -> "0.25"."""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def judge(outcomes: Outcomes, settings: AccountSettings) -> list[Judgement]:
    """Hard-bounce and complaint judgements; both "ok" until the window holds enough recipients.

    A rate above its threshold suspends; at or above WARN_FRACTION of it, a warning. The base is
    every recipient with a final outcome, so an account whose mail all bounces is judged too.
    """
    window = settings.reputation_window_days
    judged = outcomes.total >= settings.reputation_min_recipients
    found = []
    for metric, count, threshold in (
        ("hard bounce", outcomes.bounced, float(settings.max_bounce_rate)),
        ("complaint", outcomes.complained, float(settings.max_complaint_rate)),
    ):
        rate = 100.0 * count / outcomes.total if outcomes.total else 0.0
        level = "ok"
        if judged and rate > threshold + EPSILON:
            level = "suspend"
        elif judged and count and rate >= WARN_FRACTION * threshold - EPSILON:
            level = "warning"
        found.append(Judgement(metric, count, outcomes.total, threshold, window, level))
    return found


def count_outcome(
    client: Client,
    keys: Keys,
    account: str,
    kind: str,
    now: float | None = None,
    settings: AccountSettings | None = None,
    mark: tuple[str, str] | None = None,
) -> list[Judgement]:
    """Count one outcome of `account` (an event kind) and act on the account's rates.

    `settings` are the account's settings if the caller keeps them (the maillog follower
    caches them for a few seconds); otherwise they are read here. `mark`: (the seen hash, its
    "counted:" field) of the event: the count is skipped when the mark is set, and the mark
    set in the same call (reputation_count.lua), so an outcome is counted once whoever
    records it.
    Returns the hard-bounce and complaint judgements, or [] when the kind does not count, the
    account is gone or the outcome was counted before.
    """
    field = COUNTED.get(kind)
    if field is None:
        return []
    now = time.time() if now is None else now
    accounts = Accounts(client, keys)
    if settings is None:
        found = accounts.find(account)
        if found is None:
            return []
        settings = found.settings
    call_keys, args = record_call(keys, account, field, settings, now)
    with guard(f"recording a {kind} of {account}"):
        if mark is None:
            row = scripts.get(client, "reputation_record")(keys=call_keys, args=args)
        else:
            row = scripts.get(client, "reputation_count")(
                keys=[mark[0], *call_keys], args=[mark[1], *args]
            )
            if not row:
                return []  # counted before (by the other recorder, or before a crash)
    return act_on(client, keys, account, row, settings, now)


def record_call(
    keys: Keys, account: str, field: str, settings: AccountSettings, now: float
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of store/scripts/reputation_record.lua counting `field` (delivered,
    bounced, complained) of `account` today over its window."""
    today = int(now // 86400)
    window = settings.reputation_window_days
    return (
        [
            keys.account(account),
            keys.reputation(account),
            *[keys.outcomes(account, today - back) for back in range(window)],
        ],
        [field, BUCKET_TTL],
    )


def act_on(
    client: Client,
    keys: Keys,
    account: str,
    row: list[Any],
    settings: AccountSettings,
    now: float,
) -> list[Judgement]:
    """Judge the totals reputation_record.lua gave (`row`) and act on them: warnings, alerts,
    suspension (also for a caller that ran the script inside a batch of its own)."""
    accounts = Accounts(client, keys)
    delivered, bounced, complained, status, suspended, *warned, restarted = row
    if int(restarted):
        log.info("%s: reputation window starts afresh after the account was resumed", account)
    judgements = judge(Outcomes(int(delivered), int(bounced), int(complained)), settings)
    with guard(f"acting on the reputation of {account}"):
        for judgement, warned_flag in zip(judgements, warned, strict=True):
            _act(
                client,
                keys,
                accounts,
                account,
                judgement,
                status,
                bool(suspended),
                bool(warned_flag),
                now,
            )
    return judgements


def _act(
    client: Client,
    keys: Keys,
    accounts: Accounts,
    account: str,
    judgement: Judgement,
    status: str,
    suspended: bool,
    warned: bool,
    now: float,
) -> None:
    state = keys.reputation(account)
    flag = f"warned.{judgement.key}"
    if judgement.level == "ok":
        if warned:
            client.hdel(state, flag)  # below the warning mark again: warn on the next crossing
        return
    if not warned and client.hsetnx(state, flag, repr(now)):
        log.warning("%s: reputation warning: %s", account, judgement.warning())
        _alert(client, keys, account, "reputation_warning", judgement.warning(), judgement, now)
    if judgement.level != "suspend" or status != "active" or suspended:
        return
    if client.hsetnx(state, "suspended", repr(now)):
        reason = judgement.suspension_reason()
        log.warning("%s: suspend: %s", account, reason)
        _alert(client, keys, account, "reputation_suspended", reason, judgement, now)
        accounts.suspend(account, reason)


def _alert(
    client: Client,
    keys: Keys,
    account: str,
    kind: str,
    text: str,
    judgement: Judgement,
    now: float,
) -> None:
    client.xadd(
        keys.reputation_alerts(account),
        {
            "kind": kind,
            "account": account,
            "metric": judgement.metric,
            "rate": percent(judgement.rate),
            "count": judgement.count,
            "total": judgement.total,
            "threshold": percent(judgement.threshold),
            "window_days": judgement.window_days,
            "text": text,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        },
        maxlen=ALERTS_CAP,
        approximate=True,
    )


def outcome_hook(
    client: Client, keys: Keys, settings_of: Callable[[str], AccountSettings | None] | None = None
) -> Callable[[str, str, tuple[str, str]], list[Judgement]]:
    """count_outcome() as txmail.events.Recorder calls it: (account, kind, the event's
    "counted:" mark, checked and set with the count). `settings_of` gives an account's
    settings (None: gone) from a caller's cache; without it they are read for each outcome."""

    def hook(account: str, kind: str, mark: tuple[str, str]) -> list[Judgement]:
        if settings_of is None:
            return count_outcome(client, keys, account, kind, mark=mark)
        settings = settings_of(account)
        if settings is None:
            return []
        return count_outcome(client, keys, account, kind, settings=settings, mark=mark)

    return hook
