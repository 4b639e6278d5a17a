"""txmail authsync: keep this node's Dovecot passwd-file in step with the accounts in Redis.

One line per account (its name and password hash) and one per login of an account (`txmail
accounts login`), whose extra field `user=ACCOUNT` makes Dovecot answer Postfix with the
account's name: {auth_authen} in the milter and sasl_username in policyd are the account
whichever of its logins the client used, so every limit and rule is the account's.

Dovecot authenticates against a local passwd-file rather than Redis, so logins keep working while
Redis is down and on a Redis Cluster (which Dovecot's dict driver cannot follow). This process
listens on PREFIX accounts:changed for immediate updates and does a full resync every
dovecot.resync_interval seconds in case a notification was missed.

Writes: the passwd-file, replaced atomically (mode 0640, group dovecot), and only when its
        content changes. Dovecot re-reads it when its modification time changes.
Fails:  while Redis is unreachable the existing file is kept as it is (an empty one is created
        if there is none) and the sync retries every second.
"""

from __future__ import annotations

import grp
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from txmail import store
from txmail.accounts.records import Account, Accounts, Login, Logins
from txmail.config import Settings
from txmail.files import replace_atomically

log = logging.getLogger("txmail.authsync")


def _usable(password_hash: str) -> bool:
    return password_hash.startswith("{") and not any(c in password_hash for c in ": \n")


def passwd_lines(accounts: list[Account], logins: Sequence[Login] = ()) -> bytes:
    """One `name:{SCHEME}hash::::::` line per account that has a usable hash, then one
    `login:{SCHEME}hash::::::user=ACCOUNT` line per login of those accounts."""
    out = []
    names: set[str] = set()
    for account in sorted(accounts, key=lambda a: a.name):
        names.add(account.name)
        if _usable(account.password_hash):
            out.append(f"{account.name}:{account.password_hash}::::::\n")
    for login in sorted(logins, key=lambda x: x.login):
        if login.account in names and _usable(login.password_hash):
            out.append(f"{login.login}:{login.password_hash}::::::user={login.account}\n")
    return "".join(out).encode()


def write_passwd(path: Path, content: bytes) -> bool:
    """Replace the passwd-file if `content` differs; True when it was written."""
    try:
        if path.read_bytes() == content:
            return False
        previous_mtime = int(path.stat().st_mtime)
    except FileNotFoundError:
        previous_mtime = 0
    try:
        gid = grp.getgrnam("dovecot").gr_gid
    except KeyError:
        gid = -1
    replace_atomically(path, content, mode=0o640, gid=gid)
    # Dovecot re-reads a passwd-file when its mtime (whole seconds) or size changes. A changed
    # password has a hash of the same length, so two writes within one second would look
    # unchanged to it: make sure the modification time moves.
    stamp = max(time.time(), previous_mtime + 1)
    os.utime(path, (stamp, stamp))
    return True


def sync_once(settings: Settings, client: store.Client | None = None) -> bool:
    client = client or store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    accounts = Accounts(client, keys).all()
    logins = Logins(client, keys).of_accounts([a.name for a in accounts])
    content = passwd_lines(accounts, logins)
    changed = write_passwd(settings.path(settings.dovecot.passwd_file), content)
    if changed:
        log.info("passwd-file updated: %d accounts, %d logins", len(accounts), len(logins))
    return changed


def serve(settings: Settings) -> None:
    """Sync forever: on every change notification and every resync_interval seconds."""
    passwd = settings.path(settings.dovecot.passwd_file)
    keys = store.Keys(settings.redis.prefix)
    interval = settings.dovecot.resync_interval
    while True:
        client = store.connect(settings)
        try:
            pubsub = client.pubsub()
            pubsub.subscribe(keys.accounts_changed)
            sync_once(settings, client)
            next_full = time.monotonic() + interval
            while True:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None or time.monotonic() >= next_full:
                    # Several changes in a burst need one sync: drain what is queued.
                    while pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05):
                        pass
                    sync_once(settings, client)
                    next_full = time.monotonic() + interval
        except (redis.RedisError, OSError) as exc:
            if not passwd.exists():
                write_passwd(passwd, b"")
            log.warning(
                "Redis unavailable (%s); keeping the passwd-file, retrying in 1 s",
                exc.__class__.__name__,
            )
            time.sleep(1.0)
