"""policyd's log lines, written once per event-loop turn rather than once per line.

Fails: never; with stderr gone the lines are dropped, as there is nowhere left to say them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any


class TurnBufferedStream:
    """Stands in for a log handler's stream while the event loop runs: the lines logged in one
    loop turn go out in one write() at the start of the next. With policyd.log_permits, one line
    per decision is thousands of lines a second, and a write() each was a tenth of a worker's
    CPU. A worker killed with -9 loses at most the lines of its last turn."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        if not self.lines:
            self.loop.call_soon(self.write_out)
        self.lines.append(text)

    def flush(self) -> None:
        """StreamHandler flushes after each line; the turn's end does it instead."""

    def write_out(self) -> None:
        text, self.lines = "".join(self.lines), []
        with contextlib.suppress(OSError, ValueError):  # stderr gone: nowhere left to say it
            self.stream.write(text)
            self.stream.flush()


@contextlib.contextmanager
def turn_buffered_logs(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Buffer the root logger's stream handlers per loop turn (TurnBufferedStream)."""
    handlers = [
        h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler
    ]  # not FileHandler: it reopens its own
    for handler in handlers:
        handler.setStream(TurnBufferedStream(handler.stream, loop))
    try:
        yield
    finally:
        for handler in handlers:
            buffered = handler.setStream(handler.stream.stream)
            if isinstance(buffered, TurnBufferedStream):
                buffered.write_out()
