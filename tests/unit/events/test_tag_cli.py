"""`txmail stats --tag` and `txmail events tail --tag` through click against a real Redis: the
table, the JSON, accounts kept apart, and clear errors for bad input."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from txmail.accounts.records import Accounts
from txmail.cli import main
from txmail.events import Recorder, make_event
from txmail.store import Keys
from txmail_testing.harness import RedisServer


@pytest.fixture
def txmail(redis_server: RedisServer, tmp_path: Path) -> Any:
    prefix = f"cli-{uuid.uuid4().hex[:8]}:"
    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n')
    client = redis_server.client()
    keys = Keys(prefix)
    for name in ("acme", "other", "quiet"):
        Accounts(client, keys).add(name, [f"{name}.example"], "a long enough password")
    recorder = Recorder(client, keys)
    now = time.time()
    for account, qid, kind, tags in (
        ("acme", "Q1", "delivery", ["order"]),
        ("acme", "Q2", "bounce", ["order", "vip"]),
        ("acme", "Q3", "delivery", ["receipt"]),
        ("other", "Q4", "delivery", ["order"]),
    ):
        recorder.record(make_event(kind, account, qid, f"{qid}@b.test", tags=tags, now=now))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(config), *args])
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_stats_by_tag_as_json_per_account(txmail: Any) -> None:
    shown = json.loads(txmail("stats", "--tag", "order", "--json"))
    assert [(row["account"], row["tag"], row["totals"]) for row in shown] == [
        ("acme", "order", {"delivery": 1, "bounce": 1}),
        ("other", "order", {"delivery": 1}),
    ]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(shown[0]["days"]) == 7 and shown[0]["days"][-1]["date"] == today
    assert shown[0]["since"] == shown[0]["days"][0]["date"]
    one = json.loads(txmail("stats", "--tag", "order", "--account", "other", "--json"))
    assert [row["account"] for row in one] == ["other"]
    since = json.loads(txmail("stats", "--tag", "vip", "--since", today, "--json"))
    assert [(r["account"], r["days"]) for r in since] == [
        ("acme", [{"date": today, "counts": {"bounce": 1}}])
    ]


def test_stats_by_tag_as_a_table(txmail: Any) -> None:
    table = txmail("stats", "--tag", "order", "--account", "acme")
    lines = table.splitlines()
    assert lines[0].startswith("acme: tag 'order' since ")
    assert lines[1].split() == ["date", "delivery", "bounce"]
    assert lines[-1].split() == ["total", "1", "1"]
    assert "nothing counted" in txmail("stats", "--tag", "order", "--account", "quiet")
    assert "No account has" in txmail("stats", "--tag", "never-used")


def test_stats_by_tag_refuses_bad_input_clearly(txmail: Any) -> None:
    assert "YYYY-MM-DD" in txmail("stats", "--tag", "order", "--since", "yesterday", code=2)
    assert "--since goes with --tag" in txmail("stats", "--since", "2020-01-01", code=2)
    assert "printable" in txmail("stats", "--tag", "a,b", code=2)


def test_events_tail_by_tag(txmail: Any) -> None:
    lines = txmail("events", "tail", "--tag", "order", "--json").splitlines()
    shown = sorted((e["account"], e["message_id"]) for e in map(json.loads, lines))
    assert shown == [("acme", "Q1"), ("acme", "Q2"), ("other", "Q4")]
    lines = txmail("events", "tail", "--account", "acme", "--tag", "vip", "--tag", "receipt")
    assert sorted(line.split()[2] for line in lines.splitlines()) == ["Q2", "Q3"]
    lines = txmail("events", "tail", "--tag", "order", "--kind", "bounce", "--json").splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == ["Q2"]
