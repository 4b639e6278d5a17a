"""Suppression lists: recipients an account must not send to any more.

Two lists per account: `bounce` (hard bounces, complaints; written by the bounce pipe) and
`unsubscribe` (the recipient asked to stop; written by the tracker and the operator). The milter
asks `check()` for all recipients of a message in one Redis round trip.

Reads and writes:  PREFIX {ACCOUNT}:suppressions (hash "LIST:recipient" -> JSON entry),
                   PREFIX {ACCOUNT}:suppressions:order (zset by creation time) and
                   PREFIX {ACCOUNT}:suppressions:expiry (zset by expiry, expiring entries only).
                   All three share the account's hash tag; additions run as one Lua script
                   (scripts/suppression_add.lua) that also drops expired entries and, past the
                   cap, the oldest ones, so the lists cannot grow without bound.
Addresses:         compared in lower case (mailbox providers treat local parts that way).
Expiry:            an entry may carry expires_at; an expired entry is ignored at once by
                   check() and list() and removed by later additions.
Fails:             UsageError for a bad list name or address; StoreUnavailable when Redis is
                   down (the milter answers 4xx).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

from txmail.errors import UsageError
from txmail.store import Client, Keys, decoded_or_none, guard, scripts

LISTS = ("bounce", "unsubscribe")
DEFAULT_CAP = 1_000_000
MAX_ADDRESS = 320
MAX_REASON = 512
PAGE = 500


@dataclass(frozen=True)
class SuppressionEntry:
    list: str
    recipient: str
    reason: str
    created_at: float
    event_id: str | None = None
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def public(self) -> dict[str, Any]:
        """The entry as JSON-ready values (what export writes and import reads)."""
        return asdict(self)


def normalize_address(recipient: str) -> str:
    address = recipient.strip().strip("<>").strip().lower()
    if (
        not address
        or len(address) > MAX_ADDRESS
        or "@" not in address
        or any(c.isspace() for c in address)
    ):
        raise UsageError(f"{recipient[:80]!r} is not a mail address")
    return address


def check_list(name: str) -> str:
    if name not in LISTS:
        raise UsageError(f"unknown suppression list {name!r} (use {' or '.join(LISTS)})")
    return name


def _field(list_name: str, address: str) -> str:
    return f"{list_name}:{address}"


def _entry(raw: str | None) -> SuppressionEntry | None:
    if not raw:
        return None
    try:
        values = json.loads(raw)
        return SuppressionEntry(
            list=values["list"],
            recipient=values["recipient"],
            reason=values.get("reason", ""),
            created_at=float(values.get("created_at", 0)),
            event_id=values.get("event_id"),
            expires_at=(
                float(values["expires_at"]) if values.get("expires_at") is not None else None
            ),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a damaged entry must not stop mail; it is shown by nothing and replaced


class Suppressions:
    """Suppression operations over one Redis client. `clock` is passed in for tests."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        cap: int = DEFAULT_CAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = keys
        self.cap = cap
        self.clock = clock
        self._add = scripts.get(client, "suppression_add")

    def check(
        self, account: str, recipients: list[str], lists: tuple[str, ...] = LISTS
    ) -> dict[str, SuppressionEntry]:
        """The suppressed recipients among `recipients`, each with the entry that suppresses
        it (the first of `lists` that has it). Keys are the recipients as given."""
        for name in lists:
            check_list(name)
        wanted: list[tuple[str, str]] = []  # (recipient as given, field)
        for recipient in recipients:
            try:
                address = normalize_address(recipient)
            except UsageError:
                continue  # not an address we could ever have stored
            wanted.extend((recipient, _field(name, address)) for name in lists)
        if not wanted:
            return {}
        with guard("checking suppression lists"):
            rows = self.client.hmget(self.keys.suppressions(account), [f for _, f in wanted])
        now = self.clock()
        found: dict[str, SuppressionEntry] = {}
        for (recipient, _), raw in zip(wanted, rows, strict=True):
            entry = _entry(decoded_or_none(raw))
            if entry is not None and recipient not in found and not entry.expired(now):
                found[recipient] = entry
        return found

    def add(
        self,
        account: str,
        list: str,
        recipient: str,
        reason: str,
        event_id: str | None = None,
        expires_at: float | None = None,
    ) -> SuppressionEntry:
        """Suppress `recipient` for `account` on `list`; replaces an entry that is there."""
        entry = self._make(list, recipient, reason, event_id, expires_at, self.clock())
        with guard("adding a suppression"):
            self._run_add(self.client, account, entry)
        return entry

    def _make(
        self,
        list_name: str,
        recipient: str,
        reason: str,
        event_id: str | None,
        expires_at: float | None,
        created_at: float,
    ) -> SuppressionEntry:
        check_list(list_name)
        return SuppressionEntry(
            list=list_name,
            recipient=normalize_address(recipient),
            reason=reason[:MAX_REASON],
            created_at=created_at,
            event_id=event_id or None,
            expires_at=expires_at,
        )

    def _run_add(self, client: Any, account: str, entry: SuppressionEntry) -> Any:
        keys, args = self.add_call(account, entry)
        return self._add(keys=keys, args=args, client=client)

    def add_call(self, account: str, entry: SuppressionEntry) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of store/scripts/suppression_add.lua putting `entry` on the list (for
        a caller that runs it inside a batch script of its own)."""
        return (
            [
                self.keys.suppressions(account),
                self.keys.suppressions_order(account),
                self.keys.suppressions_expiry(account),
            ],
            [
                _field(entry.list, entry.recipient),
                json.dumps(entry.public()),
                repr(entry.created_at),
                "" if entry.expires_at is None else repr(entry.expires_at),
                repr(self.clock()),
                self.cap,
            ],
        )

    def entry(
        self,
        list: str,
        recipient: str,
        reason: str,
        event_id: str | None = None,
        expires_at: float | None = None,
    ) -> SuppressionEntry:
        """The entry add() would write, made now."""
        return self._make(list, recipient, reason, event_id, expires_at, self.clock())

    def remove(self, account: str, list: str, recipient: str) -> bool:
        """Take `recipient` off `list`; False if it was not on it."""
        field = _field(check_list(list), normalize_address(recipient))
        with guard("removing a suppression"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.keys.suppressions(account), field)
            pipe.zrem(self.keys.suppressions_order(account), field)
            pipe.zrem(self.keys.suppressions_expiry(account), field)
            removed, _, _ = pipe.execute()
        return bool(removed)

    def count(self, account: str) -> int:
        """How many entries the account holds (expired ones not yet removed included)."""
        with guard("counting suppressions"):
            return int(self.client.zcard(self.keys.suppressions_order(account)))

    def entries(
        self, account: str, list: str | None = None, max_read: int | None = None
    ) -> Iterator[SuppressionEntry]:
        """Every live entry, newest first, optionally of one list; read a page at a time.
        With `max_read`, no more than that many entries are read, whatever they are (expired,
        or of the other list, count too)."""
        if list is not None:
            check_list(list)
        start = 0
        while max_read is None or start < max_read:
            size = PAGE if max_read is None else min(PAGE, max_read - start)
            with guard("listing suppressions"):
                # Members only (no withscores), which redis-py's annotation does not tell apart.
                fields = cast(
                    "builtins.list[str]",
                    self.client.zrevrange(
                        self.keys.suppressions_order(account), start, start + size - 1
                    ),
                )
                rows = self.client.hmget(self.keys.suppressions(account), fields) if fields else []
            now = self.clock()
            for raw in rows:
                entry = _entry(decoded_or_none(raw))
                if entry is None or entry.expired(now):
                    continue
                if list is None or entry.list == list:
                    yield entry
            if len(fields) < size:
                return
            start += size

    def list(
        self, account: str, list: str | None = None, limit: int = 100
    ) -> list[SuppressionEntry]:
        """The newest `limit` live entries, optionally of one list."""
        found: builtins.list[SuppressionEntry] = []  # `list` here is the parameter
        for entry in self.entries(account, list):
            if len(found) >= limit:
                break
            found.append(entry)
        return found

    def export(self, account: str, list: str | None = None) -> Iterator[str]:
        """Every live entry as one JSON line (what `import_lines` reads)."""
        for entry in self.entries(account, list):
            yield json.dumps(entry.public(), sort_keys=True)

    def import_lines(
        self,
        account: str,
        lines: Iterable[str],
        default_list: str | None = None,
        reason: str = "imported",
    ) -> int:
        """Add entries from JSON lines (as exported) or bare addresses (one a line, needing
        `default_list`). All lines are checked before anything is written. Returns how many."""
        now = self.clock()
        entries: list[SuppressionEntry] = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                if text.startswith("{"):
                    values = json.loads(text)
                    entries.append(
                        self._make(
                            values.get("list") or default_list or "",
                            values["recipient"],
                            values.get("reason") or reason,
                            values.get("event_id"),
                            values.get("expires_at"),
                            float(values.get("created_at") or now),
                        )
                    )
                else:
                    entries.append(self._make(default_list or "", text, reason, None, None, now))
            except (ValueError, KeyError, TypeError, UsageError) as exc:
                raise UsageError(f"line {number}: {exc}") from None
        with guard("importing suppressions"):
            for start in range(0, len(entries), PAGE):
                pipe = self.client.pipeline(transaction=False)
                for entry in entries[start : start + PAGE]:
                    self._run_add(pipe, account, entry)
                pipe.execute()
        return len(entries)
