"""Copy headers: what tells the copy listener that a queue file is a genuine per-recipient copy.

SYNOPSIS
    signer = CopySigner(secret)
    value = signer.sign(CopyHeader(parent, recipient, account, ...))   # X-CloudMTA-Copy value
    header = signer.verify(value)        # None when forged, cut, stale or of another layout

DESCRIPTION
    The milter makes per-recipient copies of a message (txmail.milter.copies) and submits
    them through Postfix's private copy listener with one header, X-CloudMTA-Copy: TOKEN.
    TOKEN is base64url(JSON) "." base64url(MAC), folded below FOLD_AT characters a line; the
    JSON carries the parent's queue id, the recipient, the account, whether and how to track
    (never for the BCC copy), the class, flags, tags and when it was made; the MAC is the first
    16 bytes of HMAC-SHA256 under a key derived from secrets.bounce_key_file with its own
    label, so no other txmail MAC can be replayed as one.

SECURITY
    Constant-time comparison; values longer than MAX_VALUE are refused before decoding; a
    header older than MAX_AGE seconds is refused (copies are made at once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from txmail.tokens.links import Tracking

HEADER = "X-CloudMTA-Copy"
VERSION = 1
MAC_BYTES = 16
MAX_VALUE = 8192  # cap what a header value can make us decode
MAX_AGE = 3600  # seconds a copy header stays good (copies are made at once)
FOLD_AT = 76


@dataclass(frozen=True)
class CopyHeader:
    """What X-CloudMTA-Copy says about one copy."""

    parent: str  # the client's queue id: the message_id of every event
    recipient: str
    account: str
    tracking: Tracking = Tracking(opens=False, clicks=False)
    bcc: bool = False  # single-recipient mode's BCC copy (never tracked)
    message_class: str = "standard"
    flags: int | None = None
    tags: tuple[str, ...] = ()
    made_at: int = 0
    track_bounces: bool = True  # the parent's choice (Account.tracks_bounces)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CopySigner:
    """Signs and verifies X-CloudMTA-Copy values under a key only the milter holds."""

    def __init__(
        self,
        secret: bytes | Callable[[], tuple[bytes, ...]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`secret`: the key, or a function giving the keys in force (the current one first;
        txmail.store.secrets), asked at every use."""
        self._secrets = secret if callable(secret) else (lambda: (secret,))
        self._derived: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())
        self.clock = clock
        self._keys()

    def _keys(self) -> tuple[bytes, ...]:
        secrets = self._secrets()
        if secrets != self._derived[0]:
            if not secrets or any(len(s) < 16 for s in secrets):
                raise ValueError("the copy secret must have at least 16 bytes")
            self._derived = (
                secrets,
                tuple(
                    hmac.new(s, b"txmail copy header v1", hashlib.sha256).digest() for s in secrets
                ),
            )
        return self._derived[1]

    def _mac(self, payload: bytes, key: bytes | None = None) -> bytes:
        key = self._keys()[0] if key is None else key
        return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, header: CopyHeader) -> str:
        """The header value, folded below FOLD_AT characters a line."""
        fields = [
            VERSION,
            header.parent,
            header.recipient,
            header.account,
            int(header.tracking.opens),
            int(header.tracking.clicks),
            int(header.bcc),
            header.message_class,
            header.flags,
            list(header.tags),
            header.made_at or int(self.clock()),
            int(header.track_bounces),
        ]
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        value = f"{_b64(payload)}.{_b64(self._mac(payload))}"
        return "\r\n ".join(value[i : i + FOLD_AT] for i in range(0, len(value), FOLD_AT))

    def verify(self, value: str) -> CopyHeader | None:
        """The CopyHeader of a genuine, fresh value; None for anything else."""
        if len(value) > MAX_VALUE:
            return None
        token = "".join(value.split())
        if token.count(".") != 1:
            return None
        encoded, mac = token.split(".")
        try:
            payload, given = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not any([hmac.compare_digest(given, self._mac(payload, k)) for k in self._keys()]):
            return None
        try:
            header = _header(json.loads(payload))
        except (ValueError, TypeError):
            return None
        if header is None or abs(self.clock() - header.made_at) > MAX_AGE:
            return None
        return header


def _header(fields: Any) -> CopyHeader | None:
    """A CopyHeader from a signed payload; None if its layout is not one this version wrote."""
    # 11 fields: written before the per-message bounce tracking choice (tracked, as then)
    if not isinstance(fields, list) or len(fields) not in (11, 12) or fields[0] != VERSION:
        return None
    _, parent, recipient, account, opens, clicks, bcc, message_class, flags, tags, made_at = fields[
        :11
    ]
    track_bounces = fields[11] if len(fields) == 12 else 1
    if not all(isinstance(v, str) and v for v in (parent, recipient, account, message_class)):
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    if (flags is not None and not isinstance(flags, int)) or not isinstance(made_at, int):
        return None
    return CopyHeader(
        parent=parent,
        recipient=recipient,
        account=account,
        tracking=Tracking(opens=bool(opens), clicks=bool(clicks)),
        bcc=bool(bcc),
        message_class=message_class,
        flags=flags,
        tags=tuple(tags),
        made_at=made_at,
        track_bounces=bool(track_bounces),
    )
