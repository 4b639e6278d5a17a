"""The lines the bounce pipe logs about a returned mail's message carry the message's queue id
and account as fields (txmail/logs.py): the recorded event and the forward to the sender."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import redis

from tests.unit.bounce_pipe.test_parser_failures import RECIPIENT, SECRET, returned
from txmail import logs
from txmail.accounts.records import Accounts
from txmail.bounce_pipe.report import process
from txmail.store import Keys
from txmail.store.messages import MessageRecord, Messages
from txmail_testing.harness import bounce_settings


def test_event_and_forward_lines_name_queue_id_and_account(
    tmp_path: Path, client: redis.Redis
) -> None:
    settings = bounce_settings(tmp_path, SECRET)
    keys = Keys(settings.redis.prefix)
    name = f"acc{uuid.uuid4().hex[:6]}"
    Accounts(client, keys).add(name, [f"{name}.example"], "pw-123456789")
    rcpt = "gone@dest.example"
    Messages(client, keys, 86400).record(
        MessageRecord(
            queue_id="4jXCs06YbRzJJ2Y",
            account=name,
            envelope_sender="app@acme.example",
            recipients=[rcpt],
        )
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    logger = logging.getLogger("txmail")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        process(
            settings, client, returned(RECIPIENT, rcpt), "", RECIPIENT, forwarder=lambda *a: None
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    fields = f" queue_id=4jXCs06YbRzJJ2Y account={name}"
    (event,) = [x for x in lines if "4jXCs06YbRzJJ2Y: event bounce " in x]
    (forwarded,) = [x for x in lines if "4jXCs06YbRzJJ2Y: forwarded to <app@acme.example>" in x]
    assert event.endswith(fields) and forwarded.endswith(fields)
