"""Suppression lists as CSV (txmail/reports/suppressions_csv.py), over a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from txmail.errors import UsageError
from txmail.reports.suppressions_csv import export_csv, import_csv, search
from txmail.store import Keys
from txmail.store.suppressions import Suppressions


@pytest.fixture
def lists(client: redis.Redis) -> Suppressions:
    return Suppressions(client, Keys(f"s{uuid.uuid4().hex[:8]}:"))


def test_export_then_import_gives_the_same_entries(lists: Suppressions) -> None:
    lists.add("a", "bounce", "one@x.example", "550 5.1.1 no such user")
    lists.add("a", "unsubscribe", "=two@x.example", '=HYPERLINK("http://evil")', expires_at=4e9)
    text = "".join(export_csv(lists.entries("a")))
    assert text.startswith("list,recipient,reason,created_at,expires_at\r\n")
    assert "'=HYPERLINK" in text and "'=two@x.example" in text  # never a formula
    assert import_csv(lists, "b", text, None, 10) == 2
    exported = {(e.list, e.recipient, e.reason, e.expires_at) for e in lists.entries("a")}
    imported = {(e.list, e.recipient, e.reason, e.expires_at) for e in lists.entries("b")}
    assert imported == exported


def test_bare_addresses_take_the_list_given(lists: Suppressions) -> None:
    assert (
        import_csv(lists, "a", "recipient\r\nA@X.example\r\n\r\nb@x.example\r\n", "bounce", 5) == 2
    )
    assert sorted(e.recipient for e in lists.entries("a", "bounce")) == [
        "a@x.example",
        "b@x.example",
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a@x.example\r\nb@x.example\r\nc@x.example\r\n", "more than 2 rows"),
        ("a@x.example\r\nnot an address\r\n", "row 2"),
        ("recipient\r\n\r\na@x.example\r\n\r\nnot an address\r\n", "row 5"),
        ("list,recipient,expires_at\r\nbounce,a@x.example,tomorrow\r\n", "row 2: expires_at"),
        ("", "no addresses"),
    ],
)
def test_bad_files_write_nothing(lists: Suppressions, text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        import_csv(lists, "a", text, "bounce", 2)
    assert lists.count("a") == 0


def test_search_is_bounded(lists: Suppressions) -> None:
    for n in range(10):
        lists.add("a", "bounce", f"user{n}@x.example", "test")
    found = search(lists, "a", "USER", None, limit=3, scan=100)
    assert [e.recipient for e in found.entries] == [
        "user9@x.example",
        "user8@x.example",
        "user7@x.example",
    ]
    assert not found.complete
    found = search(lists, "a", "user1", None, limit=10, scan=5)  # user1 is the 9th newest
    assert found.entries == [] and not found.complete
    found = search(lists, "a", "user1", "bounce", limit=10, scan=100)
    assert [e.recipient for e in found.entries] == ["user1@x.example"] and found.complete


def test_search_counts_every_entry_it_reads(lists: Suppressions) -> None:
    """Entries of the other list (and expired ones) count towards `scan` too."""
    lists.add("a", "unsubscribe", "old@x.example", "test")  # the oldest of all
    for n in range(10):
        lists.add("a", "bounce", f"user{n}@x.example", "test")
    found = search(lists, "a", "", "unsubscribe", limit=10, scan=5)
    assert found.entries == [] and not found.complete
    found = search(lists, "a", "", "unsubscribe", limit=10, scan=11)
    assert [e.recipient for e in found.entries] == ["old@x.example"] and found.complete


def test_a_row_csv_cannot_read_is_named(lists: Suppressions) -> None:
    text = "a@x.example\r\n" + "b" * 200_000 + "@x.example\r\n"
    with pytest.raises(UsageError, match="row 2"):
        import_csv(lists, "a", text, "bounce", 10)
    assert lists.count("a") == 0
