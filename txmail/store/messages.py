"""Message records: what txmail accepted, keyed by Postfix's long queue id.

Writes: PREFIX {ACCOUNT}:message:QID (hash) and PREFIX queue:QID (-> account), both with the
        same TTL, so any process that only knows a queue id (maillog follower, bounce pipe) can
        find the record.
Identity: a per-recipient copy the milter made of a client's message (txmail/milter/copies.py)
        has a record of its own under its own queue id, with `parent` = the client's queue id;
        `message_id` is the id the client knows (the parent's, or the message's own), and every
        event is written with it. The parent's record lists its `copies` (recipient -> queue
        id). Both fields are only stored when set, so other records are as before.
Accept: the milter writes an accepted message with accept(): the record, the account's tag
        totals, the day's counts and the count against the sending limits in one script call
        (scripts/message_accept.lua, every key in the account's slot), and the keys outside
        the slot as plain commands of the same pipeline: one round trip, four commands as the
        milter sends it (SET queue id, SET Message-ID, its /metrics HINCRBY, EVALSHA), three
        for a message without a Message-ID or a per-recipient copy.
Fails:  StoreUnavailable when Redis is down; the milter then answers 451 4.3.0.
Size:   a field whose value is the one from_hash() gives when it is absent (no envelope or
        recipient parameters, flags, BCC, blocked recipients, return path or Message-ID) is not
        stored, by record() and accept() alike (stored_fields): about 64 of a record's 500
        bytes, on every record Redis keeps for 30 days (bench/redis_memory.py). Records that
        have them still read the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster

from txmail.store import (
    Client,
    Keys,
    decoded,
    decoded_hash,
    decoded_or_none,
    guard,
    hash_mapping,
    scripts,
)


@dataclass
class MessageRecord:
    queue_id: str
    account: str
    envelope_sender: str
    recipients: list[str]
    size: int = 0
    accepted_at: float = field(default_factory=time.time)
    envelope_params: list[str] = field(default_factory=list)
    recipient_params: dict[str, list[str]] = field(default_factory=dict)
    header_message_id: str = ""
    # Set by the milter's rules (issue 3): what the message carries and where it went.
    tags: list[str] = field(default_factory=list)
    message_class: str = "standard"
    flags: int | None = None
    bcc: str = ""
    blocked: dict[str, str] = field(default_factory=dict)  # recipient -> reason
    return_path: str = ""  # the rewritten envelope sender ("" when not rewritten)
    parent: str = ""  # a per-recipient copy: the queue id of the client's message
    copies: dict[str, str] = field(default_factory=dict)  # recipient -> queue id of its copy

    @property
    def message_id(self) -> str:
        """The id the client was given (the 250 reply), which every event carries."""
        return self.parent or self.queue_id

    def carried_recipients(self) -> list[str]:
        """The recipients this queue file itself was delivered to: not those the milter moved
        to copies of their own, nor those it blocked. A bounce address vouches for these only:
        with one envelope sender per queue file, each of them holds it."""
        moved = {r.lower() for r in self.copies} | {r.lower() for r in self.blocked}
        return [r for r in self.recipients if r.lower() not in moved]

    def to_hash(self) -> dict[str, str]:
        return {
            "queue_id": self.queue_id,
            "account": self.account,
            "envelope_sender": self.envelope_sender,
            "recipients": json.dumps(self.recipients),
            "size": str(self.size),
            "accepted_at": repr(self.accepted_at),
            "envelope_params": json.dumps(self.envelope_params),
            "recipient_params": json.dumps(self.recipient_params),
            "header_message_id": self.header_message_id,
            "tags": json.dumps(self.tags),
            "message_class": self.message_class,
            "flags": "" if self.flags is None else str(self.flags),
            "bcc": self.bcc,
            "blocked": json.dumps(self.blocked),
            "return_path": self.return_path,
            **({"parent": self.parent} if self.parent else {}),
            **({"copies": json.dumps(self.copies)} if self.copies else {}),
        }

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> MessageRecord:
        return cls(
            queue_id=raw["queue_id"],
            account=raw["account"],
            envelope_sender=raw.get("envelope_sender", ""),
            recipients=json.loads(raw.get("recipients", "[]")),
            size=int(raw.get("size", "0")),
            accepted_at=float(raw.get("accepted_at", "0")),
            envelope_params=json.loads(raw.get("envelope_params", "[]")),
            recipient_params=json.loads(raw.get("recipient_params", "{}")),
            header_message_id=raw.get("header_message_id", ""),
            tags=json.loads(raw.get("tags", "[]")),
            message_class=raw.get("message_class", "standard"),
            flags=int(raw["flags"]) if raw.get("flags") else None,
            bcc=raw.get("bcc", ""),
            blocked=json.loads(raw.get("blocked", "{}")),
            return_path=raw.get("return_path", ""),
            parent=raw.get("parent", ""),
            copies=json.loads(raw.get("copies", "{}")),
        )


# Values from_hash() reads for an absent field: such fields are not stored (module text).
ABSENT = {
    "envelope_params": "[]",
    "recipient_params": "{}",
    "header_message_id": "",
    "flags": "",
    "bcc": "",
    "blocked": "{}",
    "return_path": "",
}


def stored_fields(message: MessageRecord) -> dict[str, str]:
    """The record's hash as Redis keeps it: to_hash() without the fields at their absent
    value."""
    return {k: v for k, v in message.to_hash().items() if ABSENT.get(k) != v}


class Messages:
    def __init__(self, client: Client, keys: Keys, ttl_seconds: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl_seconds

    def record(self, message: MessageRecord, also: Callable[[Any], None] | None = None) -> None:
        """Write the record; `also(pipeline)` may queue more writes for the same round trip
        (the milter's blocked events and tag counts)."""
        with guard(f"{message.queue_id}: recording the message"):
            pipe = self.client.pipeline(transaction=False)
            self._finders(pipe, message)
            key = self.keys.message(message.account, message.queue_id)
            pipe.hset(key, mapping=hash_mapping(stored_fields(message)))
            pipe.expire(key, self.ttl)
            if also is not None:
                also(pipe)
            pipe.execute()

    def _finders(self, pipe: Any, message: MessageRecord) -> None:
        """Queue the keys outside the account's slot that find a message: its queue id, and
        its header Message-ID (the bounce pipe finds a message from a bounce that quotes only
        its header; a copy leaves that to its parent)."""
        pipe.set(self.keys.queue(message.queue_id), message.account, ex=self.ttl)
        if message.header_message_id and not message.parent:
            pipe.set(
                self.keys.header_message_id(message.header_message_id[:998]),
                message.queue_id,
                ex=self.ttl,
            )

    def accept(
        self, message: MessageRecord, counting: Counting, also: Callable[[Any], None] | None = None
    ) -> list[int]:
        """Write an accepted message: its record and `counting`, in one round trip;
        `also(pipeline)` may queue more commands outside the account's slot (the milter's
        count for /metrics). Returns message_accept.lua's answer (folded tags, then what was
        counted against the limits)."""
        call_keys, args = counting.script_call(self.keys, message, self.ttl)
        with guard(f"{message.queue_id}: recording the message"):
            pipe = self.client.pipeline(transaction=False)
            self._finders(pipe, message)
            if also is not None:
                also(pipe)
            # EVALSHA, not EVAL: the script's text is not sent, nor hashed by Redis, for each
            # message. execute_command: a cluster pipeline routes it by its first key.
            pipe.execute_command(
                "EVALSHA", scripts.sha("message_accept"), len(call_keys), *call_keys, *args
            )
            results = pipe.execute(raise_on_error=False)
            answer = results[-1]
            if isinstance(answer, redis.exceptions.NoScriptError):
                # A Redis that restarted or was flushed has lost its scripts: the call never
                # ran, so running it again with the text counts the message once.
                answer = self.client.execute_command(
                    "EVAL", scripts.text("message_accept"), len(call_keys), *call_keys, *args
                )
            for result in (*results[:-1], answer):
                if isinstance(result, Exception):
                    raise result
        return [int(value) for value in answer]

    def get(self, queue_id: str) -> MessageRecord | None:
        with guard(f"{queue_id}: reading the message record"):
            account = self.client.get(self.keys.queue(queue_id))
            if account is None:
                return None
            raw = decoded_hash(self.client.hgetall(self.keys.message(decoded(account), queue_id)))
        return MessageRecord.from_hash(raw) if raw else None

    def get_many(self, queue_ids: list[str]) -> dict[str, MessageRecord | None]:
        """get() of several messages in one round trip on a single Redis (messages_get.lua),
        two on a Redis Cluster (the maillog follower reads a batch of log lines at a time)."""
        if not queue_ids:
            return {}
        if not isinstance(self.client, redis.cluster.RedisCluster):
            with guard("reading message records"):
                rows = scripts.get(self.client, "messages_get")(
                    keys=[self.keys.queue(queue_id) for queue_id in queue_ids],
                    args=[self.keys.prefix, *queue_ids],
                )
            return {
                queue_id: MessageRecord.from_hash(
                    {decoded(k): decoded(v) for k, v in zip(row[::2], row[1::2], strict=True)}
                )
                if row
                else None
                for queue_id, row in zip(queue_ids, rows, strict=True)
            }
        return self.get_many_pipelined(queue_ids)

    def get_many_pipelined(self, queue_ids: list[str]) -> dict[str, MessageRecord | None]:
        """get_many() in two pipelines, as on a Redis Cluster."""
        with guard("reading message records"):
            pipe = self.client.pipeline(transaction=False)
            for queue_id in queue_ids:
                pipe.get(self.keys.queue(queue_id))
            accounts = pipe.execute()
            known = [(q, a) for q, a in zip(queue_ids, accounts, strict=True) if a is not None]
            pipe = self.client.pipeline(transaction=False)
            for queue_id, account in known:
                pipe.hgetall(self.keys.message(account, queue_id))
            rows = pipe.execute() if known else []
        found: dict[str, MessageRecord | None] = dict.fromkeys(queue_ids)
        for (queue_id, _), raw in zip(known, rows, strict=True):
            found[queue_id] = MessageRecord.from_hash(raw) if raw else None
        return found

    def find_by_header_message_id(self, message_id: str) -> MessageRecord | None:
        """The message whose Message-ID header was `message_id` (with its angle brackets)."""
        with guard("finding a message by its Message-ID"):
            queue_id = decoded_or_none(
                self.client.get(self.keys.header_message_id(message_id.strip()[:998]))
            )
        return self.get(queue_id) if queue_id else None


@dataclass(frozen=True)
class Counting:
    """What message_accept.lua counts beside an accepted message's record: its tags on the
    account's totals and on the day's counts (stats.tags_count_call), and, unless `commit` is
    None, the message against the sending limits (accounts.usage.commit_call)."""

    day_key: str  # PREFIX {ACCOUNT}:counts:DAY
    day_args: list[Any]  # tags_count.lua's ARGV[1..3]: TTL, tags a day, kind
    commit: tuple[list[str], list[Any]] | None  # policy_commit.lua's KEYS and ARGV

    def script_call(
        self, keys: Keys, message: MessageRecord, ttl: int
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of message_accept.lua (its header documents them)."""
        commit_keys, commit_args = self.commit if self.commit is not None else ([], [])
        # the record as Messages.record writes it: no field at its absent value (module text)
        fields = [part for pair in stored_fields(message).items() for part in pair]
        return (
            [
                keys.message(message.account, message.queue_id),
                keys.tag_counts(message.account),
                self.day_key,
                *commit_keys,
            ],
            [
                ttl,
                "0" if self.commit is None else "1",
                *(commit_args or [""] * 8),
                *self.day_args,
                len(message.tags),
                *message.tags,
                *fields,
            ],
        )
