"""Where the maillog follower keeps its position in the log: in Redis, or in a file.

DESCRIPTION
    A position is JSON text: {"device", "inode", "offset"} of a log file (follower.py) or
    {"cursor"} of the journal (journal.py). The followers read it with read() when they
    (re)start and hand the current one out with their position().

    RedisPosition: PREFIX maillog:position:NODE. It is written by the same script call that
    records the events of the lines before it (store/scripts/maillog_batch.lua, through
    txmail.maillog.server), never on its own, so Redis's events and the position always agree:
    when a crash of the machine takes the last second of Redis's writes away under
    appendfsync everysec, it takes the position back with them and the follower reads those
    lines again. write() does nothing.

    The position file (maillog.offset_file) is what the follower used before: it is read only
    when Redis has no position (a node upgrading, or a Redis that lost its data; on a Redis
    Cluster, where one script cannot reach every account's slot, FilePosition is used
    instead). It is never removed: once Redis holds a position the file is ignored. Removing
    it would be safe only once Redis's position is on disk (a while later under everysec);
    kept, an older offset is what a crash that loses Redis's position falls back to, and the
    lines after it are read again, which records nothing twice.

WRITES
    FilePosition: the file, replaced atomically (write and rename). RedisPosition: nothing
    (the batch script writes the position in Redis; the old file is left as it is).

FAILURE
    RedisPosition.read() raises StoreUnavailable when Redis is down; the follower tries again.
    An unreadable file counts as no position.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from txmail import store

log = logging.getLogger("txmail.maillog")


class Positions(Protocol):
    def read(self) -> str | None: ...

    def write(self, text: str) -> None: ...


class FilePosition:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


class RedisPosition:
    def __init__(self, client: store.Client, key: str, migrate_from: Path) -> None:
        self.client = client
        self.key = key
        self.migrate_from = migrate_from

    def read(self) -> str | None:
        with store.guard("reading the maillog position"):
            found = store.decoded_or_none(self.client.get(self.key))
        if found is not None:
            return found
        migrated = FilePosition(self.migrate_from).read()
        if migrated is not None:
            log.info(
                "no maillog position in Redis: starting from %s (kept; ignored once Redis "
                "holds a position)",
                self.migrate_from,
            )
        return migrated

    def write(self, text: str) -> None:
        """Nothing: the batch script wrote the position; the old file is kept (module
        text)."""
