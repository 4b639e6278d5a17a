"""Sending domains: who owns them, their DKIM keys and their return-path subdomains.

A sending domain belongs to one account (the global hash PREFIX domains, claimed with HSETNX by
Accounts.add_domain, so one account can never send as another's domain). `txmail domains add`
gives it a record:

    PREFIX domain:DOMAIN    hash   account, created_at, dkim (JSON list of keys: selector,
                                   algorithm, key file, public key), dkim_next (the keys of a
                                   rotation until their records verify), dkim_active,
                                   return_path, return_path_active, verified_at
    PREFIX return-paths     hash   return-path domain -> sending domain, claimed with HSETNX

The private keys live in the record itself (the `dkim` JSON: selector, algorithm, public and
private key), so every node that shares the Redis signs with them and a node made by `txmail
init --redis-url` alone needs no file copied. Whoever may read Redis may therefore read them
(README, "Several nodes"). Records written before keys were shared name a key file (key_path)
instead; `txmail domains import-keys` moves those keys into Redis.

`dkim_active` turns signing on: set once the DKIM record verifies in DNS, or
forced. `return_path_active` makes the milter use the return-path subdomain in MAIL FROM; until
then it uses the node's bounce domain. Postfix accepts bounces for every return-path domain in
the map whether active or not (txmail socketmap), so DNS may point here before it is switched on.

A record whose account no longer owns the domain (the account was removed) counts as absent.

Fails: NotFound, Conflict, UsageError; StoreUnavailable when Redis is down.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from txmail.accounts.records import Accounts, check_domain
from txmail.errors import Conflict, NotFound
from txmail.store import Client, Keys, decoded_hash, decoded_or_none, guard, hash_mapping

if TYPE_CHECKING:
    from txmail.config import Settings

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"


@dataclass(frozen=True)
class DkimKey:
    """One DKIM key of a domain: published at SELECTOR._domainkey.DOMAIN."""

    selector: str
    algorithm: str  # RSA or ED25519
    key_path: str  # absolute path of a private key file (records made before keys were shared)
    public_key: str  # base64, the p= value of the DNS record
    # The private key (PEM), kept in the record so that every node signs with it; never
    # printed (public() leaves it out) nor shown in a repr.
    private_key: str = field(default="", repr=False)

    @property
    def key_type(self) -> str:
        return "ed25519" if self.algorithm == ED25519 else "rsa"

    def dns_name(self, domain: str) -> str:
        return f"{self.selector}._domainkey.{domain}"

    def dns_value(self) -> str:
        return f"v=DKIM1; k={self.key_type}; p={self.public_key}"

    def public(self, domain: str) -> dict[str, str]:
        return {
            "selector": self.selector,
            "algorithm": self.algorithm,
            "key_path": self.key_path,
            "stored": "redis" if self.private_key else "file",
            "dns_name": self.dns_name(domain),
            "dns_value": self.dns_value(),
        }


@dataclass(frozen=True)
class Domain:
    name: str
    account: str
    dkim: tuple[DkimKey, ...] = ()
    dkim_active: bool = False
    return_path: str = ""  # "" when the domain uses the node's bounce domain
    return_path_active: bool = False
    created_at: float = 0.0
    verified_at: float = 0.0
    dkim_next: tuple[DkimKey, ...] = ()  # keys of a rotation, used once their records verify

    def public(self) -> dict[str, Any]:
        """What `domains show --json` prints (no private key material, only paths)."""
        return {
            "name": self.name,
            "account": self.account,
            "dkim_active": self.dkim_active,
            "dkim": [k.public(self.name) for k in self.dkim],
            "dkim_next": [k.public(self.name) for k in self.dkim_next],
            "return_path": self.return_path,
            "return_path_active": self.return_path_active,
            "created_at": self.created_at,
            "verified_at": self.verified_at,
        }


def default_return_path(domain: str, settings: Settings) -> str:
    """`mta.example.com` for example.com (the prefix is domains.return_path_prefix)."""
    return f"{settings.domains.return_path_prefix}.{domain}"


def _to_hash(domain: Domain) -> dict[str, str]:
    return {
        "name": domain.name,
        "account": domain.account,
        "dkim": json.dumps([k.__dict__ for k in domain.dkim]),
        "dkim_next": json.dumps([k.__dict__ for k in domain.dkim_next]),
        "dkim_active": "1" if domain.dkim_active else "0",
        "return_path": domain.return_path,
        "return_path_active": "1" if domain.return_path_active else "0",
        "created_at": repr(domain.created_at),
        "verified_at": repr(domain.verified_at),
    }


def _from_hash(raw: dict[str, str]) -> Domain:
    keys = tuple(DkimKey(**k) for k in json.loads(raw.get("dkim") or "[]"))
    next_keys = tuple(DkimKey(**k) for k in json.loads(raw.get("dkim_next") or "[]"))
    return Domain(
        name=raw["name"],
        account=raw.get("account", ""),
        dkim=keys,
        dkim_active=raw.get("dkim_active") == "1",
        return_path=raw.get("return_path", ""),
        return_path_active=raw.get("return_path_active") == "1",
        created_at=float(raw.get("created_at") or 0),
        verified_at=float(raw.get("verified_at") or 0),
        dkim_next=next_keys,
    )


class Domains:
    """Sending-domain operations over one Redis client."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.accounts = Accounts(client, keys)

    def add(self, domain: Domain) -> Domain:
        """Store a new domain record; claim the domain for its account and its return-path
        domain for it. Conflict when another account owns the domain, the domain has a record
        already, or its return-path domain serves another domain."""
        name = check_domain(domain.name)
        return_path = check_domain(domain.return_path) if domain.return_path else ""
        if return_path == name:
            raise Conflict(
                f"the return-path domain of {name} must be a subdomain of its own "
                "(e.g. mta." + name + "), not the domain itself"
            )
        domain = replace(
            domain, name=name, return_path=return_path, created_at=domain.created_at or time.time()
        )
        with guard("adding a domain"):
            if self.find(name) is not None:
                raise Conflict(
                    f"domain {name} is set up already (see `txmail domains show {name}`)"
                )
            newly_claimed = self.accounts.add_domain(domain.account, name)
            if return_path and not self._claim_return_path(return_path, name):
                if newly_claimed:
                    self.accounts.remove_domain(domain.account, name)
                owner = decoded_or_none(self.client.hget(self.keys.return_paths, return_path))
                raise Conflict(
                    f"return-path domain {return_path} serves {owner} already; "
                    "choose another with --return-path"
                )
            self.client.hset(self.keys.domain(name), mapping=hash_mapping(_to_hash(domain)))
        return domain

    def _claim_return_path(self, return_path: str, name: str) -> bool:
        if self.client.hsetnx(self.keys.return_paths, return_path, name):
            return True
        current = decoded_or_none(self.client.hget(self.keys.return_paths, return_path))
        if current == name:
            return True
        if current is not None and self.find(current) is None:
            # Left behind by a domain whose account was removed: free to take over.
            self.client.hset(self.keys.return_paths, return_path, name)
            return True
        return False

    def find(self, name: str) -> Domain | None:
        """The domain's record, or None (also when its account no longer owns it)."""
        name = name.strip().lower().rstrip(".")
        with guard("reading a domain"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.domain(name))
            pipe.hget(self.keys.domains, name)
            raw, owner = pipe.execute()
        if not raw:
            return None
        domain = _from_hash(raw)
        return domain if owner == domain.account else None

    def get(self, name: str) -> Domain:
        domain = self.find(name)
        if domain is None:
            raise NotFound(f"no sending domain {name!r} is set up (see `txmail domains list`)")
        return domain

    def list(self, account: str | None = None) -> list[Domain]:
        """Every set-up domain (of one account), sorted by name."""
        with guard("listing domains"):
            owners = decoded_hash(self.client.hgetall(self.keys.domains))
            names = sorted(n for n, a in owners.items() if account is None or a == account)
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.domain(name))
            rows = pipe.execute()
        found = [_from_hash(raw) for raw in rows if raw]
        return [d for d in found if owners.get(d.name) == d.account]

    def update(self, name: str, **changes: Any) -> Domain:
        """Change fields of a record (dkim, dkim_active, return_path_active, verified_at)."""
        domain = replace(self.get(name), **changes)
        with guard("changing a domain"):
            self.client.hset(self.keys.domain(domain.name), mapping=hash_mapping(_to_hash(domain)))
        return domain

    def remove(self, name: str) -> Domain:
        """Delete the record, release the return-path domain and the account's claim.
        Returns the record so the caller can delete its key files."""
        domain = self.get(name)
        with guard("removing a domain"):
            if domain.return_path and (
                self.client.hget(self.keys.return_paths, domain.return_path) == domain.name
            ):
                self.client.hdel(self.keys.return_paths, domain.return_path)
            self.client.delete(self.keys.domain(domain.name))
        self.accounts.remove_domain(domain.account, domain.name)
        return domain

    def return_path_domain(self, sender_domain: str, settings: Settings) -> str:
        """Where bounces for mail sent as `sender_domain` go: its return-path subdomain once
        that is active, else the node's bounce domain."""
        domain = self.find(sender_domain)
        if domain is not None and domain.return_path and domain.return_path_active:
            return domain.return_path
        return settings.bounce_domain

    def serves_return_path(self, return_path: str) -> bool:
        """Whether mail to `return_path` is bounces for a domain set up here (the socketmap
        asks this for every return-path domain lookup Postfix makes)."""
        return_path = return_path.strip().lower().rstrip(".")
        with guard("looking up a return-path domain"):
            sender_domain = self.client.hget(self.keys.return_paths, return_path)
            if sender_domain is None:
                return False
            return self.client.hget(self.keys.domains, sender_domain) is not None
