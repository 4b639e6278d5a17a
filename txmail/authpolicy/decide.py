"""authpolicy decisions: from Dovecot's policy request and a login's recent failures to a verdict.

Pure: no Redis, no sockets, no clock. The server (server.py) parses a request with `attempt()`,
asks Redis through auth_check.lua what it knows of the attempt (is its client known, how many
recent failures does the login have) and turns that into Dovecot's answer with `verdict()`.

The rules, per login name and across every client address and node:

- A *known* attempt — one whose client address (an IPv6 client's /64) logged in with the same
  password within authpolicy.remember_days — is always allowed at once. That is the real
  client: it is never slowed nor refused, however many guesses others make.
- Any other attempt counts as a failed login until Dovecot reports it succeeded (then it is
  given back and its client becomes known). Failures are forgiven one per forgive_seconds.
- Up to free_failures recent failures, unknown attempts are allowed at once; past them they are
  delayed 1, 2, 4 ... seconds, at most max_delay (Dovecot holds the attempt, this server
  answers at once); from reject_failures on they are refused without the password being
  checked, so guessing stops teaching anything. The attempt is counted before the password is
  checked, so parallel guesses from many addresses cannot slip past the limit together.

Why known means address *and* password: the password alone would turn the refusal into an
oracle (a refused guess is wrong, an allowed one is right); the address alone would let anyone
behind the client's address guess freely.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from txmail.store.keys import ACCOUNT_NAME, LOGIN

ALLOW, REJECT = 0, -1  # Dovecot's statuses; a positive status is a delay in seconds
MAX_FIELD = 512  # characters of a request attribute that are read (greylist.pl's cap)


@dataclass(frozen=True)
class Attempt:
    """One login attempt as Dovecot describes it. `pwhash` is Dovecot's truncated hash of the
    nonce, login and password: it is never logged."""

    login: str
    remote: str
    pwhash: str

    def __repr__(self) -> str:  # keeps the hash out of any traceback or debug line
        return f"Attempt(login={self.login!r}, remote={self.remote!r})"


@dataclass(frozen=True)
class Report:
    """Dovecot's report at the end of an attempt."""

    attempt: Attempt
    success: bool
    policy_reject: bool


@dataclass(frozen=True)
class Limits:
    free_failures: int = 5
    reject_failures: int = 30
    forgive_seconds: float = 120.0
    max_delay: int = 5
    remember_seconds: float = 30 * 86400.0
    remember_max: int = 100

    @classmethod
    def from_settings(cls, authpolicy: Any) -> Limits:
        return cls(
            authpolicy.free_failures,
            authpolicy.reject_failures,
            authpolicy.forgive_seconds,
            authpolicy.max_delay,
            authpolicy.remember_days * 86400.0,
            authpolicy.remember_max,
        )


@dataclass(frozen=True)
class Verdict:
    status: int  # ALLOW, REJECT or a delay in seconds
    message: str = ""  # what the client is told after "535 5.7.8 Error: authentication failed:"

    def answer(self) -> dict[str, Any]:
        """The JSON body Dovecot reads."""
        return (
            {"status": self.status, "msg": self.message}
            if self.message
            else {"status": self.status}
        )

    @property
    def action(self) -> str:
        if self.status == ALLOW:
            return "allow"
        return "reject" if self.status == REJECT else f"delay {self.status} s"


def _text(value: Any) -> str:
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def attempt(body: Any) -> Attempt | None:
    """The attempt in a policy request, or None when there is nothing to limit: a login that
    can be neither an account name nor an account's own login (Dovecot refuses it anyway) or
    a request without a hash."""
    if not isinstance(body, dict):
        return None
    login = _text(body.get("login")).strip().lower()
    pwhash = _text(body.get("pwhash")).strip().lower()
    if not (ACCOUNT_NAME.match(login) or LOGIN.match(login)) or not pwhash:
        return None
    return Attempt(login, _text(body.get("remote")).strip(), pwhash)


def report(body: Any) -> Report | None:
    found = attempt(body)
    if found is None:
        return None
    return Report(found, body.get("success") is True, body.get("policy_reject") is True)


def client_network(remote: str) -> str:
    """The address a client is known by: an IPv4 address, an IPv6 client's /64 (its privacy
    addresses change within it), or "-" when Dovecot sent none."""
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def fingerprint(key: bytes, found: Attempt) -> str:
    """What Redis stores of a known client: a keyed hash of login, client network and password
    hash (without the node's key it cannot test a password guess)."""
    text = f"{found.login}\0{client_network(found.remote)}\0{found.pwhash}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:32]


def recent(score: float) -> int:
    """The recent failures in a score that is forgiven continuously: a failure counts whole
    until it is wholly forgiven (auth_check.lua rounds the same way)."""
    return max(0, math.ceil(score - 1e-6))


def delay(failures: float, limits: Limits) -> int:
    """Seconds an unknown attempt waits with `failures` recent failures before it."""
    excess = recent(failures) - limits.free_failures
    if excess < 0:
        return 0
    return min(limits.max_delay, 2 ** min(excess, 16))


def wait_minutes(failures: float, limits: Limits) -> int:
    """Minutes until a login with `failures` recent failures takes unknown attempts again."""
    below = failures - limits.reject_failures + 1
    return max(1, math.ceil(below * limits.forgive_seconds / 60))


def verdict(known: bool, failures: float, limits: Limits) -> Verdict:
    """Dovecot's answer for an attempt before its password is checked."""
    if known:
        return Verdict(ALLOW)
    if recent(failures) >= limits.reject_failures:
        minutes = wait_minutes(failures, limits)
        return Verdict(
            REJECT,
            f"Too many failed logins for this account; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''} or from an "
            f"address that has logged in before",
        )
    return Verdict(delay(failures, limits))
