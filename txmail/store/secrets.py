"""The installation's HMAC keys, kept in Redis so every node signs and verifies with the same ones.

SYNOPSIS
    shared = SharedSecrets(client, keys, settings)
    shared.current("bounce_key_file")      # bytes: what new tokens are signed with
    shared.accepted("bounce_key_file")     # (current, previous...): what tokens may verify with
    shared.rotate("tracking_key_file")     # a new current key; the old one verifies a while
    shared.rotate("bounce_key_file", revoke=True)   # a leaked key: the old one is dropped now
    accepted(settings, client, "bounce_key_file")   # the same, through a per-process cache

DESCRIPTION
    Four keys sign what the relay hands out and later trusts: the bounce key (bounce addresses,
    copy headers), the tracking key (open and click links), the webhook key (from which each
    account's webhook secret is derived) and the console key (console session cookies and
    operator tokens, txmail/tokens/console.py). Each lives in one Redis hash (see
    txmail.store.keys):

        PREFIX secret:NAME   hash   current (the key, text), previous (the key it replaced),
                                    rotated_at (seconds since 1970)

    NAME is bounce, tracking, webhook or console. The first process that finds the hash
    empty creates it with HSETNX, from the node's key file when it has one (so a relay that
    kept its keys in files keeps them, and every token it handed out stays valid) or else
    from random bytes; whoever comes second reads what the first wrote. Every command touches
    one key, so it runs on a Redis Cluster unchanged.

    The key files named by secrets.* are caches: written (mode 0600) when a node joins with
    `txmail init --redis-url` or starts (`txmail up`), read only when Redis cannot be reached
    and nothing was cached. A process that reads a key from Redis rewrites a cache file that
    holds another one; one that holds neither key in Redis is stale (a key made while Redis
    could not be reached, or a revoked one) and is logged once, by path, as it is replaced.
    Keys are cached in each process for `refresh` seconds, so a rotation reaches every node
    within that time. After a rotation (`txmail secrets rotate NAME`) tokens signed with the
    previous key keep verifying until the next rotation, so a token handed out lives its
    lifetime as long as keys are rotated less often than that (bounce tokens: the message's
    milter.message_ttl_days). A leaked key is revoked with `txmail secrets rotate NAME
    --revoke`: a new key, and the old one dropped at once (secret_revoke.lua), so tokens
    signed before stop verifying on every node within `refresh` seconds.

    Each account's webhook secret is derived from the webhook key (txmail.tokens.webhooks)
    unless `txmail webhooks rotate-secret` gave it one of its own:

        PREFIX {ACCOUNT}:webhook:secret  hash  current, previous (base64), previous_until

Fails: StoreUnavailable when Redis is down and no key was read before; the keys are never
logged.
"""

from __future__ import annotations

import base64
import logging
import secrets as random_source
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from txmail.config import read_key_file
from txmail.errors import ConfigError, StoreUnavailable
from txmail.files import write_private
from txmail.store import Client, Keys, decoded_hash, guard, hash_mapping, scripts

if TYPE_CHECKING:
    from txmail.config import Settings

log = logging.getLogger("txmail.store.secrets")

# secrets.* setting -> NAME of its hash
NAMES = {
    "bounce_key_file": "bounce",
    "tracking_key_file": "tracking",
    "webhook_key_file": "webhook",
    "console_key_file": "console",
}
REFRESH_SECONDS = 5.0
MIN_BYTES = 16


@dataclass(frozen=True)
class KeyRing:
    """One key as it stands: the current value and the one it replaced (if any)."""

    current: bytes
    previous: bytes = b""
    rotated_at: float = 0.0

    @property
    def accepted(self) -> tuple[bytes, ...]:
        return (self.current, self.previous) if self.previous else (self.current,)


def safe_to_rotate_at(ring: KeyRing, lifetime: float) -> float:
    """When `ring` may be rotated again without cutting off a token: a rotation drops the
    previous key, so the tokens it signed must have outlived their `lifetime` (seconds) by
    then. 0 when it has never been rotated."""
    return ring.rotated_at + lifetime if ring.previous else 0.0


def new_key() -> bytes:
    """A fresh key as `txmail init` writes them: 32 random bytes as hex."""
    return random_source.token_hex(32).encode()


def _setting(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"no shared secret {name!r} (there are: {', '.join(NAMES)})")
    return name


class SharedSecrets:
    """The shared keys over one Redis client, each cached `refresh` seconds."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        settings: Settings | None = None,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.refresh = refresh
        self.clock = clock
        self._cached: dict[str, tuple[float, KeyRing]] = {}
        self._on_disk: dict[str, bytes] = {}  # the current key each cache file was checked for
        self._lock = threading.Lock()

    def _file(self, name: str) -> Path | None:
        if self.settings is None:
            return None
        return self.settings.path(getattr(self.settings.secrets, name))

    def _seed(self, name: str) -> bytes:
        path = self._file(name)
        if path is not None and path.exists():
            # A node's own key file seeds the installation; one this process cannot read
            # fails (ConfigError) rather than give everybody a key of its own making.
            return read_key_file(f"secrets.{name}", path)
        return new_key()

    def _read(self, name: str) -> KeyRing:
        key = self.keys.secret(NAMES[name])
        with guard(f"reading the {NAMES[name]} key"):
            raw = decoded_hash(self.client.hgetall(key))
            if not raw.get("current"):
                # First reader of a new installation: create it, once, for everybody.
                self.client.hsetnx(key, "current", self._seed(name).decode())
                raw = decoded_hash(self.client.hgetall(key))
        ring = KeyRing(
            current=raw["current"].encode(),
            previous=raw.get("previous", "").encode(),
            rotated_at=float(raw.get("rotated_at") or 0),
        )
        if len(ring.current) < MIN_BYTES:
            raise ConfigError(f"Redis key {key} holds a key of fewer than {MIN_BYTES} bytes")
        return ring

    def ring(self, name: str) -> KeyRing:
        name = _setting(name)
        now = self.clock()
        cached = self._cached.get(name)
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]
        try:
            ring = self._read(name)
        except StoreUnavailable:
            if cached is not None:
                # Redis is away: keep the keys we have, and ask again only after `refresh`
                # (the tracker asks from its event loop; every request must not wait).
                with self._lock:
                    self._cached[name] = (now, cached[1])
                return cached[1]
            path = self._file(name)
            if path is None or not path.exists():
                raise
            log.warning("Redis unavailable: the %s key comes from its cache file", NAMES[name])
            ring = KeyRing(read_key_file(f"secrets.{name}", path))
        else:
            self._keep_cache(name, ring, create=False)
        with self._lock:
            self._cached[name] = (now, ring)
        return ring

    def current(self, name: str) -> bytes:
        return self.ring(name).current

    def accepted(self, name: str) -> tuple[bytes, ...]:
        return self.ring(name).accepted

    def _keep_cache(self, name: str, ring: KeyRing, create: bool) -> Path | None:
        """Make the node's key file hold the current key (0600), checked once per key: it is
        what the node signs with when Redis cannot be reached, so a file holding another key
        is replaced, with one warning when it holds neither key in Redis (a stale file).
        Without `create` only a file that exists is rewritten, and trouble is left to the
        next `txmail up` (the daemons keep their node's caches fresh); with it (`txmail
        init`, `up`, `secrets rotate`) the file is made, and trouble is a ConfigError. The
        path when the file holds the current key."""
        path = self._file(name)
        if path is None or (not create and self._on_disk.get(name) == ring.current):
            return path
        try:
            held = path.read_bytes().strip() if path.exists() else None
            if held is None and not create:
                return None
            if held and held not in ring.accepted:
                # The file's path and what happens to it: never the key itself.
                log.warning(
                    "the %s key file %s is stale: it holds neither key in Redis (a key made "
                    "while Redis could not be reached, or a revoked one), and will be replaced "
                    "with the current key",
                    NAMES[name],
                    path,
                )
            if held != ring.current:
                write_private(path, ring.current + b"\n")
        except OSError as exc:
            if create:
                raise ConfigError(
                    f"cannot write the {NAMES[name]} key's cache file {path} "
                    f"({exc.strerror or exc}): run txmail as root, or let it write there"
                ) from exc
            written = None  # not this process's file (an unprivileged one): `up` keeps it
        else:
            written = path
        with self._lock:  # asked again when the key changes, not every `refresh`
            self._on_disk[name] = ring.current
        return written

    def write_cache(self, name: str) -> Path | None:
        """Write the current key to the node's key file (0600), as a cache; its path (None
        for a node without settings). ConfigError when it cannot be written."""
        return self._keep_cache(name, self.ring(name), create=True)

    def rotate(self, name: str, now: float | None = None, revoke: bool = False) -> KeyRing:
        """Make a new current key; the old one becomes `previous` (the one before is gone).
        With `revoke` (a leaked key) the old one is dropped too: nothing signed before the
        new key verifies any more, on every node within `refresh` seconds."""
        name = _setting(name)
        self._read(name)  # an installation without the key gets it first, as everywhere
        with guard(f"{'revoking' if revoke else 'rotating'} the {NAMES[name]} key"):
            # One key, one script: atomic, and on a Cluster in one slot.
            scripts.get(self.client, "secret_revoke" if revoke else "secret_rotate")(
                keys=[self.keys.secret(NAMES[name])],
                args=[new_key().decode(), repr(time.time() if now is None else now)],
            )
        with self._lock:
            self._cached.pop(name, None)
        return self._read(name)

    def in_force(self, name: str, overlap: float, now: float | None = None) -> tuple[bytes, ...]:
        """The key to sign with, and for `overlap` seconds after a rotation the one it
        replaced too (webhook posts carry a signature with each)."""
        ring = self.ring(name)
        now = time.time() if now is None else now
        if ring.previous and now < ring.rotated_at + overlap:
            return (ring.current, ring.previous)
        return (ring.current,)


def cache_keys(settings: Settings, client: Client) -> None:
    """Fetch every shared key from Redis into this node's cache files (0600), creating the
    installation's keys there if it has none (`txmail init --redis-url`, `txmail up`).
    StoreUnavailable when Redis does not answer, and then no file is touched."""
    shared = SharedSecrets(client, Keys(settings.redis.prefix), settings)
    with guard("fetching the installation's keys"):
        client.ping()  # else ring() would take a key file that is there as the key
    for name in NAMES:
        shared.write_cache(name)


_SHARED: dict[int, SharedSecrets] = {}
_SHARED_LOCK = threading.Lock()


def shared(settings: Settings, client: Client) -> SharedSecrets:
    """The process's SharedSecrets for `client` (one cache per client)."""
    with _SHARED_LOCK:
        found = _SHARED.get(id(client))
        if found is None or found.client is not client:
            found = _SHARED[id(client)] = SharedSecrets(
                client, Keys(settings.redis.prefix), settings
            )
        return found


def current(settings: Settings, client: Client, name: str) -> bytes:
    return shared(settings, client).current(name)


def accepted(settings: Settings, client: Client, name: str) -> tuple[bytes, ...]:
    return shared(settings, client).accepted(name)


WEBHOOK_KEY_OVERLAP = 86400.0  # seconds both webhook keys sign after `secrets rotate webhook`


def webhook_keys(settings: Settings, client: Client) -> tuple[bytes, ...]:
    """The webhook keys account secrets are derived from now, the current one first."""
    return shared(settings, client).in_force("webhook_key_file", WEBHOOK_KEY_OVERLAP)


@dataclass(frozen=True)
class StoredWebhookSecret:
    """An account's own webhook secret, given by a rotation; empty: derived (signing.py)."""

    current: bytes = b""
    previous: bytes = b""
    previous_until: float = 0.0


def read_webhook_secret(client: Client, keys: Keys, account: str) -> StoredWebhookSecret:
    with guard("reading a webhook secret"):
        raw = decoded_hash(client.hgetall(keys.webhook_secret(account)))
    return StoredWebhookSecret(
        current=base64.b64decode(raw.get("current", "")),
        previous=base64.b64decode(raw.get("previous", "")),
        previous_until=float(raw.get("previous_until") or 0),
    )


def store_webhook_secret(
    client: Client, keys: Keys, account: str, current: bytes, previous: bytes, until: float
) -> None:
    """Give the account `current`; `previous` keeps signing beside it until `until`."""
    with guard("rotating a webhook secret"):
        client.hset(
            keys.webhook_secret(account),
            mapping=hash_mapping(
                {
                    "current": base64.b64encode(current).decode(),
                    "previous": base64.b64encode(previous).decode(),
                    "previous_until": repr(until),
                }
            ),
        )
