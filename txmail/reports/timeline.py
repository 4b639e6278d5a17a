"""One message's timeline for its account: from acceptance to every outcome and webhook post.

SYNOPSIS
    read_timeline(client, keys, ttl, account, queue_id) -> Timeline | None

DESCRIPTION
    Reads what txmail keeps about one message and puts it in time order:

      * accepted: the message record (PREFIX {ACCOUNT}:message:QID) with sender, recipients,
        tags, class, size; recipients the milter blocked, with the reason;
      * copies: per-recipient copies the milter made (record field `copies`, recipient ->
        queue id of the copy); the copy's own id links to its own timeline;
      * each outcome event from the message's own list (events.message_events, the same read
        as GET /v1/messages/{id}, search.message_json): delivery, soft_bounce (the first
        deferral; later failed attempts are counted, not kept one by one: field
        "attempts:RECIPIENT" of PREFIX {ACCOUNT}:seen:QID, shown as the attempts so far),
        bounce with its reason and the remote server's diagnostic, complaint, blocked, and
        the first open and click of each recipient (later ones are counted per day only);
      * webhook posts: for each of the message's events, the posts that carried it and their
        answers, found by the event's id among the account's kept posts (the last
        webhook_posts.POSTS_KEPT, PREFIX {ACCOUNT}:webhook:posts). An event no kept post
        carried is said to be "posted and acknowledged; the post is no longer kept" when it is
        acknowledged, and to wait otherwise. Acknowledged: its own stream entry (looked for
        within ENTRY_WINDOW seconds of the event's timestamp, at most ENTRY_SCAN entries) is
        neither in the consumer group's pending list nor past the last entry the group read,
        or it is gone from the stream (the stream is never trimmed past an unacknowledged
        entry): not in a window read whole, or, in a window of more than ENTRY_SCAN entries,
        older than every entry still there (otherwise it is said to wait, not called
        acknowledged on a guess). A node whose clock is off from Redis's by more than
        ENTRY_WINDOW would have its events' entries outside their windows: those would be
        called acknowledged. Without a webhook URL, events are acknowledged unposted, and the
        timeline says so.
        Also the endpoint's state (failing since, attempts, disabled) and the dead letters of
        this message's events, found in the newest DEAD_SCAN entries of the dead-letter
        stream, each with what happened to it (the error kept with it: a 410 Gone at once, or
        the last answer within the retry window).

    A message of another account, or one whose record has expired, is None: the page answers
    404 for both, so an id says nothing about any other account.

    Reads: the record and the message's list (message_json: three round trips), one
    pipeline of the attempt counts, the webhook state and URL and the kept posts, one
    XREVRANGE of at most DEAD_SCAN dead letters, and, only when an event is in no kept post,
    the group's state (XINFO GROUPS), one pipeline of an XRANGE window per such event and one
    of an XPENDING of one entry per entry found.

FAILURE
    StoreUnavailable when Redis is down.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from txmail.events import WEBHOOK_GROUP
from txmail.reports.search import message_json
from txmail.store import Client, Keys, decoded_entries, decoded_hash, decoded_or_none, guard
from txmail.webhook_endpoints import dead_letter_reason
from txmail.webhook_posts import Post, parsed

DEAD_SCAN = 1000
ENTRY_WINDOW = 5.0  # seconds either side of an event's timestamp its stream entry is looked for
ENTRY_SCAN = 1000  # entries looked at in that window, at most
# Details worth a line of their own on the page, in the order shown; the rest go in a list.
SUMMARY = ("reason", "status", "diagnostic", "remote_mta", "attempts", "url", "feedback_type")


@dataclass
class Step:
    at: str  # ISO time, UTC
    kind: str  # accepted, blocked, copy, delivery, soft_bounce, bounce, complaint, open, ...
    recipient: str = ""
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    trusted: bool = True
    link: str = ""  # a message id the step points at (a copy's own)


@dataclass
class Timeline:
    message: dict[str, Any]  # search.message_json()
    steps: list[Step]
    copies: dict[str, str]  # recipient -> queue id of its copy
    parent: str  # "" or the client's message id of which this is a copy
    attempts: dict[str, int]  # recipient -> failed delivery attempts so far
    webhook: dict[str, str]  # the endpoint's state (PREFIX {ACCOUNT}:webhook)
    dead_letters: list[dict[str, Any]]  # {event_id, kind, recipient, error, reason, failed_at}
    events_unlisted: int = 0
    webhook_url: str = ""  # "" when the account has no endpoint: its events are not posted
    posted: list[Posted] = field(default_factory=list)  # one per event, in the steps' order


@dataclass
class Posted:
    """How one of the message's events went to the account's webhook endpoint."""

    event_id: str
    kind: str
    recipient: str
    state: str  # acknowledged, waiting, dead_letter, unposted (no URL)
    said: str  # the state in a sentence
    posts: list[Post] = field(default_factory=list)  # the kept posts that carried it, oldest first


def _summary(kind: str, details: dict[str, Any]) -> str:
    if kind == "bounce":
        return f"hard bounce: {details.get('reason', 'undefined')}"
    if kind == "soft_bounce":
        return f"deferred: {details.get('reason', 'undefined')}"
    if kind == "delivery":
        relay = details.get("remote_mta")
        return f"delivered to {relay}" if relay else "delivered"
    if kind == "blocked":
        return f"not sent: {details.get('reason', '')}".rstrip(": ")
    if kind == "complaint":
        return f"complaint ({details.get('feedback_type', 'abuse')})"
    return kind


def _seconds_iso(value: str) -> str:
    try:
        moment = float(value)
    except ValueError:
        return ""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_timeline(
    client: Client, keys: Keys, ttl: int, account: str, queue_id: str
) -> Timeline | None:
    """The timeline of `account`'s message `queue_id`, or None (see the module)."""
    shown = message_json(client, keys, ttl, account, queue_id)
    if shown is None:
        return None
    with guard(f"{queue_id}: reading its record, attempts and webhook state"):
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.message(account, queue_id), "parent", "copies")
        pipe.hgetall(keys.webhook(account))
        pipe.hget(keys.account(account), "webhook_url")
        pipe.lrange(keys.webhook_posts(account), 0, -1)
        parent_and_copies, webhook, url, kept = pipe.execute()
    parent = decoded_or_none(parent_and_copies[0]) or ""
    raw_copies = decoded_or_none(parent_and_copies[1])
    copies: dict[str, str] = json.loads(raw_copies) if raw_copies else {}
    client_id = parent or queue_id
    with guard(f"{queue_id}: reading its delivery attempts"):
        seen = decoded_hash(client.hgetall(keys.event_seen(account, client_id)))
    mine = {r.lower() for r in shown["recipients"]}
    attempts = {
        name[len("attempts:") :]: int(value)
        for name, value in seen.items()
        if name.startswith("attempts:")
        and value.isascii()
        and value.isdigit()
        and (not parent or name[len("attempts:") :] in mine)
    }

    steps = [
        Step(
            at=shown["accepted_at"],
            kind="accepted",
            summary=(
                f"accepted from <{shown['envelope_sender']}> for "
                f"{len(shown['recipients'])} recipient(s), {shown['size']} bytes"
            ),
            details={"class": shown["message_class"], "tags": ", ".join(shown["tags"])},
        )
    ]
    if parent:
        steps.append(
            Step(
                at=shown["accepted_at"],
                kind="copy",
                summary="a per-recipient copy of the client's message",
                link=parent,
            )
        )
    for recipient, copy_id in sorted(copies.items()):
        steps.append(
            Step(
                at=shown["accepted_at"],
                kind="copy",
                recipient=recipient,
                summary="sent as a copy of its own",
                link=copy_id,
            )
        )
    for event in shown["events"]:
        details = dict(event.get("details") or {})
        trusted = details.pop("trusted", True) is not False
        if event["kind"] == "soft_bounce" and event["recipient"] in attempts:
            details["attempts"] = attempts[event["recipient"]]
        steps.append(
            Step(
                at=event["timestamp"],
                kind=event["kind"],
                recipient=event["recipient"],
                summary=_summary(event["kind"], details),
                details=details,
                trusted=trusted,
            )
        )
    event_ids = {event["id"] for event in shown["events"]}
    with guard(f"{queue_id}: reading the webhook's dead letters"):
        rows = decoded_entries(client.xrevrange(keys.dead_letters(account), "+", "-", DEAD_SCAN))
    dead = []
    for _, fields in rows:
        try:
            event = json.loads(fields["event"])
        except (KeyError, ValueError, TypeError):
            continue
        if (
            event.get("id") in event_ids
            or event.get("message_id") == client_id
            and (not parent or event.get("recipient") in mine)
        ):
            dead.append(
                {
                    "event_id": event.get("id", ""),
                    "kind": event.get("kind", ""),
                    "recipient": event.get("recipient", ""),
                    "error": fields.get("error", ""),
                    "reason": dead_letter_reason(fields.get("error", "")),
                    "failed_at": _seconds_iso(fields.get("failed_at", "")),
                }
            )
    # By the second (acceptance has no milliseconds), acceptance and copies first; the sort
    # is stable, so events of the same second keep the order they were recorded in.
    steps.sort(key=lambda step: (step.at[:19], step.kind not in ("accepted", "copy")))
    posted = _posted(
        client, keys, account, shown["events"], parsed(kept), decoded_or_none(url) or "", dead
    )
    return Timeline(
        message=shown,
        steps=steps,
        copies=copies,
        parent=parent,
        attempts=attempts,
        webhook=decoded_hash(webhook),
        dead_letters=dead,
        events_unlisted=int(shown["events_unlisted"]),
        webhook_url=decoded_or_none(url) or "",
        posted=posted,
    )


def _posted(
    client: Client,
    keys: Keys,
    account: str,
    events: list[dict[str, Any]],
    kept: list[Post],
    url: str,
    dead: list[dict[str, Any]],
) -> list[Posted]:
    dead_ids = {letter["event_id"] for letter in dead}
    found, unknown = [], []
    for event in events:
        event_id = str(event.get("id", ""))
        carried = [post for post in reversed(kept) if post.carried(event_id)]
        row = Posted(event_id, str(event.get("kind", "")), str(event.get("recipient", "")), "", "")
        row.posts = carried
        if event_id in dead_ids:
            row.state, row.said = "dead_letter", "not taken by the endpoint: in the dead letters"
        elif any(post.ok for post in carried):
            row.state, row.said = "acknowledged", "posted and acknowledged"
        elif carried:
            row.state, row.said = "waiting", "posted, not acknowledged yet: it is retried"
        elif not url:
            row.state, row.said = "unposted", "not posted: the account has no webhook URL"
        else:
            unknown.append((row, _event_seconds(str(event.get("timestamp", "")))))
        found.append(row)
    if unknown:
        waiting = _waiting(client, keys, account, unknown)
        for row, _ in unknown:
            if row.event_id in waiting:
                row.state, row.said = "waiting", "waits to be posted"
            else:
                row.state = "acknowledged"
                row.said = "posted and acknowledged; the post is no longer kept"
    return found


def _event_seconds(timestamp: str) -> float:
    """An event's ISO timestamp (events.iso_timestamp) in seconds; 0 when unreadable."""
    try:
        return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _waiting(
    client: Client, keys: Keys, account: str, unknown: list[tuple[Posted, float]]
) -> set[str]:
    """Which of these events the webhooks group has not acknowledged: each one's own stream
    entry, looked for within ENTRY_WINDOW seconds of its timestamp, is in the group's pending
    list or past the last entry the group read. An entry not in its window, read whole, was
    trimmed, so acknowledged (the stream is never trimmed past the oldest unacknowledged
    entry); when the window held more than ENTRY_SCAN entries, an event not found is said to
    wait unless it is older than everything in the stream."""
    stream = keys.events(account)
    with guard(f"reading the webhook backlog of {account}"):
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:  # no stream yet: nothing waits
            return set()
        group = next((g for g in groups if decoded_or_none(g.get("name")) == WEBHOOK_GROUP), None)
        last_read = (decoded_or_none(group.get("last-delivered-id")) if group else None) or "0-0"
        pipe = client.pipeline(transaction=False)
        pipe.xrange(stream, count=1)
        for _, seconds in unknown:
            low, high = int((seconds - ENTRY_WINDOW) * 1000), int((seconds + ENTRY_WINDOW) * 1000)
            pipe.xrange(stream, min=max(low, 0), max=high, count=ENTRY_SCAN)
        replies = pipe.execute()
        first_kept = decoded_entries(replies[0])
        entries: dict[str, str] = {}
        looked: set[str] = set()  # events whose whole window was read
        for (row, seconds), reply in zip(unknown, replies[1:], strict=True):
            marker = f'"id":"{row.event_id}"'
            if seconds > 0 and len(reply) < ENTRY_SCAN:
                looked.add(row.event_id)
            for stream_id, fields in decoded_entries(reply):
                if marker in fields.get("event", ""):
                    entries[row.event_id] = stream_id
                    break
        pending: set[str] = set()
        if group is not None and entries:
            pipe = client.pipeline(transaction=False)
            for stream_id in entries.values():
                pipe.xpending_range(stream, WEBHOOK_GROUP, min=stream_id, max=stream_id, count=1)
            for stream_id, reply in zip(entries.values(), pipe.execute(), strict=True):
                if reply:
                    pending.add(stream_id)
    oldest_ms = _order(first_kept[0][0])[0] if first_kept else None
    waiting = set()
    for row, seconds in unknown:
        entry = entries.get(row.event_id)
        if entry is not None:
            if entry in pending or _order(entry) > _order(last_read):
                waiting.add(row.event_id)
        elif row.event_id in looked:
            continue  # not in its whole window: trimmed, which only acknowledged entries are
        elif oldest_ms is None or (seconds + ENTRY_WINDOW) * 1000 >= oldest_ms:
            # its window was too full to read whole: it may still be in the stream
            waiting.add(row.event_id)
    return waiting
