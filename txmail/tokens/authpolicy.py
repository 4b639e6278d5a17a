"""The secret txmail authpolicy shares with Dovecot, and the values derived from it.

One key file (authpolicy.key_file, 0600, created by `txmail init` or, for an older state
directory, by the first `txmail up`) gives three independent values, each an HMAC-SHA256 of the
key under its own label, so that none of them reveals another:

    the request header   Dovecot sends it with every policy request; the server refuses
                         requests without it (any local user can reach a loopback port)
    the hash nonce       auth_policy_hash_nonce: Dovecot sends H(nonce, login, password)
                         truncated to 64 bits, never the password
    the fingerprint key  the server keys what it stores in Redis with it, so Redis holds no
                         value that can test a password guess without this node's key

Fails: ConfigError naming the file when it cannot be read or is too short.
"""

from __future__ import annotations

import hashlib
import hmac

from txmail.config import Settings, read_key_file
from txmail.files import write_secret

HEADER = "X-Txmail-Authpolicy-Key"


def ensure_key(settings: Settings) -> None:
    """Create the key file (32 random bytes, hex, mode 0600) unless it exists."""
    write_secret(settings.path(settings.authpolicy.key_file))


def read_key(settings: Settings) -> bytes:
    return read_key_file(
        "authpolicy.key_file",
        settings.path(settings.authpolicy.key_file),
        " (run `txmail init` again to create it)",
    )


def _derive(key: bytes, label: str) -> str:
    return hmac.new(key, f"txmail authpolicy {label}".encode(), hashlib.sha256).hexdigest()


def header_value(key: bytes) -> str:
    return _derive(key, "request header")


def hash_nonce(key: bytes) -> str:
    return _derive(key, "dovecot hash nonce")


def fingerprint_key(key: bytes) -> bytes:
    return _derive(key, "fingerprint").encode()
