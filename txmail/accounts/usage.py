"""accounts.usage: an account's counted usage in Redis, its keys, the clock it goes by.

Every atomic operation is one script in txmail/store/scripts/ (policy_check, policy_commit,
policy_release), got from txmail.store.scripts, so the same call runs on one Redis and on a
Redis Cluster: all keys of one call carry the account's hash tag.

count_accepted() is what the milter calls at end of message, after every rule has passed: it
turns the message's hold into counted usage, so a message refused later (by the milter or by
Postfix) never uses up quota. policyd checks against the same buckets (check_keys) and gives
back holds (release). policyd/quota.py reads the counters back for `txmail stats` and
`txmail accounts show`.

Fails: StoreUnavailable when Redis is down (the milter then answers 451 4.3.0).
"""

from __future__ import annotations

import time
from typing import Any

from txmail.accounts import settings as account_settings
from txmail.accounts.limits import Windows
from txmail.config import Settings
from txmail.store import Client, Keys, guard, scripts

# Buckets outlive their window a little, so a count landing at the boundary is never lost.
BUCKET_TTL = {"m": 120, "h": 3600 + 300, "d": 86400 + 3600}


def usage_keys(keys: Keys, account: str, windows: Windows) -> list[str]:
    return [
        keys.usage(account, "m", windows.minute),
        keys.usage(account, "h", windows.hour),
        keys.usage(account, "d", windows.day),
    ]


def check_keys(keys: Keys, account: str, windows: Windows) -> list[str]:
    """KEYS of policy_check.lua."""
    return [
        *usage_keys(keys, account, windows),
        keys.holds(account),
        keys.holds_expiry(account),
        keys.warmup(account),
    ]


def clock(settings: Settings) -> float:
    """The time policyd and the count go by (the real clock plus policyd.clock_offset)."""
    return time.time() + settings.policyd.clock_offset


def _commit_call(
    settings: Settings, keys: Keys, account: str, queue_id: str, recipients: int, size: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of policy_commit.lua for one accepted message."""
    windows = Windows.at(clock(settings))
    default_warmup = "1" if account_settings.spec("warmup").default else "0"
    return (
        [
            *usage_keys(keys, account, windows),
            keys.holds(account),
            keys.holds_expiry(account),
            keys.warmup(account),
            keys.account(account),
        ],
        [
            queue_id,
            windows.day,
            recipients,
            size,
            BUCKET_TTL["m"],
            BUCKET_TTL["h"],
            BUCKET_TTL["d"],
            default_warmup,
        ],
    )


def count_accepted(
    settings: Settings,
    client: Client,
    keys: Keys,
    account: str,
    queue_id: str,
    recipients: int,
    size: int,
) -> list[int]:
    """Count one accepted message; returns [messages, recipients, bytes, from_hold]."""
    call_keys, args = _commit_call(settings, keys, account, queue_id, recipients, size)
    with guard(f"{queue_id}: counting the message against the sending limits"):
        counted = scripts.get(client, "policy_commit")(keys=call_keys, args=args)
    return [int(v) for v in counted]


def queue_count_accepted(
    pipe: Any,
    settings: Settings,
    keys: Keys,
    account: str,
    queue_id: str,
    recipients: int,
    size: int,
) -> None:
    """count_accepted() as one more command of a pipeline, so the milter counts a message in
    the round trip that writes its record. EVAL with the script's text, not EVALSHA: a Redis
    that restarted has lost its script cache, and a NOSCRIPT reply inside a pipeline would need
    a second round trip to repair (Redis keeps the compiled script by its SHA1 either way)."""
    call_keys, args = _commit_call(settings, keys, account, queue_id, recipients, size)
    # execute_command: redis-py's cluster pipeline refuses its eval() method, yet routes the
    # command itself by its first key like any other.
    pipe.execute_command("EVAL", scripts.text("policy_commit"), len(call_keys), *call_keys, *args)


def release(client: Client, keys: Keys, account: str, queue_id: str) -> bool:
    """Give back the hold of a message that was not counted; True if there was one."""
    with guard(f"{queue_id}: giving back a hold"):
        return bool(
            scripts.get(client, "policy_release")(
                keys=[keys.holds(account), keys.holds_expiry(account)], args=[queue_id]
            )
        )
