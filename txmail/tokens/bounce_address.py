"""Signed bounce addresses: the envelope sender every tracked message leaves with.

    bounces+TOKEN@RETURN_PATH_DOMAIN        TOKEN = QID32-MAC

QID32 is the Postfix queue id in lowercase base32 (RFC 4648 alphabet, no padding) and MAC the
first 40 bits of HMAC-SHA256(secret, "txmail-bounce-v1:" + queue id), also base32. Long queue ids
mix upper and lower case (4jXCs06YbRzJJ2Y); remote MTAs and mailbox software are allowed to fold
the case of a local part, so the token uses only characters whose case does not matter and is
compared case-insensitively. A 15-character queue id gives a 41-character local part, well inside
the 64 that RFC 5321 allows.

The MAC covers the queue id only, so the bounce pipe can check a token from the local part alone
(Postfix hands it ${recipient}); the return-path domain is routing, not identity.

Reads:  the secret(s) (the bounce key, txmail.store.secrets), passed in by the caller.
Fails:  bounce_address raises ValueError for a queue id that is not a Postfix queue id;
        verify_bounce_address returns None for anything forged, truncated or malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

LOCAL_PREFIX = "bounces"
MAC_BYTES = 5  # 40 bits: a forger gets one guess per bounce sent to us
MAC_CHARS = 8
MAX_LOCAL_PART = 64
_CONTEXT = b"txmail-bounce-v1:"
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,29}$")
_TOKEN = re.compile(rf"^([a-z2-7]+)-([a-z2-7]{{{MAC_CHARS}}})$")


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _mac(queue_id: str, secret: bytes) -> str:
    digest = hmac.new(secret, _CONTEXT + queue_id.encode("ascii"), hashlib.sha256).digest()
    return _b32(digest[:MAC_BYTES])


def bounce_token(queue_id: str, secret: bytes) -> str:
    """The TOKEN part of the bounce address for one message."""
    if not _QUEUE_ID.match(queue_id):
        raise ValueError(f"{queue_id!r} is not a Postfix queue id")
    return f"{_b32(queue_id.encode('ascii'))}-{_mac(queue_id, secret)}"


def bounce_address(
    queue_id: str, sender_domain: str, secret: bytes, return_path_domain: str
) -> str:
    """`bounces+TOKEN@RETURN_PATH_DOMAIN` for the message `queue_id`.

    `sender_domain` is the customer's domain the message is sent as; the token does not depend
    on it (see the module text), the caller picks `return_path_domain` for it
    (Domains.return_path_domain).
    """
    del sender_domain  # part of the interface; the return-path domain already reflects it
    local = f"{LOCAL_PREFIX}+{bounce_token(queue_id, secret)}"
    if len(local) > MAX_LOCAL_PART:  # cannot happen for ids _QUEUE_ID accepts; kept as a guard
        raise ValueError(f"queue id {queue_id!r} makes a local part longer than 64 characters")
    return f"{local}@{return_path_domain.lower()}"


def verify_bounce_address(
    address_or_local_part: str, secret: bytes | tuple[bytes, ...]
) -> str | None:
    """The queue id a bounce address was made for, or None when it is forged or malformed.

    `secret` may be several keys (the current one and the one a rotation replaced): a token
    made under any of them verifies. Accepts the whole address, its local part
    (`bounces+TOKEN`) or the bare token (Postfix's
    ${extension}), in any letter case.
    """
    text = address_or_local_part.strip().strip("<>")
    if len(text) > 320:  # untrusted input: nothing longer is a mail address
        return None
    local = text.rsplit("@", 1)[0].lower()
    if "+" in local:
        prefix, token = local.split("+", 1)
        if prefix != LOCAL_PREFIX:
            return None
    else:
        token = local
    match = _TOKEN.match(token)
    if not match:
        return None
    encoded, mac = match.groups()
    try:
        raw = base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8))
        queue_id = raw.decode("ascii")
    except (binascii.Error, ValueError):
        return None
    if not _QUEUE_ID.match(queue_id) or _b32(queue_id.encode("ascii")) != encoded:
        return None
    keys = (secret,) if isinstance(secret, bytes) else secret
    # Every key is tried, so the time taken does not say which one matched.
    matched = [hmac.compare_digest(_mac(queue_id, key), mac) for key in keys]
    return queue_id if any(matched) else None
