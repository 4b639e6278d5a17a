"""txmail/reports/search.py: an account's messages by id, recipient, tag, kind and date,
bounded, and never another account's."""

from __future__ import annotations

import time

import pytest
import redis

from tests.unit.reports.conftest import RECORD_TTL, Send
from txmail.accounts.records import Accounts
from txmail.errors import UsageError
from txmail.events import Recorder, make_event
from txmail.reports import search as search_module
from txmail.reports.search import message_json, parse_query, read_events, search
from txmail.store import Keys

HARD = ("bounce", {"reason": "userunknown", "status": "5.1.1", "diagnostic": "550 no such user"})
DELIVERED = ("delivery", {"status": "2.0.0"})


def found_ids(client: redis.Redis, keys: Keys, account: str = "acme", **fields: str) -> list[str]:
    page = search(client, keys, account, parse_query(fields), RECORD_TTL)
    return [m.message_id for m in page.messages]


def test_search_by_recipient_tag_kind_and_id(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], ("welcome",), {"alice@x.test": DELIVERED})
    send("AAAAAA0002", ["bob@y.test"], ("reset",), {"bob@y.test": HARD})
    send("AAAAAA0003", ["carol@x.test"], ("welcome",), {"carol@x.test": HARD})
    send("BBBBBB0001", ["bob@y.test"], ("reset",), {"bob@y.test": HARD}, account="other")

    assert found_ids(client, keys, recipient="BOB@") == ["AAAAAA0002"]
    assert found_ids(client, keys, recipient="x.test") == ["AAAAAA0003", "AAAAAA0001"]
    assert found_ids(client, keys, tag="welcome", kind="bounce") == ["AAAAAA0003"]
    assert found_ids(client, keys, kind="bounce") == ["AAAAAA0003", "AAAAAA0002"]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(found_ids(client, keys, since=today, until=today)) == 3
    assert found_ids(client, keys, until="2000-01-01") == []
    assert found_ids(client, keys, since="2999-01-01") == []
    # by id: the record, whatever the other fields say; another account's id is not found
    assert found_ids(client, keys, id="AAAAAA0001") == ["AAAAAA0001"]
    assert found_ids(client, keys, id="BBBBBB0001") == []
    assert found_ids(client, keys, "other", recipient="bob") == ["BBBBBB0001"]

    page = search(client, keys, "acme", parse_query({"recipient": "bob"}), RECORD_TTL)
    (bob,) = page.messages
    assert bob.kinds == ["bounce"] and bob.tags == ["reset"]
    assert bob.envelope_sender == "app@acme.test" and bob.accepted_at.startswith(today)
    assert page.complete and page.scanned == 3


def test_a_page_is_at_most_the_limit_and_the_next_page_carries_on(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    for n in range(5):
        send(f"AAAAAA000{n}", [f"r{n}@x.test"], (), {f"r{n}@x.test": DELIVERED})
    first = search(client, keys, "acme", parse_query({}), RECORD_TTL, limit=2)
    assert [m.message_id for m in first.messages] == ["AAAAAA0004", "AAAAAA0003"]
    assert not first.complete and first.next
    second = search(client, keys, "acme", parse_query({"before": first.next}), RECORD_TTL, limit=2)
    assert [m.message_id for m in second.messages] == ["AAAAAA0002", "AAAAAA0001"]
    assert search(client, keys, "acme", parse_query({}), RECORD_TTL, limit=1000).complete


def test_the_walk_is_bounded_in_entries_read(
    client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "MAX_SCAN", 7)
    monkeypatch.setattr(search_module, "BATCH", 3)
    recorder = Recorder(client, keys)
    for n in range(20):
        recorder.record(make_event("delivery", "acme", f"AAAAAA{n:04d}", "a@x.test"))
    page = search(client, keys, "acme", parse_query({"recipient": "nobody"}), RECORD_TTL)
    assert page.scanned == 7 and not page.complete and page.messages == []
    rest = search(client, keys, "acme", parse_query({"before": page.next}), RECORD_TTL)
    assert rest.scanned == 7  # carries on below what was read


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"since": "yesterday"}, "since must be a date as YYYY-MM-DD"),
        ({"until": "2026-02-30"}, "until must be a date"),
        ({"since": "2026-02-02", "until": "2026-02-01"}, "since must not be after until"),
        ({"kind": "sent"}, "kind must be one of delivery"),
        ({"id": "../etc"}, "id must be a message id"),
        ({"tag": "a,b"}, "without a comma"),
        ({"recipient": "x" * 400}, "at most 320 printable characters"),
        ({"recipient": "a\x00b"}, "printable"),
        ({"before": "nope"}, "previous page"),
    ],
)
def test_bad_fields_say_what_to_fix(fields: dict[str, str], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_query(fields)


def test_the_api_reads_share_this_code(
    client: redis.Redis, keys: Keys, accounts: Accounts, send: Send
) -> None:
    send("AAAAAA0001", ["alice@x.test"], ("welcome",), {"alice@x.test": HARD})
    shown = message_json(client, keys, RECORD_TTL, "acme", "AAAAAA0001")
    assert shown is not None
    assert [e["kind"] for e in shown["events"]] == ["bounce"]
    assert message_json(client, keys, RECORD_TTL, "other", "AAAAAA0001") is None
    assert message_json(client, keys, RECORD_TTL, "acme", "no/such") is None
    events, after = read_events(client, keys, "acme", tag="welcome")
    assert [e["message_id"] for e in events] == ["AAAAAA0001"] and after
    assert read_events(client, keys, "acme", after=after) == ([], after)
