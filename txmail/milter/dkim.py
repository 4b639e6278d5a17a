"""DKIM signing for the milter: dkimpy canonicalises, OpenSSL does the RSA.

The milter calls Signer.sign(domain, message, allowed=the account's domains) last, after every
other change to the message, and prepends the headers it returns. A domain is signed only when it
is one of the sending account's domains, `txmail domains` set it up and its DKIM record verified
(or signing was forced): its record in Redis has dkim_active set and names one RSA key (2048
bits or more) and optionally an Ed25519 key (RFC 8463); each key gives one DKIM-Signature,
d=DOMAIN, s=its selector, c=relaxed/relaxed, over those of SIGNED_HEADERS the message has, each
signed once more than it occurs so nobody can add another one.

Speed (POSTFIX-NOTES §9, §10): stock dkimpy does RSA in pure Python (about 13 ms a message) and
decodes the PEM on every call (0.8 ms). Here keys are decoded once into OpenSSL key objects via
`cryptography` and kept; dkimpy still builds the header, canonicalises and hashes, and only the
PKCS#1 v1.5 step goes to OpenSSL. PKCS#1 v1.5 is deterministic, so the signatures are the bytes
stock dkimpy would make. To reach that step without copying dkimpy's signing code, this module
wraps two names in the `dkim` module (parse_pem_private_key and RSASSA_PKCS1_v1_5_sign): the
wrappers act only on LoadedRsaKey objects and hand everything else to dkimpy's own functions,
so other users of dkimpy in the process see no change.

Keys: the private keys are part of the domain's record in Redis (txmail.accounts.domains), so
every node that shares the Redis signs with them, whichever node made them; records made
before that name a key file instead, which is still read.

Caches: a domain's record is re-read from Redis at most every `refresh` seconds, so a rotated
key (`domains rotate-key` or `verify` on any node) or a domain switched on or off takes effect
on every node within that time; a key is decoded again only when its PEM (or its file's
inode, size or modification time) changes.

Reads:  PREFIX domain:DOMAIN (through txmail.accounts.domains) and the key files older records
        name.
Writes: key files, only through generate_rsa_key/generate_ed25519_key (mode 0600, folders 0700).
Fails:  TemporaryFailure when Redis is down or an active domain's key file cannot be read (the
        milter answers 4xx rather than send unsigned mail); private keys are never logged.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from txmail.accounts.domains import ED25519, RSA, DkimKey, Domain, Domains
from txmail.errors import TemporaryFailure
from txmail.files import write_private

if TYPE_CHECKING:
    from txmail.config import Settings
    from txmail.store import Client

log = logging.getLogger("txmail.milter.dkim")

SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
)
MIN_RSA_BITS = 2048
REFRESH_SECONDS = 2.0
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha1": hashes.SHA1,
}
_SELECTOR = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# -- OpenSSL RSA inside dkimpy ------------------------------------------------------------------


class LoadedRsaKey:
    """An RSA private key decoded once, signing through OpenSSL. Its repr shows no key."""

    __slots__ = ("_key", "bits")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        self.bits = key.key_size

    def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        algorithm = _HASHES[hash_name.lower()]()
        return self._key.sign(digest, padding.PKCS1v15(), Prehashed(algorithm))

    def __repr__(self) -> str:
        return f"<LoadedRsaKey {self.bits} bits>"


_stock_parse_pem = dkim.parse_pem_private_key
_stock_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _parse_pem_private_key(data: Any) -> Any:
    if isinstance(data, LoadedRsaKey):
        return data
    return _stock_parse_pem(data)


def _rsa_sign(digest: Any, private_key: Any) -> bytes:
    if isinstance(private_key, LoadedRsaKey):
        return private_key.sign_digest(digest.digest(), digest.name)
    return _stock_rsa_sign(digest, private_key)


if getattr(dkim, "_txmail_openssl", False) is False:
    dkim.parse_pem_private_key = _parse_pem_private_key
    dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign
    dkim._txmail_openssl = True


# -- keys on disk ---------------------------------------------------------------------------------


def key_dir(settings: Settings, domain: str) -> Path:
    return settings.path(settings.domains.dkim_key_dir) / domain


def new_selector(taken: set[str], now: float | None = None) -> str:
    """A fresh selector, `txYYYYMMDD` (with a letter added if that one is taken)."""
    base = time.strftime("tx%Y%m%d", time.gmtime(now if now is not None else time.time()))
    for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
        if base + suffix not in taken:
            return base + suffix
    raise ValueError("no free selector left for today")


def check_selector(selector: str) -> str:
    if not _SELECTOR.match(selector):
        raise ValueError(f"selector {selector!r} is not one DNS label of a-z, 0-9 and '-'")
    return selector


def _private_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)


def generate_rsa_key(path: Path, bits: int = MIN_RSA_BITS) -> str:
    """Write a new RSA key (PEM, mode 0600); return the p= value of its DNS record."""
    pem, public = new_rsa_key(bits)
    _private_folder(path.parent)
    write_private(path, pem.encode("ascii"))
    return public


def generate_ed25519_key(path: Path) -> str:
    """Write a new Ed25519 key (PKCS#8 PEM, mode 0600); return its p= value (RFC 8463)."""
    pem, public = new_ed25519_key()
    _private_folder(path.parent)
    write_private(path, pem.encode("ascii"))
    return public


def new_rsa_key(bits: int = MIN_RSA_BITS) -> tuple[str, str]:
    """A new RSA key: (its PEM, the p= value of its DNS record)."""
    if bits < MIN_RSA_BITS:
        raise ValueError(f"DKIM RSA keys must have {MIN_RSA_BITS} bits or more")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii"), base64.b64encode(public).decode("ascii")


def new_ed25519_key() -> tuple[str, str]:
    """A new Ed25519 key: (its PKCS#8 PEM, its p= value, RFC 8463)."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return pem.decode("ascii"), base64.b64encode(public).decode("ascii")


def create_keys(
    settings: Settings,
    domain: str,
    selector: str | None = None,
    with_ed25519: bool | None = None,
    bits: int | None = None,
    taken: set[str] | None = None,
) -> tuple[DkimKey, ...]:
    """Generate the keys of a new domain (or a rotation): RSA, and Ed25519 if configured. The
    private keys go into the domain's record in Redis (no file), so every node has them.
    The Ed25519 selector is the RSA selector with `e` added (selectors are per key)."""
    del domain  # the keys do not depend on it; kept for callers
    selector = check_selector(selector or new_selector(taken or set()))
    pem, public = new_rsa_key(bits or settings.domains.dkim_key_bits)
    keys = [
        DkimKey(selector=selector, algorithm=RSA, key_path="", public_key=public, private_key=pem)
    ]
    if settings.domains.dkim_ed25519 if with_ed25519 is None else with_ed25519:
        ed_selector = check_selector(selector + "e")
        pem, public = new_ed25519_key()
        keys.append(
            DkimKey(
                selector=ed_selector,
                algorithm=ED25519,
                key_path="",
                public_key=public,
                private_key=pem,
            )
        )
    return tuple(keys)


def load_private_key(path: str) -> LoadedRsaKey | bytes:
    """Decode a key file: RSA into a LoadedRsaKey, Ed25519 into the base64 seed dkimpy takes."""
    return load_private_pem(Path(path).read_bytes(), path)


def load_private_pem(data: bytes, what: str) -> LoadedRsaKey | bytes:
    """Decode a PEM private key (`what` names it in errors)."""
    path = what
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path} holds no readable private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"{path}: RSA key of {key.key_size} bits; DKIM needs {MIN_RSA_BITS} or more"
            )
        return LoadedRsaKey(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    raise ValueError(f"{path}: only RSA and Ed25519 keys can sign DKIM")


# -- signing ---------------------------------------------------------------------------------------


def headers_to_sign(present: list[bytes]) -> list[bytes]:
    """The h= list: each of SIGNED_HEADERS the message has, once more than it occurs.

    Absent headers are left out, not signed as empty: Postfix may add a missing Date or
    Message-ID after the milter (always_add_missing_headers), which would break the signature.
    """
    counts: dict[bytes, int] = {}
    for name in present:
        lowered = name.lower()
        if lowered.decode("ascii", "replace") in SIGNED_HEADERS:
            counts[lowered] = counts.get(lowered, 0) + 1
    include = [
        name.encode()
        for name in SIGNED_HEADERS
        if counts.get(name.encode())
        for _ in range(counts[name.encode()] + 1)
    ]
    return include or [b"from"]  # From must always be signed (RFC 6376 §5.4)


def sign_with(
    message: bytes, domain: str, keys: list[tuple[DkimKey, LoadedRsaKey | bytes]]
) -> list[tuple[str, str]]:
    """DKIM-Signature headers for `message` from already loaded keys, as (name, value) pairs.

    Values are folded with LF + TAB, as libmilter wants multi-line header values."""
    signer = dkim.DKIM(message)
    include = headers_to_sign([name for name, _ in signer.headers])
    result = []
    for key, loaded in keys:
        signature = signer.sign(
            key.selector.encode(),
            domain.encode(),
            loaded,
            signature_algorithm=key.algorithm.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        name, _, value = signature.decode("ascii").partition(":")
        result.append((name, value.strip().replace("\r\n", "\n")))
    return result


class Signer:
    """Signs messages for the domains set up in Redis, keeping records and keys cached."""

    def __init__(
        self,
        domains: Domains,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domains = domains
        self.refresh = refresh
        self.clock = clock
        self._records: dict[str, tuple[float, Domain | None]] = {}
        self._keys: dict[str, tuple[tuple[int, int, int], LoadedRsaKey | bytes]] = {}
        self._pems: dict[tuple[str, str], tuple[str, LoadedRsaKey | bytes]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, client: Client) -> Signer:
        from txmail.store import Keys

        return cls(Domains(client, Keys(settings.redis.prefix)))

    def sign(self, domain: str, message: bytes, *, allowed: Iterable[str]) -> list[tuple[str, str]]:
        """The DKIM-Signature header(s) to prepend to `message` sent as `domain`; an empty
        list when the domain has no active key, or is not one of `allowed` (the sending
        account's domains: one account never signs with another's key, whatever the caller
        worked out the domain to be)."""
        domain = domain.strip().lower().rstrip(".")
        if domain not in {d.strip().lower().rstrip(".") for d in allowed}:
            log.warning("DKIM: %s is not one of the sending account's domains; not signed", domain)
            return []
        for attempt in range(2):
            record = self._record(domain)
            if record is None or not record.dkim_active or not record.dkim:
                return []
            try:
                keys = [(key, self._loaded(domain, key)) for key in record.dkim]
            except TemporaryFailure:
                if attempt:
                    raise
                # A rotation may have retired the key our cached record still names: read
                # the record again before giving up.
                with self._lock:
                    self._records.pop(domain, None)
                continue
            return sign_with(message, domain, keys)
        return []  # not reached: the second attempt returns or raises

    def _record(self, domain: str) -> Domain | None:
        now = self.clock()
        cached = self._records.get(domain)
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]
        record = self.domains.find(domain)  # StoreUnavailable is a TemporaryFailure
        with self._lock:
            if len(self._records) > 10_000:  # bounded: domains come from client input
                self._records.clear()
            self._records[domain] = (now, record)
        return record

    def _loaded(self, domain: str, key: DkimKey) -> LoadedRsaKey | bytes:
        if key.private_key:
            return self._loaded_from_record(domain, key)
        try:
            info = os.stat(key.key_path)
            signature = (info.st_ino, info.st_mtime_ns, info.st_size)
            cached = self._keys.get(key.key_path)
            if cached is not None and cached[0] == signature:
                return cached[1]
            loaded = load_private_key(key.key_path)
        except (OSError, ValueError) as exc:
            log.error(
                "DKIM key of %s (selector %s) cannot be used: %s",
                domain,
                key.selector,
                getattr(exc, "strerror", None) or exc,
            )
            raise TemporaryFailure(f"the DKIM key of {domain} cannot be read") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning(
                "DKIM key %s is readable by others (mode %o); chmod 600 it",
                key.key_path,
                stat.S_IMODE(info.st_mode),
            )
        with self._lock:
            self._keys[key.key_path] = (signature, loaded)
        return loaded

    def _loaded_from_record(self, domain: str, key: DkimKey) -> LoadedRsaKey | bytes:
        """A key kept in the domain's record (every node has it), decoded once per PEM."""
        cached = self._pems.get((domain, key.selector))
        if cached is not None and cached[0] == key.private_key:
            return cached[1]
        try:
            loaded = load_private_pem(key.private_key.encode("ascii"), f"s={key.selector}")
        except (ValueError, UnicodeEncodeError) as exc:
            log.error("DKIM key of %s (selector %s) cannot be used: %s", domain, key.selector, exc)
            raise TemporaryFailure(f"the DKIM key of {domain} cannot be read") from None
        with self._lock:
            if len(self._pems) > 10_000:
                self._pems.clear()
            self._pems[(domain, key.selector)] = (key.private_key, loaded)
        return loaded
