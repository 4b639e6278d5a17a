"""Accounts: who may log in, which sending domains they own, whether they are suspended.

Reads and writes:  PREFIX accounts, PREFIX domains, PREFIX {ACCOUNT}:account,
                   PREFIX accounts:version and the PREFIX accounts:changed channel;
                   remove() deletes PREFIX {ACCOUNT}:webhook:secret, the API keys and the
                   logins too. Logins: PREFIX logins and PREFIX {ACCOUNT}:logins.
Passwords:         only a bcrypt hash in Dovecot's `{BLF-CRYPT}` form is stored; the plain
                   password is never written or logged.
Fails:             NotFound, Conflict, UsageError for bad input; StoreUnavailable when Redis is
                   down.

A domain belongs to at most one account: ownership is claimed with HSETNX on the global domain
map, so two accounts can never both send as one domain, even when created at the same moment.
An account logs in with its name, or with any of its own logins (Logins): email addresses with
passwords of their own, claimed the same way on the global login map, so one login never opens
two accounts. A login contains '@' and an account name cannot, so neither can pose as the other.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from txmail.accounts import settings as account_settings
from txmail.accounts.settings import AccountSettings
from txmail.errors import Conflict, NotFound, UsageError
from txmail.store import Client, Keys, decoded, decoded_hash, decoded_or_none, guard, hash_mapping
from txmail.store.keys import ACCOUNT_NAME, LOGIN

BCRYPT_ROUNDS = 10
TRACK_BOUNCES_PREFIX = "trackbounces."  # hash field per sender address or domain
MAX_SENDER_TRACK_BOUNCES = 1000
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass
class Account:
    name: str
    domains: list[str]
    password_hash: str = field(repr=False)
    status: str = "active"
    suspended_reason: str = ""
    webhook_url: str = ""
    created_at: float = 0.0
    settings: AccountSettings = field(default_factory=lambda: account_settings.from_fields({}))
    # track_bounces by sending address or domain (lower-cased), beside the account's setting
    sender_track_bounces: dict[str, bool] = field(default_factory=dict)

    @property
    def suspended(self) -> bool:
        return self.status == "suspended"

    def tracks_bounces(self, sender: str, for_message: bool | None = None) -> bool:
        """Whether mail from `sender` gets the signed bounce address: the message's own choice
        (the send API's `trackbounces`), else the sender address's, else the sender domain's
        (`accounts trackbounces set`), else the account's track_bounces setting."""
        if for_message is not None:
            return for_message
        address = sender.strip().strip("<>").lower()
        for key in (address, address.rpartition("@")[2]):
            if key and key in self.sender_track_bounces:
                return self.sender_track_bounces[key]
        return self.settings.track_bounces

    def public(self) -> dict[str, object]:
        """What `accounts show` prints: everything but the password hash."""
        return {
            "name": self.name,
            "domains": self.domains,
            "status": self.status,
            "suspended_reason": self.suspended_reason,
            "webhook_url": self.webhook_url,
            "created_at": self.created_at,
            "settings": self.settings.as_dict(),
            "trackbounces": dict(sorted(self.sender_track_bounces.items())),
        }


def hash_password(password: str) -> str:
    """A Dovecot-verifiable hash: `{BLF-CRYPT}$2b$...`."""
    if len(password) < 12:
        raise UsageError("the password is too short: use at least 12 characters")
    if len(password.encode()) > 72:
        raise UsageError("the password is too long: bcrypt uses at most 72 bytes")
    if any(c in password for c in "\r\n\0"):
        raise UsageError("the password must not contain line breaks or NUL")
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
    return "{BLF-CRYPT}" + digest.decode()


def check_password(password: str, password_hash: str) -> bool:
    prefix = "{BLF-CRYPT}"
    if not password_hash.startswith(prefix):
        return False
    return bcrypt.checkpw(password.encode(), password_hash[len(prefix) :].encode())


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def check_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name):
        raise UsageError(
            f"account name {name!r} is not allowed: use 1-64 lowercase letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_domain(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not DOMAIN.match(domain):
        raise UsageError(f"{domain!r} is not a valid domain name")
    return domain


class Accounts:
    """Account operations over one Redis client."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def _changed(self, name: str) -> None:
        self.client.incr(self.keys.accounts_version)
        self.client.publish(self.keys.accounts_changed, name)

    def _revoked(self, name: str) -> None:
        revoked(self.client, self.keys, name)

    def add(
        self,
        name: str,
        domains: list[str],
        password: str,
        webhook_url: str = "",
        settings: dict[str, Any] | None = None,
    ) -> Account:
        check_name(name)
        domains = list(dict.fromkeys(check_domain(d) for d in domains))
        if not domains:
            raise UsageError("an account needs at least one sending domain (--domain)")
        password_hash = hash_password(password)
        extra = account_settings.to_fields(settings or {})
        with guard("adding an account"):
            if self.client.exists(self.keys.account(name)):
                raise Conflict(f"account {name!r} exists already")
            # Logins a removed account of this name could have kept (an add that raced the
            # removal) must not open the new one.
            Logins(self.client, self.keys).remove_all(name)
            claimed: list[str] = []
            for domain in domains:
                if not self.client.hsetnx(self.keys.domains, domain, name):
                    owner = self.client.hget(self.keys.domains, domain)
                    if claimed:
                        self.client.hdel(self.keys.domains, *claimed)
                    raise Conflict(f"domain {domain} belongs to account {owner!r} already")
                claimed.append(domain)
            account = Account(
                name=name,
                domains=domains,
                password_hash=password_hash,
                webhook_url=webhook_url,
                created_at=time.time(),
            )
            fields = _to_hash(account)
            fields.update(extra)
            self.client.hset(self.keys.account(name), mapping=hash_mapping(fields))
            self.client.sadd(self.keys.accounts, name)
            self._changed(name)
        return self.get(name)

    def update_settings(self, name: str, values: dict[str, Any]) -> Account:
        """Set some per-account settings (checked against account_settings.SETTINGS)."""
        self.get(name)
        fields = account_settings.to_fields(values)
        with guard("changing account settings"):
            self.client.hset(self.keys.account(name), mapping=hash_mapping(fields))
            self._changed(name)
        return self.get(name)

    def reset_settings(self, name: str, keys: list[str]) -> Account:
        """Return some settings to their defaults."""
        self.get(name)
        fields = [account_settings.FIELD_PREFIX + account_settings.spec(k).name for k in keys]
        with guard("changing account settings"):
            self.client.hdel(self.keys.account(name), *fields)
            self._changed(name)
        return self.get(name)

    def set_sender_track_bounces(self, name: str, sender: str, value: bool | None) -> Account:
        """track_bounces for one sending address or domain of the account (None: unset, the
        account's setting applies again). The address's domain must be the account's."""
        account = self.get(name)
        sender = sender.strip().strip("<>").lower()
        local, at, domain = sender.rpartition("@")
        if at and not local:
            raise UsageError(f"{sender!r}: give an address (user@domain) or a domain")
        if domain not in account.domains:
            raise UsageError(
                f"{domain!r} is not a sending domain of account {name!r} "
                f"(its domains: {', '.join(account.domains)})"
            )
        key = TRACK_BOUNCES_PREFIX + sender
        with guard("changing bounce tracking"):
            if value is None:
                self.client.hdel(self.keys.account(name), key)
            else:
                if (
                    sender not in account.sender_track_bounces
                    and len(account.sender_track_bounces) >= MAX_SENDER_TRACK_BOUNCES
                ):
                    raise UsageError(
                        f"account {name!r} has {MAX_SENDER_TRACK_BOUNCES} sender bounce "
                        "tracking entries already; unset some first"
                    )
                self.client.hset(self.keys.account(name), key, "true" if value else "false")
            self._changed(name)
        return self.get(name)

    def get(self, name: str) -> Account:
        with guard("reading an account"):
            raw = decoded_hash(self.client.hgetall(self.keys.account(name)))
        if not raw:
            raise NotFound(f"no account named {name!r}")
        return _from_hash(raw)

    def find(self, name: str) -> Account | None:
        try:
            return self.get(name)
        except NotFound:
            return None

    def names(self) -> list[str]:
        with guard("listing accounts"):
            return sorted(map(decoded, self.client.smembers(self.keys.accounts)))

    def all(self) -> list[Account]:
        names = self.names()
        with guard("listing accounts"):
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.account(name))
            rows = pipe.execute()
        return [_from_hash(raw) for raw in rows if raw]

    def set_password(self, name: str, password: str) -> None:
        self.get(name)
        password_hash = hash_password(password)
        with guard("changing a password"):
            self.client.hset(self.keys.account(name), "password_hash", password_hash)
            self._revoked(name)
            self._changed(name)

    def suspend(self, name: str, reason: str = "suspended by the operator") -> None:
        self.get(name)
        with guard("suspending an account"):
            self.client.hset(
                self.keys.account(name), mapping={"status": "suspended", "suspended_reason": reason}
            )
            self._changed(name)

    def resume(self, name: str) -> None:
        self.get(name)
        with guard("resuming an account"):
            self.client.hset(
                self.keys.account(name), mapping={"status": "active", "suspended_reason": ""}
            )
            self._changed(name)

    def remove(self, name: str) -> None:
        account = self.get(name)
        # Its logins first: were the removal cut short, the account is still there to remove.
        Logins(self.client, self.keys).remove_all(name)
        with guard("removing an account"):
            for domain in account.domains:
                if self.client.hget(self.keys.domains, domain) == name:
                    self.client.hdel(self.keys.domains, domain)
            ApiKeys(self.client, self.keys).revoke_all(name)  # a removed account's keys die
            # Its own webhook secret and its event totals too: an account made later under
            # the same name would otherwise sign with a secret the old holder knows, and
            # start from the old holder's txmail_events_total; its kept webhook posts (their
            # answers) are the old holder's too. One DEL, one slot ({name}).
            self.client.delete(
                self.keys.account(name),
                self.keys.webhook_secret(name),
                self.keys.event_totals(name),
                self.keys.account_credentials(name),
                self.keys.webhook_posts(name),
            )
            self.client.srem(self.keys.accounts, name)
            self._changed(name)

    def set_webhook_url(self, name: str, url: str) -> None:
        """Where the account's events are posted ("" stops posting; `txmail webhooks url`)."""
        if url and not re.match(r"^https?://[^\s]+$", url):
            raise UsageError(f"{url!r} is not an http:// or https:// URL")
        self.get(name)
        with guard("changing a webhook URL"):
            self.client.hset(self.keys.account(name), "webhook_url", url)
            self._changed(name)

    def owner_of(self, domain: str) -> str | None:
        with guard("looking up a domain"):
            return decoded_or_none(self.client.hget(self.keys.domains, domain.lower()))

    def add_domain(self, name: str, domain: str) -> bool:
        """Give account `name` the sending domain `domain` (`txmail domains add`).

        Claimed with HSETNX like `add`, so a domain of another account is a Conflict. Returns
        False when the account owned it already."""
        account = self.get(name)
        domain = check_domain(domain)
        with guard("adding a domain"):
            claimed = bool(self.client.hsetnx(self.keys.domains, domain, name))
            owner = name if claimed else self.client.hget(self.keys.domains, domain)
            if owner != name:
                raise Conflict(f"domain {domain} belongs to account {owner!r} already")
            if domain not in account.domains:
                self.client.hset(
                    self.keys.account(name), "domains", json.dumps([*account.domains, domain])
                )
                self._changed(name)
        return claimed

    def remove_domain(self, name: str, domain: str) -> None:
        """Take the sending domain `domain` away from account `name`."""
        account = self.get(name)
        domain = check_domain(domain)
        with guard("removing a domain"):
            if self.client.hget(self.keys.domains, domain) == name:
                self.client.hdel(self.keys.domains, domain)
            if domain in account.domains:
                self.client.hset(
                    self.keys.account(name),
                    "domains",
                    json.dumps([d for d in account.domains if d != domain]),
                )
            self._changed(name)


API_KEY_PREFIX = "txm_"


def revoked(client: Client, keys: Keys, account: str) -> None:
    """Bump the account's credentials generation: one of its credentials was revoked or
    changed, so every console session opened before now ends at its next request."""
    client.incr(keys.account_credentials(account))


def credentials_generation(client: Client, keys: Keys, account: str) -> int:
    """The account's credentials generation (see revoked); 0 before any revocation."""
    raw = decoded_or_none(client.get(keys.account_credentials(account)))
    return int(raw) if raw and raw.isascii() and raw.isdigit() else 0


def hash_api_key(key: str) -> str:
    """SHA-256 of an API key: keys are 256 random bits, so a fast hash is enough to make a
    stolen copy of Redis useless, and it lets the tracker look a key up in one HGET."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class ApiKeys:
    """HTTP API keys of the accounts: only their hashes are stored; a key is shown once."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def create(self, name: str) -> tuple[str, str]:
        """A new key for account `name`: (key id, key). The key is never stored or logged."""
        Accounts(self.client, self.keys).get(name)
        key_id = secrets.token_hex(4)
        key = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        digest = hash_api_key(key)
        with guard("adding an API key"):
            self.client.hset(self.keys.api_keys, digest, name)
            self.client.hset(
                self.keys.account_api_keys(name),
                key_id,
                json.dumps({"created_at": time.time(), "hash": digest}),
            )
        return key_id, key

    def account_of(self, key: str) -> str | None:
        """The account a presented key belongs to; None for an unknown key."""
        if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
            return None
        with guard("checking an API key"):
            return decoded_or_none(self.client.hget(self.keys.api_keys, hash_api_key(key)))

    def list(self, name: str) -> list[dict[str, Any]]:
        with guard("listing API keys"):
            rows = self.client.hgetall(self.keys.account_api_keys(name))
        return sorted(
            (
                {"id": key_id, "created_at": json.loads(raw).get("created_at", 0)}
                for key_id, raw in rows.items()
            ),
            key=lambda r: r["created_at"],
        )

    def revoke(self, name: str, key_id: str) -> bool:
        with guard("revoking an API key"):
            raw = self.client.hget(self.keys.account_api_keys(name), key_id)
            if raw is None:
                return False
            self.client.hdel(self.keys.api_keys, json.loads(raw)["hash"])
            self.client.hdel(self.keys.account_api_keys(name), key_id)
            revoked(self.client, self.keys, name)
        return True

    def revoke_all(self, name: str) -> None:
        with guard("revoking API keys"):
            for key_id in self.client.hkeys(self.keys.account_api_keys(name)):
                self.revoke(name, decoded(key_id))


@dataclass(frozen=True)
class Login:
    """One of an account's own SASL logins."""

    login: str
    account: str
    password_hash: str = field(repr=False)
    created_at: float = 0.0

    def public(self) -> dict[str, object]:
        return {"login": self.login, "account": self.account, "created_at": self.created_at}


def check_login(login: str) -> str:
    """The login as it is stored and compared: lowercase, as Dovecot lowercases every username
    before looking it up (auth_username_format = %Lu in dovecot.conf)."""
    login = login.strip().lower()
    if not LOGIN.match(login):
        raise UsageError(
            f"login {login!r} is not allowed: use an email address such as app@shop.example, "
            "of letters, digits, '.', '-' and '_' (the characters Dovecot accepts in a login)"
        )
    return login


class Logins:
    """An account's own SASL logins, each with its own password, so a client can keep the
    username it had elsewhere (Maxemail's is an email address) and rotate one login's password
    without the others. Dovecot finds them in the passwd-file that authsync writes, each line
    naming its account (`user=ACCOUNT`), so Postfix, the milter and policyd see the account's
    name whichever login was used."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def _changed(self, account: str) -> None:
        Accounts(self.client, self.keys)._changed(account)

    def add(self, account: str, login: str, password: str) -> Login:
        Accounts(self.client, self.keys).get(account)
        login = check_login(login)
        added = Login(login, account, hash_password(password), time.time())
        entry = {"password_hash": added.password_hash, "created_at": added.created_at}
        with guard("adding a login"):
            self._claim(account, login)
            if not self.client.exists(self.keys.account(account)):  # removed meanwhile
                self._release(account, login)
                raise NotFound(f"no account named {account!r}")
            self.client.hset(self.keys.account_logins(account), login, json.dumps(entry))
            self._changed(account)
        return added

    def _claim(self, account: str, login: str) -> None:
        for _ in range(2):
            if self.client.hsetnx(self.keys.logins, login, account):
                return
            owner = decoded_or_none(self.client.hget(self.keys.logins, login))
            if owner is None:
                continue  # released between the two commands: try again
            if owner == account:
                if self.client.hexists(self.keys.account_logins(account), login):
                    raise Conflict(
                        f"account {account!r} has the login {login} already; change its "
                        "password with `txmail accounts login passwd`"
                    )
                return  # a claim an interrupted add left behind
            if self.client.exists(self.keys.account(owner)):
                raise Conflict(f"login {login} belongs to account {owner!r} already")
            # The claim of an account removed while it was being given this login.
            self.client.hdel(self.keys.logins, login)
        raise Conflict(f"login {login} is being claimed by another account; try again")

    def _release(self, account: str, login: str) -> None:
        if decoded_or_none(self.client.hget(self.keys.logins, login)) == account:
            self.client.hdel(self.keys.logins, login)

    def set_password(self, account: str, login: str, password: str) -> None:
        found = self.get(account, login)
        entry = {"password_hash": hash_password(password), "created_at": found.created_at}
        with guard("changing a login's password"):
            self.client.hset(self.keys.account_logins(account), found.login, json.dumps(entry))
            revoked(self.client, self.keys, account)
            self._changed(account)

    def get(self, account: str, login: str) -> Login:
        login = login.strip().lower()
        for found in self.list(account):
            if found.login == login:
                return found
        raise NotFound(
            f"account {account!r} has no login {login!r} (see `txmail accounts login list`)"
        )

    def of_accounts(self, accounts: list[str]) -> list[Login]:
        """The logins of these accounts, in two round trips (authsync reads every account's)."""
        with guard("listing logins"):
            pipe = self.client.pipeline(transaction=False)
            for account in accounts:
                pipe.hgetall(self.keys.account_logins(account))
            rows = [decoded_hash(raw) for raw in pipe.execute()]
            names = [login for raw in rows for login in raw]
            owners = (
                dict(zip(names, self.client.hmget(self.keys.logins, names), strict=True))
                if names
                else {}
            )
        found = []
        for account, raw in zip(accounts, rows, strict=True):
            for login, text in sorted(raw.items()):
                try:
                    entry = json.loads(text)
                except ValueError:
                    entry = None
                if decoded_or_none(owners.get(login)) != account or not isinstance(entry, dict):
                    continue
                found.append(
                    Login(
                        login, account, entry.get("password_hash", ""), entry.get("created_at", 0)
                    )
                )
        return found

    def list(self, account: str) -> list[Login]:
        """The account's logins, by name. Only those the global map gives to this account
        count: an entry an interrupted add or remove left behind is no login."""
        return self.of_accounts([account])

    def account_of(self, login: str) -> str | None:
        """The account a login belongs to (None: no such login)."""
        with guard("looking up a login"):
            return decoded_or_none(self.client.hget(self.keys.logins, login.strip().lower()))

    def remove(self, account: str, login: str) -> None:
        found = self.get(account, login)
        with guard("removing a login"):
            self._release(account, found.login)
            self.client.hdel(self.keys.account_logins(account), found.login)
            revoked(self.client, self.keys, account)
            self._changed(account)

    def remove_all(self, account: str) -> None:
        with guard("removing logins"):
            for login in self.client.hkeys(self.keys.account_logins(account)):
                self._release(account, decoded(login))
            self.client.delete(self.keys.account_logins(account))
            revoked(self.client, self.keys, account)


def _to_hash(account: Account) -> dict[str, str]:
    return {
        "name": account.name,
        "domains": json.dumps(account.domains),
        "password_hash": account.password_hash,
        "status": account.status,
        "suspended_reason": account.suspended_reason,
        "webhook_url": account.webhook_url,
        "created_at": repr(account.created_at),
    }


def _from_hash(raw: dict[str, str]) -> Account:
    return Account(
        name=raw["name"],
        domains=json.loads(raw.get("domains", "[]")),
        password_hash=raw.get("password_hash", ""),
        status=raw.get("status", "active"),
        suspended_reason=raw.get("suspended_reason", ""),
        webhook_url=raw.get("webhook_url", ""),
        created_at=float(raw.get("created_at", "0") or 0),
        settings=account_settings.from_fields(raw),
        sender_track_bounces={
            k[len(TRACK_BOUNCES_PREFIX) :]: v == "true"
            for k, v in raw.items()
            if k.startswith(TRACK_BOUNCES_PREFIX)
        },
    )
