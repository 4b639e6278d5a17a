"""An account's webhook endpoint as the operator and the account holder see it: its state, its
dead letters and their replay, a signed test post and a rotation of its signing secret.
`txmail webhooks` (CLI) and the console (tracker) both use these; the dispatcher
(txmail/webhooks) does the posting.

Reads and writes: PREFIX {ACCOUNT}:webhook (endpoint state), PREFIX {ACCOUNT}:webhook:dead
(dead letters), PREFIX {ACCOUNT}:events (replay adds to it; its consumer group's lag and
pending entries are the backlog), PREFIX {ACCOUNT}:webhook:secret (rotation).

replay() moves dead letters back into the account's event stream (same slot), each by a
script call that posts it only when it is the one that took it off the dead letters
(webhook_replay.lua: two replays at once post nothing twice), with the same event ids, and
turns the endpoint back on. post_test_event() posts one event of kind "test", signed like
every post, to the account's URL, waiting at most webhooks.timeout in all
(a total deadline, not one per read) and following no redirect; it records nothing. The
console prepares it (prepare_test_event, Redis reads) in a thread and sends it on its loop
(send_test_event), so a slow endpoint holds no thread.

Fails: StoreUnavailable when Redis is down; NotFound for an unknown account.
"""

from __future__ import annotations

import base64
import json
import secrets as random_source
import time
from dataclasses import dataclass
from typing import Any

from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail.events import WEBHOOK_GROUP, Event, iso_timestamp, random_event_id
from txmail.store import (
    Client,
    Keys,
    decoded_entries,
    decoded_hash,
    decoded_or_none,
    guard,
    scripts,
)
from txmail.store import secrets as shared_secrets
from txmail.tokens import webhooks as signing

MAX_ERROR = 300  # characters of an endpoint's answer shown


@dataclass(frozen=True)
class EndpointState:
    """What `txmail webhooks status` prints for one account."""

    account: str
    url: str
    disabled: bool
    disabled_by: str
    failing_since: float | None
    attempts: int
    next_attempt: float | None
    waiting: int  # events not yet posted (the group's lag) or posted but not acknowledged
    dead_letters: int

    def public(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "url": self.url,
            "disabled": self.disabled,
            "failing_since": self.failing_since,
            "attempts": self.attempts,
            "waiting": self.waiting,
            "dead_letters": self.dead_letters,
        }


def endpoint_state(client: Client, keys: Keys, account: str) -> EndpointState:
    with guard(f"reading the webhook endpoint of {account}"):
        state = decoded_hash(client.hgetall(keys.webhook(account)))
        waiting = 0
        groups = (
            client.xinfo_groups(keys.events(account)) if client.exists(keys.events(account)) else []
        )
        for group in groups:
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == WEBHOOK_GROUP:
                waiting = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        url = decoded_or_none(client.hget(keys.account(account), "webhook_url")) or ""
        dead = int(client.xlen(keys.dead_letters(account)))
    return EndpointState(
        account=account,
        url=url,
        disabled=bool(state.get("disabled")),
        disabled_by=state.get("disabled_by", ""),
        failing_since=float(state["failing_since"]) if state.get("failing_since") else None,
        attempts=int(state.get("attempts") or 0),
        next_attempt=float(state["next_attempt"]) if state.get("next_attempt") else None,
        waiting=waiting,
        dead_letters=dead,
    )


GONE = "410 Gone"  # the error the dispatcher keeps when the endpoint answered 410
DISABLED = "endpoint disabled (410 Gone)"  # kept for events read while it stayed disabled


def dead_letter_reason(error: str) -> str:
    """What happened to a dead letter, from the error the dispatcher kept with it: a 410 Gone
    dead-letters at once, everything else only after the retry window."""
    if error == GONE:
        return "the endpoint answered 410 Gone: put here at once and the endpoint disabled"
    if error == DISABLED:
        return "not posted: the endpoint was disabled after an earlier 410 Gone"
    if not error:
        return "not taken within the retry window"
    return f"not taken within the retry window; the last try got: {error}"


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    account: str
    event: Event
    error: str
    failed_at: float

    @property
    def reason(self) -> str:
        return dead_letter_reason(self.error)

    def public(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.entry_id,
            "account": self.account,
            "error": self.error,
            "failed_at": self.failed_at,
            "event": json.loads(self.event.to_json()),
        }


def dead_letters(client: Client, keys: Keys, account: str, limit: int = 1000) -> list[DeadLetter]:
    """The account's dead letters, oldest first."""
    with guard(f"listing the dead letters of {account}"):
        rows = decoded_entries(client.xrange(keys.dead_letters(account), count=limit))
    found = []
    for entry_id, fields in rows:
        try:
            event = Event.from_json(fields["event"])
        except (KeyError, ValueError, TypeError):
            continue
        found.append(
            DeadLetter(
                entry_id,
                account,
                event,
                fields.get("error", ""),
                float(fields.get("failed_at") or 0),
            )
        )
    return found


def replay(
    client: Client, keys: Keys, account: str, event_ids: set[str] | None = None, batch: int = 500
) -> int:
    """Send dead letters again (all, or those with the given event ids); how many."""
    moved = 0
    start = "-"
    while True:
        with guard(f"replaying the dead letters of {account}"):
            rows = decoded_entries(
                client.xrange(keys.dead_letters(account), min=start, count=batch)
            )
        if not rows:
            break
        chosen = [
            (entry_id, fields)
            for entry_id, fields in rows
            if fields.get("event") and (event_ids is None or _id_of(fields["event"]) in event_ids)
        ]
        if chosen:
            with guard(f"replaying the dead letters of {account}"):
                moved += int(
                    scripts.get(client, "webhook_replay")(
                        keys=[
                            keys.dead_letters(account),
                            keys.events(account),
                            keys.webhook(account),
                        ],
                        args=[entry_id for entry_id, _ in chosen],
                    )
                )
        last = rows[-1][0]
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(rows) < batch:
            break
    return moved


def _id_of(raw: str) -> str:
    try:
        return str(json.loads(raw).get("id", ""))
    except ValueError:
        return ""


def account_secrets(
    settings: Settings, client: Client, keys: Keys, account: str, now: float
) -> tuple[bytes, ...]:
    """What the account's posts are signed with now, the current secret first."""
    return signing.account_secrets(
        shared_secrets.webhook_keys(settings, client),
        account,
        shared_secrets.read_webhook_secret(client, keys, account),
        now,
    )


def rotate_secret(
    settings: Settings, client: Client, keys: Keys, account: str, overlap: float
) -> bytes:
    """Give the account a new random signing secret and return it; for `overlap` seconds
    every post carries a signature with the old one too. A rotation within a running overlap
    keeps that overlap's old secret (the one receivers may still check), in one script call
    (webhook_secret_rotate.lua), so two rotations at once or in a row never drop it."""
    Accounts(client, keys).get(account)
    now = time.time()
    derived = signing.account_secrets(
        shared_secrets.webhook_keys(settings, client),
        account,
        shared_secrets.StoredWebhookSecret(b"", b"", 0.0),
        now,
    )[0]
    fresh = random_source.token_bytes(32)
    with guard(f"rotating the webhook secret of {account}"):
        scripts.get(client, "webhook_secret_rotate")(
            keys=[keys.webhook_secret(account)],
            args=[
                base64.b64encode(fresh).decode(),
                base64.b64encode(derived).decode(),
                repr(now),
                repr(now + overlap),
            ],
        )
    return fresh


@dataclass(frozen=True)
class PostAnswer:
    """How the endpoint answered a test post: an HTTP status, or why there was none."""

    url: str
    event_id: str
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class TestPost:
    """A signed test post, ready to send: where, what and with which headers."""

    url: str
    event_id: str
    body: bytes
    headers: dict[str, str]


def prepare_test_event(
    settings: Settings, client: Client, keys: Keys, account: str, note: str
) -> TestPost:
    """One signed test event for the account's webhook URL (Redis reads only); UsageError
    when it has none."""
    from txmail.errors import UsageError

    target = Accounts(client, keys).get(account).webhook_url
    if not target:
        raise UsageError(
            f"account {account} has no webhook URL (the operator sets it with "
            f"`txmail webhooks url {account} URL`)"
        )
    now = time.time()
    event = Event(
        id=random_event_id(now),
        kind="test",
        recipient="",
        message_id="",
        timestamp=iso_timestamp(now),
        account=account,
        tags=[],
        details={"note": note},
    )
    body = ('{"events":[' + event.to_json() + "]}").encode()
    secret_bytes = account_secrets(settings, client, keys, account, now)
    headers = signing.headers(secret_bytes, "msg_test_" + event.id[4:], int(now), body)
    return TestPost(target, event.id, body, dict(headers))


async def send_test_event(post: TestPost, timeout: float) -> PostAnswer:
    """Send a prepared test post, on the running loop, waiting at most `timeout` seconds in
    all (connecting, sending and every byte of the answer's head: an endpoint that trickles
    its answer is cut off too), following no redirect."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(
                post.url, data=post.body, headers=post.headers, allow_redirects=False
            ) as response,
        ):
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return PostAnswer(post.url, post.event_id, None, f"no answer ({exc.__class__.__name__})")
    return PostAnswer(post.url, post.event_id, status)


def post_test_event(
    settings: Settings, client: Client, keys: Keys, account: str, note: str
) -> PostAnswer:
    """Post one signed test event to the account's webhook URL, waiting at most
    webhooks.timeout in all (for the CLI: it runs a loop of its own); UsageError when the
    account has no URL."""
    import asyncio

    post = prepare_test_event(settings, client, keys, account, note)
    return asyncio.run(send_test_event(post, settings.webhooks.timeout))
