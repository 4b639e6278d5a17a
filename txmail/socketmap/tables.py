"""The tables `txmail socketmap` serves to Postfix, decided from Redis.

    relay       DOMAIN       -> OK           relay_domains: mail for DOMAIN is accepted
    transport   LOCAL@DOMAIN -> bouncepipe:  transport_maps: that mail goes to the bounce pipe

DOMAIN is the node's bounce domain or a return-path domain of a sending domain that is set up
(PREFIX return-paths, see txmail.accounts.domains). Everything else is NOTFOUND, so Postfix keeps
refusing to relay for it (never an open relay). relay_domains asks with a domain (and parent
forms, ".example.com", which are NOTFOUND: only exact domains match); transport_maps asks with
the whole recipient address, whose domain decides.

Answers are kept for `ttl` seconds (default 1), so a domain added while Postfix runs is accepted
within about a second on every node, and Redis sees at most one lookup per domain per second.

Fails: a Redis error becomes TEMP, which Postfix turns into a 4xx for that recipient.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from txmail.errors import TemporaryFailure

TRANSPORT = "bouncepipe:"
MAX_CACHE = 10_000


class Reply:
    """One socketmap answer."""

    def __init__(self, status: str, text: str = "") -> None:
        self.status, self.text = status, text

    def encode(self) -> bytes:
        return f"{self.status} {self.text}".encode()

    def __repr__(self) -> str:
        return f"Reply({self.status!r}, {self.text!r})"


class ReturnPathTables:
    """Answers Postfix's `relay` and `transport` lookups."""

    def __init__(
        self,
        bounce_domain: str,
        serves_return_path: Callable[[str], bool],
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bounce_domain = bounce_domain.lower()
        self.serves_return_path = serves_return_path
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def lookup(self, name: str, key: str) -> Reply:
        if name not in ("relay", "transport"):
            return Reply("PERM", f"no table named {name[:64]}")
        domain = key.strip().lower().rstrip(".")
        if name == "transport" and "@" in domain:
            # socketmap is a pattern table to Postfix: transport_maps asks with the whole
            # recipient address (transport(5)), never with its domain alone.
            domain = domain.rsplit("@", 1)[1]
        if not domain or "@" in domain or domain.startswith(".") or len(domain) > 253:
            return Reply("NOTFOUND")
        try:
            found = self._is_return_path_domain(domain)
        except TemporaryFailure as exc:
            return Reply("TEMP", str(exc)[:200])
        if not found:
            return Reply("NOTFOUND")
        return Reply("OK", TRANSPORT if name == "transport" else domain)

    def _is_return_path_domain(self, domain: str) -> bool:
        if domain == self.bounce_domain:
            return True
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        found = self.serves_return_path(domain)
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[domain] = (now, found)
        return found
