"""The soak, CI-sized: 1,000 messages with mixed outcomes through one whole node while Redis and
the maillog follower are killed with SIGKILL (bench/soak.py is the same code at 20,000 messages
and six faults).

Redis and the follower are the two faults most likely to lose something: Redis holds every
message record and event (a write acknowledged but not yet in the append-only file is gone
after kill -9), and the follower turns the maillog into delivery and soft_bounce events from a
saved offset. Nothing may be lost, and every accepted message must have exactly the events its
outcome calls for, one per (queue id, recipient, kind). It runs under the default
redis.appendfsync ("always") only, to keep the suite's time: the same soak under "everysec"
(where a kill -9 of Redis may take writes it had acknowledged, and the follower's position in
Redis goes back with the events it recorded) is a bench command, with its figures in the
README's "Durability" section:

    .venv/bin/python bench/soak.py --messages 1000 --faults redis,maillog --seed 8 \
        --concurrency 6 --accounts 3 --flush-every 10 --appendfsync everysec

The drain may take minutes on a loaded machine: with a load average of 15 on 2 cores the bounce
pipe took 8 to 14 s a returned mail, and with the wait at 240 s and a load of 35, 111 returns
were still in Postfix's queue (none lost) when it ended; so it waits up to 900 s.
"""

from __future__ import annotations

import pytest

from txmail_testing.soak import Fault, run_soak, table

pytestmark = pytest.mark.e2e


def test_soak_with_redis_and_maillog_follower_killed_loses_nothing() -> None:
    report = run_soak(
        messages=1000,
        faults=[Fault("redis"), Fault("maillog")],
        concurrency=6,
        accounts=3,
        seed=8,
        drain_timeout=900.0,
        flush_every=10.0,
        out=print,
        appendfsync="always",
    )
    print(table(report))  # shown by pytest when the test fails
    assert report.accepted == 1000
    assert [f.name for f in report.faults if "restarted as pid" in f.detail] == ["redis", "maillog"]
    assert report.lost == []
    assert report.unexpected == []
    assert report.wrong == []
    assert report.refused == {} and report.returns_failed == []
    assert sum(report.received.values()) == sum(report.expected.values())
