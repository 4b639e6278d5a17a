"""Finding an account's messages: by id, recipient, tag, event kind and date, always bounded.

SYNOPSIS
    message_json(client, keys, ttl, account, queue_id) -> dict | None
    read_events(client, keys, account, after="", limit=100, kind=None, message_id=None,
                tag=None) -> ([event dict, ...], next)
    query = parse_query({"recipient": ..., "tag": ..., "kind": ..., "since": ...,
                         "until": ..., "id": ...}, now)
    search(client, keys, account, query, ttl, now, limit=100) -> Page

DESCRIPTION
    message_json() is what GET /v1/messages/{id} answers and what the console's timeline
    starts from: the message record (PREFIX {ACCOUNT}:message:QID) and its own list of
    events (events.message_events). Another account's message is None, exactly as a missing
    one, so nobody can learn that an id exists. read_events() is GET /v1/events: one XRANGE
    of the account's stream, `limit` entries from `after`, filtered afterwards (so an answer
    may hold fewer than `limit` events, never more, and `next` always moves on).

    search() answers the console's message search. With an id it reads that one message
    (the other fields are then not used). Otherwise it walks the account's event stream
    (PREFIX {ACCOUNT}:events) newest first with XREVRANGE, between the ids that `since` and
    `until` (UTC days, inclusive) stand for, as stream ids are milliseconds, keeping the
    events that match recipient (a case-insensitive part of the address), tag and kind, and
    gathers their messages until it has `limit` (at most MAX_PAGE) different ones or has
    read MAX_SCAN entries, in batches of BATCH. So a search costs at most MAX_SCAN / BATCH
    + 1 round trips and MAX_SCAN entries whatever the account sent; Page.complete says
    whether the walk reached the start of the range, and Page.next (a stream id) lets the
    next page carry on below where this one stopped. The records of the messages found are
    read in one pipeline for their accepted time, sender and recipients.

    What the walk cannot find, said on the page: a message with no event yet (accepted, not
    yet delivered, deferred or bounced) is found only by its id, and events that the webhooks
    dispatcher trimmed from the stream (events.stream_max, after delivery) are no longer
    searched; their messages are still found by id while their records live.

FAILURE
    StoreUnavailable when Redis is down; UsageError with a sentence for a search field that
    cannot be right (a date not YYYY-MM-DD, an unknown kind, an id that is no queue id, a
    tag no message could carry, a recipient over 320 characters).
"""

from __future__ import annotations

import calendar
import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from txmail.errors import UsageError
from txmail.events import KINDS, Event, message_events
from txmail.stats import check_tag
from txmail.store import Client, Keys, decoded_entries, decoded_hash, guard
from txmail.store.messages import MessageRecord, Messages

QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,32}$")
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # fullmatch; ASCII digits only
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
MAX_PAGE = 100
MAX_SCAN = 5000
BATCH = 500
MAX_RECIPIENT = 320


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_json(
    client: Client, keys: Keys, ttl: int, account: str, queue_id: str
) -> dict[str, Any] | None:
    """One message of `account` as GET /v1/messages/{id} shows it; None when missing or
    another account's (the same answer, on purpose)."""
    if not QUEUE_ID.match(queue_id):
        return None
    record = Messages(client, keys, ttl).get(queue_id)
    if record is None or record.account != account:
        return None
    # The message's own list (events.py), not the account's stream: found whatever the age.
    # Events carry the id the client knows; asked for a per-recipient copy, show its own.
    listed = message_events(client, keys, account, record.message_id)
    mine = {r.lower() for r in record.recipients} if record.parent else None
    events = [json.loads(e.to_json()) for e in listed.events if mine is None or e.recipient in mine]
    return {
        "message_id": record.queue_id,
        "envelope_sender": record.envelope_sender,
        "recipients": record.recipients,
        "size": record.size,
        "accepted_at": _iso(record.accepted_at),
        "tags": record.tags,
        "message_class": record.message_class,
        "blocked": record.blocked,
        "events": events,
        "events_unlisted": listed.unlisted,
    }


def _events_of(rows: list[tuple[str, dict[str, str]]]) -> list[tuple[str, Event]]:
    found = []
    for stream_id, fields in rows:
        try:
            found.append((stream_id, Event.from_json(fields["event"])))
        except (KeyError, ValueError, TypeError):
            continue
    return found


def read_events(
    client: Client,
    keys: Keys,
    account: str,
    after: str = "",
    limit: int = 100,
    kind: str | None = None,
    message_id: str | None = None,
    tag: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """GET /v1/events: up to `limit` stream entries after `after`, those matching kept, and
    the id to ask from next."""
    with guard(f"reading the events of {account}"):
        rows = decoded_entries(
            client.xrange(keys.events(account), f"({after}" if after else "-", "+", limit)
        )
    found = [
        json.loads(event.to_json())
        for _, event in _events_of(rows)
        if (kind is None or event.kind == kind)
        and (message_id is None or event.message_id == message_id)
        and (tag is None or tag in event.tags)
    ]
    return found, rows[-1][0] if rows else after


@dataclass(frozen=True)
class Query:
    recipient: str = ""
    tag: str | None = None
    kind: str | None = None
    since: str = ""  # YYYY-MM-DD, inclusive
    until: str = ""
    message_id: str = ""
    before: str = ""  # a stream id: carry on below it (Page.next)

    @property
    def empty(self) -> bool:
        return not (self.recipient or self.tag or self.kind or self.since or self.until)


def _date(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        return ""
    try:
        if DATE.match(value):
            datetime.date.fromisoformat(value)
            return value
    except ValueError:
        pass
    raise UsageError(f"{name} must be a date as YYYY-MM-DD, not {value[:40]!r}")


def parse_query(params: Mapping[str, str]) -> Query:
    """A Query from a form's fields (recipient, tag, kind, since, until, id, before); empty
    fields are not used. UsageError says what to fix."""
    recipient = params.get("recipient", "").strip().lower()
    if len(recipient) > MAX_RECIPIENT or not recipient.isprintable():
        raise UsageError(
            f"recipient must be (part of) an address: at most {MAX_RECIPIENT} printable characters"
        )
    raw_tag = params.get("tag", "").strip()
    kind = params.get("kind", "").strip() or None
    if kind is not None and kind not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}")
    message_id = params.get("id", "").strip()
    if message_id and not QUEUE_ID.match(message_id):
        raise UsageError(
            "id must be a message id as txmail gave it (the queue id in the 250 reply), "
            "6 to 32 letters and digits"
        )
    before = params.get("before", "").strip()
    if before and not STREAM_ID.fullmatch(before):
        raise UsageError("before must be the value the previous page's link carried")
    since = _date(params.get("since", ""), "since")
    until = _date(params.get("until", ""), "until")
    if since and until and since > until:
        raise UsageError("since must not be after until")
    return Query(
        recipient=recipient,
        tag=check_tag(raw_tag) if raw_tag else None,
        kind=kind,
        since=since,
        until=until,
        message_id=message_id,
        before=before,
    )


@dataclass
class Found:
    """One message a search found, and what its matching events say."""

    message_id: str
    recipients: list[str]
    tags: list[str]
    kinds: list[str]  # kinds of its matching events, newest first, each once
    last_event_at: str  # ISO time of its newest matching event ("" when found by id)
    accepted_at: str = ""  # "" when the record has expired
    envelope_sender: str = ""


@dataclass
class Page:
    messages: list[Found] = field(default_factory=list)
    scanned: int = 0  # stream entries read
    complete: bool = True  # False: the walk stopped at MAX_SCAN or a full page
    next: str = ""  # stream id to carry on below (Query.before) when not complete


def _day_ms(day: str, end: bool) -> int:
    date = datetime.date.fromisoformat(day)
    seconds = calendar.timegm(date.timetuple()) + (86400 if end else 0)
    return seconds * 1000 - (1 if end else 0)


def _matches(event: Event, query: Query) -> bool:
    if query.kind is not None and event.kind != query.kind:
        return False
    if query.tag is not None and query.tag not in event.tags:
        return False
    return not query.recipient or query.recipient in event.recipient.lower()


def _one(client: Client, keys: Keys, account: str, queue_id: str, ttl: int) -> Found | None:
    shown = message_json(client, keys, ttl, account, queue_id)
    if shown is None:
        return None
    return Found(
        message_id=shown["message_id"],
        recipients=list(shown["recipients"]),
        tags=list(shown["tags"]),
        kinds=list(dict.fromkeys(e["kind"] for e in reversed(shown["events"]))),
        last_event_at=shown["events"][-1]["timestamp"] if shown["events"] else "",
        accepted_at=shown["accepted_at"],
        envelope_sender=shown["envelope_sender"],
    )


def search(
    client: Client,
    keys: Keys,
    account: str,
    query: Query,
    ttl: int,
    limit: int = MAX_PAGE,
) -> Page:
    """Messages of `account` that match `query`, newest event first (see the module)."""
    if query.message_id:
        one = _one(client, keys, account, query.message_id, ttl)
        return Page(messages=[one] if one else [])
    limit = max(1, min(limit, MAX_PAGE))
    high = query.before and f"({query.before}"
    if not high:
        high = f"{_day_ms(query.until, end=True)}-18446744073709551615" if query.until else "+"
    low = f"{_day_ms(query.since, end=False)}-0" if query.since else "-"
    found: dict[str, Found] = {}
    page = Page()
    stream = keys.events(account)
    last_id = ""
    while page.scanned < MAX_SCAN:
        count = min(BATCH, MAX_SCAN - page.scanned)
        with guard(f"searching the events of {account}"):
            rows = decoded_entries(client.xrevrange(stream, high, low, count))
        page.scanned += len(rows)
        for stream_id, event in _events_of(rows):
            last_id = stream_id
            if not _matches(event, query) or not event.message_id:
                continue
            known = found.get(event.message_id)
            if known is None:
                if len(found) == limit:
                    # A full page: the next one starts at this event.
                    page.complete = False
                    page.next = _just_above(stream_id)
                    break
                known = found[event.message_id] = Found(
                    message_id=event.message_id,
                    recipients=[],
                    tags=list(event.tags),
                    kinds=[],
                    last_event_at=event.timestamp,
                )
            if event.recipient and event.recipient not in known.recipients:
                known.recipients.append(event.recipient)
            if event.kind not in known.kinds:
                known.kinds.append(event.kind)
        else:
            if len(rows) < count:
                break  # the start of the range
            high = f"({rows[-1][0]}"
            continue
        break
    else:
        page.complete = False
        page.next = last_id
    page.messages = list(found.values())
    _add_records(client, keys, account, page.messages)
    return page


def _just_above(stream_id: str) -> str:
    """The stream id right above `stream_id`, so that "(" of it starts at `stream_id`."""
    milliseconds, _, sequence = stream_id.partition("-")
    return f"{milliseconds}-{int(sequence) + 1}"


def _add_records(client: Client, keys: Keys, account: str, found: list[Found]) -> None:
    """Accepted time, sender and recipients from the records that still live (one pipeline;
    a found message always has the account's own key, so no other account's is read)."""
    if not found:
        return
    with guard(f"reading the records of {account}'s messages"):
        pipe = client.pipeline(transaction=False)
        for one in found:
            pipe.hgetall(keys.message(account, one.message_id))
        rows = pipe.execute()
    for one, raw in zip(found, rows, strict=True):
        if not raw:
            continue
        try:
            record = MessageRecord.from_hash(decoded_hash(raw))
        except (KeyError, ValueError, TypeError):
            continue
        one.accepted_at = _iso(record.accepted_at)
        one.envelope_sender = record.envelope_sender
        one.recipients = list(dict.fromkeys([*one.recipients, *record.recipients]))
