"""How every txmail process writes its log lines: text or JSON (log.format), one line each.

A line that concerns a message carries the message's Postfix queue id and its account as fields
of their own, in both formats, so an operator can search for either:

    text: 2026-12-07T20:13:03.123Z INFO txmail.milter: 4dKb1x0zJ4z9vLK: accept: ...
          queue_id=4dKb1x0zJ4z9vLK account=acme
    json: {"time": "2026-12-07T20:13:03.123Z", "level": "info", "component": "milter",
           "logger": "txmail.milter", "message": "4dKb1x0zJ4z9vLK: accept: ...",
           "queue_id": "4dKb1x0zJ4z9vLK", "account": "acme"}

Code says which message a line is about either per line (`log.info(..., extra=about(qid,
account))`) or for everything logged while it works on one message (`with concerning(qid,
account):`, a context variable, so it holds per thread and per asyncio task); the first wins.

Which process wrote a line (the component: milter, policyd, ...) is TXMAIL_COMPONENT, which
`txmail up` sets for each child, else the command's own name. `txmail up` passes each child's
lines on to its own standard error with the component's name (stack/relay.py), or into
STATE/log/NAME.log with log.destination = "files".

Nothing here prints a secret: the fields are the queue id and the account name only, and the
message is what the caller formatted (no caller logs a password, key or token).

Fails: never; a record that cannot be formatted is logging's own business (handleError).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

FORMATS = ("text", "json")
DESTINATIONS = ("stderr", "files")
COMPONENT_ENV = "TXMAIL_COMPONENT"
HANDLER_NAME = "txmail"

Concerning = Callable[[], tuple[str | None, str | None]]

# What gives the (queue id, account) of the message the current thread or task works on.
_concerning: contextvars.ContextVar[Concerning | None] = contextvars.ContextVar(
    "txmail_log_message", default=None
)


def about(queue_id: str | None, account: str | None = None) -> dict[str, str]:
    """The `extra=` of a log call about one message; empty or "NOQUEUE" parts are left out."""
    extra: dict[str, str] = {}
    if queue_id and queue_id != "NOQUEUE":
        extra["queue_id"] = queue_id
    if account:
        extra["account"] = account
    return extra


@contextlib.contextmanager
def concerning(
    queue_id: str | None = None, account: str | None = None, *, asked: Concerning | None = None
) -> Iterator[None]:
    """Every line logged inside the block (in this thread or task) is about this message;
    `asked` instead gives both when a line is logged (the milter learns the queue id and the
    account as the SMTP session goes on)."""
    token = _concerning.set(asked or (lambda: (queue_id, account)))
    try:
        yield
    finally:
        _concerning.reset(token)


def message_fields(record: logging.LogRecord) -> dict[str, str]:
    """The queue_id and account of a record: its own extra= first, else concerning()'s."""
    fields: dict[str, str] = {}
    asked = _concerning.get()
    outer = asked() if asked is not None else (None, None)
    for index, name in enumerate(("queue_id", "account")):
        value = getattr(record, name, None) or outer[index]
        if value and value != "NOQUEUE":
            fields[name] = str(value)
    return fields


def rfc3339(created: float) -> str:
    """UTC with milliseconds and a Z, e.g. 2026-12-07T20:13:03.123Z."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: MESSAGE queue_id=... account=...` (the fields only when known)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        fields = message_fields(record)
        if fields:
            text += "".join(f" {k}={v}" for k, v in fields.items())
        line = f"{rfc3339(record.created)} {record.levelname} {record.name}: {text}"
        trace = self.traceback_of(record)
        return f"{line}\n{trace}" if trace else line

    def traceback_of(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


class JsonFormatter(TextFormatter):
    """One JSON object per line: time (RFC 3339, UTC), level, component, logger, message, and
    queue_id/account when the line is about a message; a traceback goes into "exception"
    (its newlines escaped, so the object stays on one line)."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
            **message_fields(record),
        }
        trace = self.traceback_of(record)
        if trace:
            line["exception"] = trace
        return json.dumps(line, ensure_ascii=False)


def wrap_line(text: str, component: str, created: float | None = None) -> str:
    """A line a component printed outside logging (Redis, Dovecot, a crash's traceback) as a
    JSON log line of that component."""
    return json.dumps(
        {
            "time": rfc3339(time.time() if created is None else created),
            "level": "info",
            "component": component,
            "message": text,
        },
        ensure_ascii=False,
    )


def component_name(default: str) -> str:
    return os.environ.get(COMPONENT_ENV) or default


def formatter(log_format: str, component: str) -> logging.Formatter:
    return JsonFormatter(component) if log_format == "json" else TextFormatter()


def setup(
    log_format: str = "text",
    component: str = "txmail",
    verbose: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Log to standard error (the supervisor or the service manager takes it from there) in
    `log_format`, as `component` unless TXMAIL_COMPONENT names another."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, component_name(component)))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in root.handlers[:]:
        if old.get_name() == HANDLER_NAME:  # set up before; other handlers (a test's) stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
