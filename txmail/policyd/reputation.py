"""The reputation guard: hard-bounce and complaint rates per account, and automatic suspension.

record_outcome() is called once for every final delivery outcome of a recipient: `delivery`,
`bounce` (hard) and `complaint` count; `soft_bounce` and the other event kinds are ignored. It
counts the outcome in today's bucket and reads the totals over the account's window in one Lua
call (store/scripts/reputation_record.lua), then judges them (decide.judge):

  * above max_bounce_rate or max_complaint_rate, once the window holds
    reputation_min_recipients recipients with an outcome: the account is suspended through
    txmail.store.accounts with the reason "Sending suspended: hard bounce rate 3.4% (34 of
    1000) over the last 7 days exceeds 2%; contact the operator", so the milter refuses its
    mail and `txmail accounts resume NAME` lifts it (the window then starts afresh);
  * at 80% of a threshold: a warning log line, once per crossing.

Both also go to the account's capped alert stream (PREFIX {ACCOUNT}:reputation:alerts), and
the judgements are returned so that the event recorder can turn them into events.

Writes: PREFIX {ACCOUNT}:outcomes:d:DAY, PREFIX {ACCOUNT}:reputation, the alert stream, and
        the account's status.
Fails:  StoreUnavailable when Redis is down; the caller keeps the outcome and retries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from txmail.policyd import decide
from txmail.store import Client, Keys, guard, scripts
from txmail.store.accounts import Accounts

log = logging.getLogger("txmail.policyd.reputation")

COUNTED = {"delivery": "delivered", "bounce": "bounced", "complaint": "complained"}
BUCKET_TTL = 31 * 86400  # longer than the longest window (30 days)
ALERTS_CAP = 1000


def record_outcome(
    client: Client,
    keys: Keys,
    account: str,
    kind: str,
    now: float | None = None,
    settings: dict[str, Any] | None = None,
) -> list[decide.Judgement]:
    """Count one outcome of `account` (an event kind) and act on the account's rates.

    `settings` are the account's settings if the caller keeps them (the maillog follower
    caches them for a few seconds); otherwise they are read here.
    Returns the hard-bounce and complaint judgements, or [] when the kind does not count or the
    account is gone.
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
    today = int(now // 86400)
    window = int(settings["reputation_window_days"])
    with guard(f"recording a {kind} of {account}"):
        row = scripts.get(client, "reputation_record")(
            keys=[
                keys.account(account),
                keys.reputation(account),
                *[keys.outcomes(account, today - back) for back in range(window)],
            ],
            args=[field, BUCKET_TTL],
        )
    delivered, bounced, complained, status, suspended, *warned, restarted = row
    if int(restarted):
        log.info("%s: reputation window starts afresh after the account was resumed", account)
    judgements = decide.judge(
        decide.Outcomes(int(delivered), int(bounced), int(complained)), settings
    )
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
    judgement: decide.Judgement,
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
    judgement: decide.Judgement,
    now: float,
) -> None:
    client.xadd(
        keys.reputation_alerts(account),
        {
            "kind": kind,
            "account": account,
            "metric": judgement.metric,
            "rate": decide.percent(judgement.rate),
            "count": judgement.count,
            "total": judgement.total,
            "threshold": decide.percent(judgement.threshold),
            "window_days": judgement.window_days,
            "text": text,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        },
        maxlen=ALERTS_CAP,
        approximate=True,
    )
