"""Console tokens: the session cookie, its CSRF token and the operator's login token.

SYNOPSIS
    signer = ConsoleSigner(lambda: (key,))            # keys in force, the current one first
    cookie = signer.sign_session(Session("s1", "shop", False, expires=now + 3600))
    session = signer.verify_session(cookie, now)     # None: forged, cut, changed or expired
    signer.csrf_token("s1"); signer.check_csrf("s1", given)
    token = signer.sign_operator(expires=now + 3600)  # what `txmail console token` prints
    signer.verify_operator(token, now)                # True while it verifies and lives

DESCRIPTION
    Each value is base64url(payload) "." base64url(MAC), the MAC the first 16 bytes of an
    HMAC-SHA256 under a key derived from the console key (secrets.console_key_file, kept in
    Redis) with a label of its own per kind, so a session cookie can never pass as an operator
    token or a CSRF token and none of them as any other txmail token. The payload of a session
    is a JSON list [version, session id, account, operator, expiry]; of an operator token
    [version, "operator", random nonce, expiry]. A CSRF token is the MAC of the session id
    alone: one per session, changed with every login.

    Verifying alone never grants a session: the console also finds the session's record in
    Redis (tracker/console/session.py), which logout and suspension delete.

SECURITY
    Constant-time comparison; values longer than MAX_TOKEN are refused before any decoding;
    after `txmail secrets rotate console` the previous key still verifies until the next
    rotation, and `--revoke` ends every session and token at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

VERSION = 1
MAX_TOKEN = 1024
MAC_BYTES = 16
LABELS = {
    "session": b"txmail console session",
    "csrf": b"txmail console csrf",
    "operator": b"txmail console operator",
}


@dataclass(frozen=True)
class Session:
    """What a session cookie says."""

    session_id: str
    account: str  # "" for an operator
    operator: bool
    expires: float  # seconds since 1970


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


class ConsoleSigner:
    """Signs and verifies the console's values under the console key."""

    def __init__(self, keys: Callable[[], tuple[bytes, ...]]) -> None:
        """`keys`: the console keys in force, the current one first (asked at every use)."""
        self._keys = keys

    def _derived(self, kind: str) -> list[bytes]:
        found = self._keys()
        if not found or any(len(k) < 16 for k in found):
            raise ValueError("the console key must have at least 16 bytes")
        return [hmac.new(k, LABELS[kind], hashlib.sha256).digest() for k in found]

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def _sign(self, kind: str, payload: list[object]) -> str:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return f"{_b64(raw)}.{_b64(self._mac(self._derived(kind)[0], raw))}"

    def _verify(self, kind: str, token: str) -> list[object] | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        try:
            raw, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not any(hmac.compare_digest(self._mac(k, raw), given) for k in self._derived(kind)):
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, list) or not payload or payload[0] != VERSION:
            return None
        return payload

    # -- sessions -----------------------------------------------------------------------

    def sign_session(self, session: Session) -> str:
        return self._sign(
            "session",
            [VERSION, session.session_id, session.account, session.operator, session.expires],
        )

    def verify_session(self, token: str, now: float) -> Session | None:
        payload = self._verify("session", token)
        if payload is None or len(payload) != 5:
            return None
        _, session_id, account, operator, expires = payload
        if not (
            isinstance(session_id, str)
            and isinstance(account, str)
            and isinstance(operator, bool)
            and isinstance(expires, int | float)
        ):
            return None
        if expires <= now or not session_id or (operator == bool(account)):
            return None
        return Session(session_id, account, operator, float(expires))

    def csrf_token(self, session_id: str) -> str:
        return _b64(self._mac(self._derived("csrf")[0], session_id.encode()))

    def check_csrf(self, session_id: str, given: str) -> bool:
        if not session_id or not isinstance(given, str) or len(given) > MAX_TOKEN:
            return False
        try:
            raw = _unb64(given)
        except (binascii.Error, ValueError):
            return False
        return any(
            hmac.compare_digest(self._mac(k, session_id.encode()), raw)
            for k in self._derived("csrf")
        )

    # -- operator tokens ------------------------------------------------------------------

    def sign_operator(self, expires: float) -> str:
        return self._sign("operator", [VERSION, "operator", secrets.token_urlsafe(12), expires])

    def verify_operator(self, token: str, now: float) -> bool:
        return self.operator_token(token, now) is not None

    def operator_token(self, token: str, now: float) -> tuple[str, float] | None:
        """(the token's random id, its expiry) for a good, unexpired operator token; None
        else. The console records the id at login, so a token logs in once."""
        payload = self._verify("operator", token.strip() if isinstance(token, str) else "")
        if payload is None or len(payload) != 4 or payload[1] != "operator":
            return None
        nonce, expires = payload[2], payload[3]
        if not isinstance(nonce, str) or not isinstance(expires, int | float) or expires <= now:
            return None
        return nonce, float(expires)
