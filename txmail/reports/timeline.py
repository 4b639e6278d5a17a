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
      * webhook posts: the dispatcher keeps no record per post or per message (it keeps one
        state per endpoint, PREFIX {ACCOUNT}:webhook, and the dead letters). So the timeline
        says that, shows the endpoint's state (failing since, attempts, disabled) and lists
        the dead letters of this message's events, found in the newest DEAD_SCAN entries of
        the dead-letter stream with the error the endpoint last answered.

    A message of another account, or one whose record has expired, is None: the page answers
    404 for both, so an id says nothing about any other account.

    Reads: the record and the message's list (message_json: three round trips), one
    pipeline of the attempt counts and the webhook state, and one XREVRANGE of at most
    DEAD_SCAN dead letters.

FAILURE
    StoreUnavailable when Redis is down.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from txmail.reports.search import message_json
from txmail.store import Client, Keys, decoded_entries, decoded_hash, decoded_or_none, guard

DEAD_SCAN = 1000
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
    dead_letters: list[dict[str, Any]]  # {event_id, kind, recipient, error, failed_at}
    events_unlisted: int = 0


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
        parent_and_copies, webhook = pipe.execute()
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
                    "failed_at": _seconds_iso(fields.get("failed_at", "")),
                }
            )
    # By the second (acceptance has no milliseconds), acceptance and copies first; the sort
    # is stable, so events of the same second keep the order they were recorded in.
    steps.sort(key=lambda step: (step.at[:19], step.kind not in ("accepted", "copy")))
    return Timeline(
        message=shown,
        steps=steps,
        copies=copies,
        parent=parent,
        attempts=attempts,
        webhook=decoded_hash(webhook),
        dead_letters=dead,
        events_unlisted=int(shown["events_unlisted"]),
    )
