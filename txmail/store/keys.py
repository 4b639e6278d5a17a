"""Every Redis key name txmail uses, built in one place.

Keys that belong to one account carry the hash tag `{account}`, so every Lua script touches a
single Redis Cluster slot. Keys that are global (the account index, domain ownership, the queue-id
pointer) are only ever used one key per command.

    PREFIX accounts                  set     names of all accounts
    PREFIX accounts:version          string  bumped on every account change
    PREFIX accounts:changed          channel a message on every account change
    PREFIX domains                   hash    sending domain -> owning account
    PREFIX queue:QID                 string  Postfix queue id -> account (TTL as the message)
    PREFIX domain:DOMAIN             hash    one sending domain: DKIM keys, return-path subdomain
    PREFIX return-paths              hash    return-path domain -> sending domain (Postfix relays)
    PREFIX {ACCOUNT}:account         hash    the account's settings and state
    PREFIX {ACCOUNT}:message:QID     hash    one accepted message (TTL)
    PREFIX {ACCOUNT}:suppressions    hash    "LIST:recipient" -> JSON suppression entry (capped)
    PREFIX {ACCOUNT}:suppressions:order   zset  "LIST:recipient" by creation time
    PREFIX {ACCOUNT}:suppressions:expiry  zset  "LIST:recipient" by expiry time (only expiring)
    PREFIX {ACCOUNT}:events          stream  the account's events, one JSON `event` field (capped)
    PREFIX {ACCOUNT}:tags            hash    tag -> number of accepted messages carrying it
"""

from __future__ import annotations

import re

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "txmail:") -> None:
        self.prefix = prefix

    # global keys
    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def accounts_version(self) -> str:
        return f"{self.prefix}accounts:version"

    @property
    def accounts_changed(self) -> str:
        return f"{self.prefix}accounts:changed"

    @property
    def domains(self) -> str:
        return f"{self.prefix}domains"

    def queue(self, queue_id: str) -> str:
        return f"{self.prefix}queue:{queue_id}"

    def domain(self, domain: str) -> str:
        return f"{self.prefix}domain:{domain}"

    @property
    def return_paths(self) -> str:
        return f"{self.prefix}return-paths"

    # per-account keys
    def account(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:account"

    def message(self, account: str, queue_id: str) -> str:
        return f"{self.prefix}{{{account}}}:message:{queue_id}"

    def suppressions(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions"

    def suppressions_order(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions:order"

    def suppressions_expiry(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions:expiry"

    def events(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:events"

    def tag_counts(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:tags"
