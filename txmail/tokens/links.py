"""Tracking tokens: what an open pixel or a tracked link carries, signed so nobody can forge one.

SYNOPSIS
    signer = LinkSigner(secret)
    token = signer.sign(Mark("click", account, queue_id, recipient, index, url))
    mark = signer.verify(token)          # None when forged, cut or tampered

DESCRIPTION
    A token is two base64url parts joined by ".": the payload (a compact JSON list: version,
    kind, account, queue id, recipient, link index, time of sending and, for a click, the
    target URL) and the
    first 16 bytes of its HMAC-SHA256 under a key derived from secrets.tracking_key_file.
    Nothing about a token is kept in Redis, so the tracker answers without a lookup and a
    token stays valid as long as the key does.

    The tracker redirects only to the URL inside a token whose signature verifies: there is no
    way to make it redirect anywhere else (no open redirect). Anything that does not verify,
    however it was changed, is answered 404 by the tracker.

SECURITY
    The comparison is constant-time (hmac.compare_digest). Tokens longer than MAX_TOKEN are
    refused before any decoding. Only http and https targets are ever signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERSION = 1
KINDS = ("open", "click")
MAX_TOKEN = 8192  # a tracked URL of about 6 KB; browsers and proxies cut longer ones
MAC_BYTES = 16


@dataclass(frozen=True)
class Mark:
    """What one token says: which message and recipient, and for a click which link."""

    kind: str  # "open" or "click"
    account: str
    queue_id: str  # Postfix's long queue id: the message_id of events
    recipient: str  # always one recipient (milter/copies.py); "" in older tokens
    index: int = 0  # position of the link among the message's tracked links
    url: str = ""  # click target (http or https), "" for an open
    sent_at: int = 0  # when the milter accepted the message (seconds since 1970)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies tracking tokens under one secret."""

    def __init__(self, secret: bytes | Callable[[], tuple[bytes, ...]]) -> None:
        """`secret`: the key, or a function giving the keys in force (the current one first,
        then one a rotation replaced; txmail.store.secrets), asked at every use."""
        self._secrets = secret if callable(secret) else (lambda: (secret,))
        self._derived: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())
        self._keys()  # a key that is too short fails here, at start-up

    def _keys(self) -> tuple[bytes, ...]:
        secrets = self._secrets()
        if secrets != self._derived[0]:
            if not secrets or any(len(s) < 16 for s in secrets):
                raise ValueError("the tracking secret must have at least 16 bytes")
            # A key of its own, so a tracking MAC can never be replayed as another txmail MAC.
            self._derived = (
                secrets,
                tuple(
                    hmac.new(s, b"txmail tracking token v1", hashlib.sha256).digest()
                    for s in secrets
                ),
            )
        return self._derived[1]

    def _mac(self, payload: bytes, key: bytes | None = None) -> bytes:
        key = self._keys()[0] if key is None else key
        return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def _genuine(self, payload: bytes, given: bytes) -> bool:
        matched = [hmac.compare_digest(given, self._mac(payload, k)) for k in self._keys()]
        return any(matched)

    def sign(self, mark: Mark) -> str:
        if mark.kind not in KINDS:
            raise ValueError(f"unknown tracking kind {mark.kind!r}")
        if mark.kind == "click" and not mark.url.lower().startswith(("http://", "https://")):
            raise ValueError("only http and https links are tracked")
        fields = [
            VERSION,
            mark.kind,
            mark.account,
            mark.queue_id,
            mark.recipient,
            mark.index,
            mark.sent_at,
        ]
        if mark.kind == "click":
            fields.append(mark.url)
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str) -> Mark | None:
        """The Mark of a genuine token; None for anything else."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            return None
        encoded, mac = token.split(".")
        try:
            payload = _unb64(encoded)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if _b64(payload) != encoded or _b64(given) != mac:
            return None  # non-canonical base64 (unused low bits set): not what we wrote
        if not self._genuine(payload, given):
            return None
        try:
            fields = json.loads(payload)
        except ValueError:
            return None
        return _mark(fields)


def _mark(fields: object) -> Mark | None:
    """A Mark from a signed payload; None if its layout is not one this version wrote."""
    if not isinstance(fields, list) or len(fields) < 7 or fields[0] != VERSION:
        return None
    _, kind, account, queue_id, recipient, index, sent_at, *rest = fields
    if kind not in KINDS or not all(isinstance(v, str) for v in (account, queue_id, recipient)):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, sent_at)):
        return None
    url = rest[0] if rest and isinstance(rest[0], str) else ""
    if kind == "click" and not url.lower().startswith(("http://", "https://")):
        return None
    return Mark(
        kind=kind,
        account=account,
        queue_id=queue_id,
        recipient=recipient,
        index=index,
        url=url,
        sent_at=sent_at,
    )


@dataclass(frozen=True)
class Tracking:
    opens: bool
    clicks: bool

    def __bool__(self) -> bool:
        return self.opens or self.clicks


def public_base_url(settings: Any) -> str:
    """tracker.base_url, else https://HOSTNAME (the relay's own name)."""
    tracker = getattr(settings, "tracker", None)
    configured = getattr(tracker, "base_url", "") if tracker is not None else ""
    return (configured or f"https://{settings.hostname}").rstrip("/")
