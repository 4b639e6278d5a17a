"""Which account a name and password open, checked as Dovecot checks them for SMTP AUTH.

    account_for_password(client, keys, login, password)   the account's name, or None

A name with '@' is one of an account's own logins (`txmail accounts login add`), any other
the account's name with its own SMTP password: the same passwd-file lines authsync writes for
Dovecot (txmail/authsync), read from Redis. Names are lowercased as Dovecot does
(auth_username_format = %Lu). An unknown name costs one bcrypt check like a known one, so the
time taken does not say which half was wrong. A suspended account still matches: the caller
says so (only after the password was right).

Fails: StoreUnavailable when Redis is down.
"""

from __future__ import annotations

import functools

import bcrypt

from txmail.accounts.records import Accounts, Logins, check_password
from txmail.store import Client, Keys
from txmail.store.keys import ACCOUNT_NAME, LOGIN

MAX_PASSWORD = 72  # bytes bcrypt reads


@functools.cache
def _nobody() -> str:
    """A hash of no password anyone knows, checked for unknown names so they take as long."""
    return "{BLF-CRYPT}" + bcrypt.hashpw(b"no such login", bcrypt.gensalt(rounds=10)).decode()


def account_for_password(client: Client, keys: Keys, login: str, password: str) -> str | None:
    login = login.strip().lower()[:320]
    password_hash = ""
    account: str | None = None
    if "@" in login and LOGIN.match(login):
        account = Logins(client, keys).account_of(login)
        if account is not None:
            found = [x for x in Logins(client, keys).list(account) if x.login == login]
            password_hash = found[0].password_hash if found else ""
    elif ACCOUNT_NAME.match(login):
        record = Accounts(client, keys).find(login)
        if record is not None:
            account, password_hash = record.name, record.password_hash
    usable = bool(password) and len(password.encode("utf-8", "replace")) <= MAX_PASSWORD
    if not password_hash or not usable:
        check_password("x" if not usable else password, _nobody())
        return None
    return account if check_password(password, password_hash) else None
