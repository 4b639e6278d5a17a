"""The log line formats (txmail/logs.py): JSON objects and text lines, with the queue id and
account of the message a line concerns as fields of their own."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading

import pytest

from txmail import logs

QID = "4dKb1x0zJ4z9vLK"


def record(msg: str = "%s: accept", *args: object, **extra: str) -> logging.LogRecord:
    made = logging.LogRecord(
        "txmail.milter.server", logging.INFO, __file__, 1, msg, args or (QID,) * ("%s" in msg), None
    )
    made.created = 1796328783.25  # 2026-12-03T20:13:03.250Z
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_line_has_time_level_component_message_and_the_message_fields() -> None:
    line = logs.JsonFormatter("milter").format(record(**logs.about(QID, "acme")))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-12-03T20:13:03.250Z",
        "level": "info",
        "component": "milter",
        "logger": "txmail.milter.server",
        "message": f"{QID}: accept",
        "queue_id": QID,
        "account": "acme",
    }


def test_json_line_without_a_message_has_no_message_fields() -> None:
    fields = json.loads(logs.JsonFormatter("policyd").format(record("listening on %s", "x")))
    assert "queue_id" not in fields and "account" not in fields
    assert fields["message"] == "listening on x"


def test_noqueue_is_no_queue_id_but_the_account_stays() -> None:
    fields = json.loads(logs.JsonFormatter("milter").format(record(**logs.about("NOQUEUE", "a"))))
    assert "queue_id" not in fields
    assert fields["account"] == "a"


def test_text_line_ends_with_the_fields() -> None:
    line = logs.TextFormatter().format(record(**logs.about(QID, "acme")))
    assert line == (
        f"2026-12-03T20:13:03.250Z INFO txmail.milter.server: {QID}: accept "
        f"queue_id={QID} account=acme"
    )


def test_a_traceback_stays_inside_the_json_object() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        made = record("%s: internal error", QID, **logs.about(QID))
        made.exc_info = sys.exc_info()
    line = logs.JsonFormatter("milter").format(made)
    assert len(line.splitlines()) == 1
    fields = json.loads(line)
    assert "ValueError: boom" in fields["exception"] and fields["queue_id"] == QID
    text = logs.TextFormatter().format(made)
    assert text.splitlines()[0].endswith(f"queue_id={QID}")
    assert "ValueError: boom" in text


def test_concerning_names_the_message_of_every_line_in_the_block() -> None:
    formatter = logs.JsonFormatter("maillog")
    with logs.concerning(QID, "acme"):
        inside = json.loads(formatter.format(record()))
        own = json.loads(formatter.format(record(**logs.about("4dOTHERzzzzzzzz", "b"))))
    after = json.loads(formatter.format(record()))
    assert (inside["queue_id"], inside["account"]) == (QID, "acme")
    assert (own["queue_id"], own["account"]) == ("4dOTHERzzzzzzzz", "b")  # extra= wins
    assert "queue_id" not in after


def test_concerning_asks_when_the_line_is_logged() -> None:
    """The milter learns the queue id at end of data: a line logged after that names it."""
    known: dict[str, str | None] = {"queue_id": None}
    formatter = logs.TextFormatter()
    with logs.concerning(asked=lambda: (known["queue_id"], "acme")):
        before = formatter.format(record("mail from"))
        known["queue_id"] = QID
        later = formatter.format(record("end of data"))
    assert before.endswith("mail from account=acme")
    assert later.endswith(f"end of data queue_id={QID} account=acme")


def test_concerning_holds_per_thread_and_per_task() -> None:
    formatter = logs.TextFormatter()
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(formatter.format(record("elsewhere")))

    with logs.concerning(QID, "acme"):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()

    async def task(qid: str) -> str:
        with logs.concerning(qid, "t"):
            await asyncio.sleep(0)
            return formatter.format(record("in a task"))

    async def both() -> list[str]:
        return list(await asyncio.gather(task("4dAAAAAAAAAAAAA"), task("4dBBBBBBBBBBBBB")))

    assert seen == ["2026-12-03T20:13:03.250Z INFO txmail.milter.server: elsewhere"]
    one, two = asyncio.run(both())
    assert one.endswith("queue_id=4dAAAAAAAAAAAAA account=t")
    assert two.endswith("queue_id=4dBBBBBBBBBBBBB account=t")


def test_setup_names_the_component_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(logs.COMPONENT_ENV, "bounce-pipe")
    stream = io.StringIO()
    logs.setup("json", "txmail", stream=stream)
    try:
        logging.getLogger("txmail.test").info("%s: kept", QID, extra=logs.about(QID, "acme"))
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if handler.get_name() == logs.HANDLER_NAME:
                root.removeHandler(handler)
    fields = json.loads(stream.getvalue())
    assert fields["component"] == "bounce-pipe"
    assert (fields["queue_id"], fields["account"]) == (QID, "acme")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])


def test_a_wrapped_foreign_line_is_json_of_its_component() -> None:
    fields = json.loads(logs.wrap_line('1:M 07 Dec "Ready to accept"', "redis", 0.5))
    assert fields == {
        "time": "1970-01-01T00:00:00.500Z",
        "level": "info",
        "component": "redis",
        "message": '1:M 07 Dec "Ready to accept"',
    }
