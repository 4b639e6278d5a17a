"""Message records: what txmail accepted, keyed by Postfix's long queue id.

Writes: PREFIX {ACCOUNT}:message:QID (hash) and PREFIX queue:QID (-> account), both with the
        same TTL, so any process that only knows a queue id (maillog follower, bounce pipe) can
        find the record.
Fails:  StoreUnavailable when Redis is down; the milter then answers 451 4.3.0.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from txmail.store import Client, Keys, guard


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

    def to_hash(self) -> dict[str, str]:
        return {"queue_id": self.queue_id, "account": self.account,
                "envelope_sender": self.envelope_sender,
                "recipients": json.dumps(self.recipients), "size": str(self.size),
                "accepted_at": repr(self.accepted_at),
                "envelope_params": json.dumps(self.envelope_params),
                "recipient_params": json.dumps(self.recipient_params),
                "header_message_id": self.header_message_id}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> MessageRecord:
        return cls(queue_id=raw["queue_id"], account=raw["account"],
                   envelope_sender=raw.get("envelope_sender", ""),
                   recipients=json.loads(raw.get("recipients", "[]")),
                   size=int(raw.get("size", "0")),
                   accepted_at=float(raw.get("accepted_at", "0")),
                   envelope_params=json.loads(raw.get("envelope_params", "[]")),
                   recipient_params=json.loads(raw.get("recipient_params", "{}")),
                   header_message_id=raw.get("header_message_id", ""))


class Messages:
    def __init__(self, client: Client, keys: Keys, ttl_seconds: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl_seconds

    def record(self, message: MessageRecord) -> None:
        with guard(f"{message.queue_id}: recording the message"):
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.queue(message.queue_id), message.account, ex=self.ttl)
            key = self.keys.message(message.account, message.queue_id)
            pipe.hset(key, mapping=message.to_hash())
            pipe.expire(key, self.ttl)
            pipe.execute()

    def get(self, queue_id: str) -> MessageRecord | None:
        with guard(f"{queue_id}: reading the message record"):
            account = self.client.get(self.keys.queue(queue_id))
            if account is None:
                return None
            raw = self.client.hgetall(self.keys.message(account, queue_id))
        return MessageRecord.from_hash(raw) if raw else None
