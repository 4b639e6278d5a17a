"""Standard Webhooks signatures: what a receiver checks to know a post came from this relay.

    webhook-id:        msg_... (the same for every retry of the same batch)
    webhook-timestamp: seconds since 1970, when this attempt was made
    webhook-signature: v1,BASE64(HMAC-SHA256(secret, "ID.TIMESTAMP.BODY"))

Each account has its own secret, derived from the installation's webhook key (kept in Redis,
txmail.store.secrets, so every node derives the same one) and the account name, so one
account's secret cannot sign another's posts. `txmail webhooks rotate-secret` gives an account a
random secret of its own; for an overlap both the old and the new one sign each post. It is
shown, as `whsec_BASE64`, only by `txmail webhooks secret ACCOUNT`;
it is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from txmail.store.secrets import StoredWebhookSecret

PREFIX = "whsec_"
TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its clock


def account_secret(webhook_key: bytes, account: str) -> bytes:
    """The secret derived from the installation's webhook key: the same on every node."""
    return hmac.new(webhook_key, f"txmail-webhook-v1:{account}".encode(), hashlib.sha256).digest()


def account_secrets(
    webhook_key: bytes | tuple[bytes, ...], account: str, stored: StoredWebhookSecret, now: float
) -> tuple[bytes, ...]:
    """The secrets the account's posts are signed with, the current one first: its own (after
    `txmail webhooks rotate-secret`) or the one derived from the webhook key, and during a
    rotation's overlap the one it replaced too. `webhook_key` may be the keys in force after
    a rotation of the webhook key itself (txmail.store.secrets.webhook_keys), current first."""
    keys = (webhook_key,) if isinstance(webhook_key, bytes) else webhook_key
    if stored.current:
        found = [stored.current]
    else:
        found = [account_secret(key, account) for key in keys]
    if stored.previous and now < stored.previous_until:
        found.append(stored.previous)
    return tuple(dict.fromkeys(found))


def secret_text(secret: bytes) -> str:
    """The secret as receivers are given it (Standard Webhooks form)."""
    return PREFIX + base64.b64encode(secret).decode("ascii")


def secret_bytes(text: str) -> bytes:
    return base64.b64decode(text[len(PREFIX) :] if text.startswith(PREFIX) else text)


def signature(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def headers(
    secret: bytes | tuple[bytes, ...], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one post; several secrets give several space-separated signatures (as
    Standard Webhooks allows), so receivers holding either secret accept it."""
    secrets = (secret,) if isinstance(secret, bytes) else secret
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
    }


def verify(
    secret: str | bytes,
    received: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int = TOLERANCE,
) -> bool:
    """True when `received` headers carry a valid, fresh signature of `body`."""
    key = secret_bytes(secret) if isinstance(secret, str) else secret
    lowered = {k.lower(): v for k, v in received.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(key, message_id, timestamp, body).split(",", 1)[1]
    for candidate in lowered.get("webhook-signature", "").split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False
