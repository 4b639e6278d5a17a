"""The follower's position lives in Redis and is written by the script call that records the
events of the lines before it (maillog_batch.lua); lines read again from an older position
(what a crash of the machine under appendfsync everysec leaves) give every event, count,
attempt, reputation count and suppression once. Real files, a real Redis, the real follower."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from txmail.accounts.records import Accounts
from txmail.events import Recorder, stream_events, utc_day
from txmail.maillog import server
from txmail.maillog.follower import LogFollower
from txmail.maillog.position import FilePosition, RedisPosition
from txmail.maillog.server import StatusRecorder, handle_lines
from txmail.store import Keys, scripts
from txmail.store.messages import MessageRecord, Messages

QID = "4jXCvV4QlNzJHcB"
P = "Nov 22 04:10:11 mta txmail/smtp[15387]: " + QID + ": "
SENT = (
    P + "to=<a1@dest.test>, relay=mx.dest.test[127.0.0.1]:2526, delay=0.14, "
    "delays=0.1/0.02/0/0.02, dsn=2.0.0, status=sent (250 2.0.0 ok)"
)
BOUNCED = (
    P + "to=<reject-a2@dest.test>, relay=mx.dest.test[127.0.0.1]:2526, delay=0.14, "
    "delays=0.1/0.02/0/0.02, dsn=5.1.1, status=bounced (host mx.dest.test[127.0.0.1] said: "
    "550 5.1.1 <reject-a2@dest.test>: User unknown (in reply to RCPT TO command))"
)


def deferred(delay: str) -> str:
    return (
        P + f"to=<defer-a3@dest.test>, relay=mx.dest.test[127.0.0.1]:2526, delay={delay}, "
        "delays=0.09/0/0/0.01, dsn=4.2.0, status=deferred (host mx.dest.test[127.0.0.1] "
        "said: 450 4.2.0 Mailbox busy (in reply to RCPT TO command))"
    )


LINES = [SENT, BOUNCED, deferred("0.11"), "postfix/qmgr[1]: " + QID + ": removed", deferred("310")]


def setup(client: redis.Redis, keys: Keys) -> StatusRecorder:
    if not client.exists(keys.account("acme")):
        client.hset(keys.account("acme"), "status", "active")  # settings: the defaults
    messages = Messages(client, keys, 3600)
    messages.record(
        MessageRecord(
            queue_id=QID,
            account="acme",
            envelope_sender="app@acme.test",
            recipients=["a1@dest.test", "reject-a2@dest.test", "defer-a3@dest.test"],
            tags=["t1"],
        )
    )
    return recorder(client, keys)


def recorder(client: redis.Redis, keys: Keys) -> StatusRecorder:
    """A fresh follower process's recorder (nothing cached)."""
    return StatusRecorder(
        client,
        keys,
        Messages(client, keys, 3600),
        Recorder(client, keys),
        position_key=keys.maillog_position("node1"),
    )


def state(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Everything the lines wrote for account acme, but the position."""
    found: dict[str, Any] = {}
    for key in sorted(client.scan_iter(keys.prefix + "{acme}:*")):
        kind = client.type(key)
        if kind == "hash":
            found[key] = client.hgetall(key)
        elif kind == "list":
            found[key] = client.lrange(key, 0, -1)
        elif kind == "stream":
            found[key] = [fields for _, fields in client.xrange(key)]
        elif kind == "zset":
            found[key] = client.zrange(key, 0, -1)
    return found


def follower(tmp_path: Path, client: redis.Redis, keys: Keys) -> LogFollower:
    return LogFollower(
        tmp_path / "postfix.log",
        tmp_path / "maillog.offset",
        positions=RedisPosition(
            client, keys.maillog_position("node1"), tmp_path / "maillog.offset"
        ),
    )


def test_the_position_is_written_by_the_call_that_records_the_events(
    client: redis.Redis, keys: Keys
) -> None:
    statuses = setup(client, keys)
    assert handle_lines(LINES, statuses, '{"offset": 1}') == 4
    assert client.get(keys.maillog_position("node1")) == '{"offset": 1}'
    events = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.recipient) for e in events] == [
        ("delivery", "a1@dest.test"),
        ("bounce", "reject-a2@dest.test"),
        ("soft_bounce", "defer-a3@dest.test"),
    ]
    assert events[2].details["attempts"] == 1  # written in by the script
    seen = client.hgetall(keys.event_seen("acme", QID))
    assert seen["attempts:defer-a3@dest.test"] == "2"
    assert seen["counted:delivery:a1@dest.test"] == seen["counted:bounce:reject-a2@dest.test"]
    assert Recorder(client, keys).suppressions.check("acme", ["reject-a2@dest.test"])
    # lines without a status still move the position, in a call of their own
    assert handle_lines(["postfix/qmgr[1]: x: removed"], statuses, '{"offset": 2}') == 0
    assert client.get(keys.maillog_position("node1")) == '{"offset": 2}'
    # without a position (a batch cut in parts, but its last) the key is left alone
    handle_lines([SENT], statuses, None)
    assert client.get(keys.maillog_position("node1")) == '{"offset": 2}'


def test_lines_read_again_from_an_older_position_record_nothing_twice(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    setup(client, keys)
    log = tmp_path / "postfix.log"
    log.write_text("\n".join(LINES[:3]) + "\n")
    first = follower(tmp_path, client, keys)
    lines = first.read_lines()
    handle_lines(lines, recorder(client, keys), first.position())
    first.close()
    older = client.get(keys.maillog_position("node1"))
    with log.open("a") as fh:
        fh.write("\n".join(LINES[3:]) + "\n")
    second = follower(tmp_path, client, keys)
    handle_lines(second.read_lines(), recorder(client, keys), second.position())
    end = second.position()
    second.close()
    assert client.get(keys.maillog_position("node1")) == end
    once = state(client, keys)
    outcomes = client.hgetall(keys.outcomes("acme", int(Recorder(client, keys).clock() // 86400)))
    assert outcomes == {"delivered": "1", "bounced": "1"}

    # Redis's position goes back (a machine crash; here the events stayed): every line is
    # read again, and nothing changes but the position, which comes back to the end.
    for position in (older, json.dumps({**json.loads(end), "offset": 0})):
        client.set(keys.maillog_position("node1"), position)
        again = follower(tmp_path, client, keys)
        lines = again.read_lines()
        assert lines == (LINES[3:] if position == older else LINES)
        handle_lines(lines, recorder(client, keys), again.position())
        again.close()
        assert state(client, keys) == once
        assert client.get(keys.maillog_position("node1")) == end
    counts = client.hgetall(keys.event_counts("acme", utc_day(Recorder(client, keys).clock())))
    assert (counts["delivery"], counts["bounce"], counts["soft_bounce"]) == ("1", "1", "1")
    assert client.hget(keys.event_seen("acme", QID), "attempts:defer-a3@dest.test") == "2"


def test_a_log_that_lost_its_end_and_grew_past_the_position_is_read_from_the_start(
    client: redis.Redis, keys: Keys, tmp_path: Path, caplog: Any
) -> None:
    """A machine crash took back more of the log than of Redis's position, then Postfix wrote
    new lines past it before the follower started: the bytes before the offset are not those
    read there, so the whole file is read again; the lines it had recorded are not recorded
    twice, and the new ones are not skipped."""
    setup(client, keys)
    log = tmp_path / "postfix.log"
    log.write_text("\n".join(LINES[:3]) + "\n")
    first = follower(tmp_path, client, keys)
    handle_lines(first.read_lines(), recorder(client, keys), first.position())
    first.close()
    saved = json.loads(client.get(keys.maillog_position("node1")) or "")
    assert saved["offset"] == log.stat().st_size and saved["tail_len"] > 0
    once = state(client, keys)

    # the crash keeps only the first line; after reboot Postfix logs more than was lost
    filler = [f"Nov 22 04:11:{n:02d} mta postfix/qmgr[1]: 4Other{n}: removed" for n in range(9)]
    log.write_text("\n".join([SENT, LINES[4], *filler]) + "\n")
    assert log.stat().st_size >= saved["offset"]
    again = follower(tmp_path, client, keys)
    with caplog.at_level("WARNING", logger="txmail.maillog"):
        lines = again.read_lines()
    assert lines == [SENT, LINES[4], *filler]
    assert "does not hold, before the saved offset" in caplog.text
    handle_lines(lines, recorder(client, keys), again.position())
    again.close()
    after = state(client, keys)
    events = [e for _, e in stream_events(client, keys, "acme")]
    assert [(e.kind, e.recipient) for e in events] == [
        ("delivery", "a1@dest.test"),
        ("bounce", "reject-a2@dest.test"),
        ("soft_bounce", "defer-a3@dest.test"),
    ]
    assert client.hget(keys.event_seen("acme", QID), "attempts:defer-a3@dest.test") == "2"
    changed = {k for k in set(once) | set(after) if once.get(k) != after.get(k)}
    assert changed == {keys.event_seen("acme", QID)}  # only the second attempt's count
    counts = client.hgetall(keys.event_counts("acme", utc_day(Recorder(client, keys).clock())))
    assert (counts["delivery"], counts["bounce"], counts["soft_bounce"]) == ("1", "1", "1")

    # where the bytes before the offset are those read there, it resumes at the offset
    with log.open("a") as fh:
        fh.write(SENT + "\n")
    resumed = follower(tmp_path, client, keys)
    caplog.clear()
    with caplog.at_level("WARNING", logger="txmail.maillog"):
        assert resumed.read_lines() == [SENT]
    assert "does not hold" not in caplog.text
    resumed.close()


def test_a_node_upgrading_starts_from_its_position_file_then_ignores_it(
    client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    statuses = setup(client, keys)
    log = tmp_path / "postfix.log"
    log.write_text(SENT + "\n")
    old = LogFollower(log, tmp_path / "maillog.offset")  # the file, as before
    assert old.read_lines() == [SENT]
    old.commit()
    old.close()
    assert json.loads(FilePosition(tmp_path / "maillog.offset").read() or "")["offset"] > 0
    with log.open("a") as fh:
        fh.write(BOUNCED + "\n")
    new = follower(tmp_path, client, keys)
    assert new.read_lines() == [BOUNCED]  # resumed at the file's offset
    handle_lines([BOUNCED], statuses, new.position())
    new.commit()
    kept = FilePosition(tmp_path / "maillog.offset").read()
    assert kept is not None and json.loads(kept)["offset"] == len(SENT) + 1  # never removed
    assert client.get(keys.maillog_position("node1")) == new.position()
    new.close()
    with log.open("a") as fh:
        fh.write(deferred("0.11") + "\n")
    ignored = follower(tmp_path, client, keys)  # Redis holds a position: the file is ignored
    assert ignored.read_lines() == [deferred("0.11")]
    handle_lines([deferred("0.11")], statuses, ignored.position())
    ignored.close()
    once = state(client, keys)
    # Redis loses its position (a crash under everysec, a flushed Redis): the file's older
    # offset is used, and the lines after it are read again without being recorded twice
    client.delete(keys.maillog_position("node1"))
    fallback = follower(tmp_path, client, keys)
    assert fallback.read_lines() == [BOUNCED, deferred("0.11")]
    handle_lines([BOUNCED, deferred("0.11")], recorder(client, keys), fallback.position())
    fallback.close()
    assert state(client, keys) == once


def test_a_long_batch_is_cut_in_calls_by_keys_and_only_the_last_moves_the_position(
    client: redis.Redis, keys: Keys, monkeypatch: Any
) -> None:
    statuses = setup(client, keys)
    calls: list[tuple[int, int, str]] = []  # items, keys, position of each call
    script = scripts.get(client, "maillog_batch")

    def counting(keys: list[str], args: list[Any]) -> Any:
        calls.append((int(args[1]), len(keys) - 1, args[0]))
        return script(keys=keys, args=args)

    registered = getattr(client, scripts.ATTRIBUTE)
    registered["maillog_batch"] = counting
    try:
        handle_lines([SENT], statuses, None)
        per_line = calls.pop()[1]  # the keys one delivery line's items touch
        monkeypatch.setattr(server, "BATCH_KEYS", 3 * per_line)
        handle_lines([SENT] * 7 + [BOUNCED] * 2, statuses, '{"offset": 9}')
    finally:
        registered["maillog_batch"] = script
    assert [(items, used) for items, used, _ in calls[:2]] == [(6, 3 * per_line)] * 2
    assert len(calls) == 3 and all(used <= 3 * per_line + per_line for _, used, _ in calls)
    assert [position for _, _, position in calls] == ["", "", '{"offset": 9}']
    assert client.get(keys.maillog_position("node1")) == '{"offset": 9}'
    assert len(stream_events(client, keys, "acme")) == 2  # the delivery and the bounce, once


def test_the_reputation_guard_judges_the_totals_the_batch_counted(
    client: redis.Redis, keys: Keys
) -> None:
    Accounts(client, keys).add(
        "acme",
        ["acme.test"],
        "a long enough password",
        settings={"reputation_min_recipients": 2, "max_bounce_rate": 10},
    )
    statuses = setup(client, keys)
    handle_lines([SENT, BOUNCED], statuses, '{"offset": 3}')
    assert client.hget(keys.reputation("acme"), "suspended")  # 1 of 2 bounced: 50% > 10%
    assert client.hget(keys.account("acme"), "status") == "suspended"
    handle_lines([SENT, BOUNCED], recorder(client, keys), '{"offset": 3}')  # read again
    today = int(Recorder(client, keys).clock() // 86400)
    assert client.hgetall(keys.outcomes("acme", today)) == {"delivered": "1", "bounced": "1"}


def test_a_bounce_the_pipe_and_the_follower_both_record_is_counted_once(
    client: redis.Redis, keys: Keys
) -> None:
    """The bounce pipe's count and its "counted:" mark are one call (reputation_count.lua): a
    follower batch for the same bounce that runs between the pipe's event and its count, or
    after both, does not count it again, and neither does the pipe after the follower."""
    from txmail.accounts import reputation
    from txmail.events import make_event

    statuses = setup(client, keys)
    today = int(Recorder(client, keys).clock() // 86400)
    from txmail.accounts.settings import from_fields

    real = reputation.outcome_hook(client, keys, settings_of=lambda _: from_fields({}))
    raced: list[int] = []

    def hook(account: str, kind: str, mark: tuple[str, str]) -> Any:
        # the follower reads the same bounce from the maillog between the pipe's event and
        # its count (the pipe's event_record.lua answered "not counted yet")
        raced.append(handle_lines([BOUNCED], statuses, None))
        return real(account, kind, mark)

    pipe = Recorder(client, keys, outcome_hook=hook)
    bounce = make_event("bounce", "acme", QID, "reject-a2@dest.test", {"status": "5.1.1"})
    assert pipe.record(bounce).new  # the pipe's event came first; the follower's counted it
    assert raced == [1]
    assert client.hgetall(keys.outcomes("acme", today)) == {"bounced": "1"}
    assert client.hget(keys.event_seen("acme", QID), "counted:bounce:reject-a2@dest.test") == "1"
    # again from either side: still once
    Recorder(client, keys, outcome_hook=real).record(bounce)
    handle_lines([BOUNCED], recorder(client, keys), None)
    assert client.hgetall(keys.outcomes("acme", today)) == {"bounced": "1"}
