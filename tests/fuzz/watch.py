"""Log records a target wrote while it ran: how a property sees a failure the code swallowed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def logged(name: str, level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """The records of logger `name` at `level` or above written inside the block."""
    logger = logging.getLogger(name)
    collector = _Collector()
    collector.setLevel(level)
    old_level = logger.level
    logger.addHandler(collector)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield collector.records
    finally:
        logger.removeHandler(collector)
        logger.setLevel(old_level)
