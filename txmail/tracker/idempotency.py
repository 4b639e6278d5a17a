"""Idempotency-Key on POST /v1/send: a request sent again gets the first answer, not a second
message.

SYNOPSIS
    key = parse_key(request.headers.get("Idempotency-Key"))     # None, or ValueError
    marker, held = claim(client, keys, account, key, body_hash(body), pending_seconds, token)
    settle(client, keys, account, key, marker, body_hash(body), (status, text) | None)

DESCRIPTION
    A client that lost the answer to a send (a timeout, a dropped connection) sends the same
    request again with the same Idempotency-Key header. Within ANSWER_SECONDS (24 hours) of
    the first, per account:

      * the key is claimed in one step (store/scripts/idempotency_claim.lua) with a pending
        marker that carries the SHA-256 of the request body, so of two requests racing with
        the same key exactly one goes on; the other is told so (Held.pending: the API answers
        409 and the client asks again a few seconds later);
      * when the request has its answer from Postfix (the message queued, or refused for good)
        that answer, status and body, replaces the marker (idempotency_settle.lua), and every
        later request with the key and the same body gets it back without sending anything;
      * the same key with a different body is a mistake of the client's (Held.body_hash
        differs: the API answers 422);
      * an answer that did not come from Postfix (bad input, a limit of the request) or a
        temporary refusal frees the key, so the corrected request, or the retry, goes ahead;
      * an unknown outcome (the message handed to Postfix, its answer lost: it may be queued)
        is kept like a final answer (tracker/api.py), so the key never sends it twice.

    The pending marker lapses after `pending_seconds` (the longest a send can take), so a
    tracker that died mid-send holds a key that long at most. The key as sent is never stored:
    Redis keeps its SHA-256 (PREFIX {ACCOUNT}:idempotency:HASH), so its length and characters
    never reach a key name.

FAILURE
    StoreUnavailable when Redis is down: claim() before anything was sent (the API answers 503
    and nothing is sent); settle() after the answer is known, which the caller logs and
    answers all the same (the marker then lapses after `pending_seconds`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from txmail.store import Client, Keys, decoded_or_none, guard, scripts

ANSWER_SECONDS = 24 * 3600
MAX_KEY = 255
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # MAX_KEY
KEY_RULE = (
    f"Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters (letters, digits, "
    "punctuation; no spaces), for example a UUID"
)


@dataclass(frozen=True)
class Held:
    """What holds a key another request claimed first."""

    body_hash: str
    pending: bool  # the first request has no answer yet
    status: int = 0  # the first answer, when not pending
    answer: str = ""


def parse_key(header: str | None) -> str | None:
    """The Idempotency-Key as sent, None without one; ValueError(KEY_RULE) when malformed."""
    if header is None:
        return None
    if not KEY.match(header):
        raise ValueError(KEY_RULE)
    return header


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _redis_key(keys: Keys, account: str, key: str) -> str:
    return keys.idempotency(account, hashlib.sha256(key.encode("ascii")).hexdigest())


def pending_marker(request_hash: str, token: str) -> str:
    return json.dumps({"pending": token, "body": request_hash}, separators=(",", ":"))


def claim(
    client: Client,
    keys: Keys,
    account: str,
    key: str,
    request_hash: str,
    pending_seconds: int,
    token: str,
) -> tuple[str, Held | None]:
    """Claim `key` for a request whose body hashes to `request_hash`: (the pending marker
    set, None) when it is this request's now, else ("", what holds it). `token` makes the
    marker this request's own (a random string)."""
    marker = pending_marker(request_hash, token)
    with guard("claiming an Idempotency-Key"):
        found = decoded_or_none(
            scripts.get(client, "idempotency_claim")(
                keys=[_redis_key(keys, account, key)], args=[marker, pending_seconds]
            )
        )
    if found is None:
        return marker, None
    try:
        raw = json.loads(found)
        if "pending" in raw:
            return "", Held(body_hash=str(raw["body"]), pending=True)
        return "", Held(
            body_hash=str(raw["body"]),
            pending=False,
            status=int(raw["status"]),
            answer=str(raw["answer"]),
        )
    except (ValueError, KeyError, TypeError):
        # Not written by this module: treat it as in flight rather than send twice.
        return "", Held(body_hash=request_hash, pending=True)


def settle(
    client: Client,
    keys: Keys,
    account: str,
    key: str,
    marker: str,
    request_hash: str,
    answer: tuple[int, str] | None,
) -> bool:
    """Keep `answer` (HTTP status, body text) for `key` for ANSWER_SECONDS, or free the key
    (None). False when the key no longer held this request's `marker`."""
    kept = (
        ""
        if answer is None
        else json.dumps(
            {"body": request_hash, "status": answer[0], "answer": answer[1]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    )
    with guard("keeping the answer to an Idempotency-Key"):
        done = scripts.get(client, "idempotency_settle")(
            keys=[_redis_key(keys, account, key)], args=[marker, kept, ANSWER_SECONDS]
        )
    return bool(int(done))
