"""policyd's server (connections.py) over a real UNIX socket and a real Redis: many requests
per connection, holds given back when the connection moves on, garbage and Redis trouble
handled without a crash."""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from txmail import histograms, logs
from txmail.accounts.records import Accounts
from txmail.config import RedisSettings, Settings
from txmail.policyd import connections, log_buffer, protocol, scripts, server
from txmail.store import Keys
from txmail_testing.harness import RedisServer, free_port

_prefixes = itertools.count()
NOW = 1_795_000_000.0 - 1_795_000_000.0 % 86400 + 36000.0


def block(
    stage: str,
    user: str = "acme",
    queue_id: str = "",
    count: int = 0,
    size: int = 100,
    instance: str = "i1",
    recipient: str = "user@example.net",
) -> bytes:
    return (
        f"request=smtpd_access_policy\nprotocol_state={stage}\nprotocol_name=ESMTP\n"
        f"sasl_username={user}\nqueue_id={queue_id}\nrecipient_count={count}\n"
        f"size={size}\ninstance={instance}\nrecipient={recipient}\n\n"
    ).encode()


class Peer:
    """A Postfix-like client on one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, request: bytes) -> str:
        self.writer.write(request)
        answer = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), 5)
        return answer.decode().removeprefix("action=").strip()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.close()


def run_with_server(
    redis_url: str, test: Callable[..., Awaitable[Any]], account: dict[str, Any] | None = None
) -> Any:
    """Run `test(connect, policy, keys)` against a policy server; create account acme (warm-up
    off, with the given settings) unless account is None."""
    prefix = f"s{next(_prefixes)}:"
    state = Path(tempfile.mkdtemp(prefix="policyd-"))
    settings = Settings(
        state_dir=str(state), redis=RedisSettings(url=redis_url, prefix=prefix, timeout=1.0)
    )

    async def main() -> Any:
        client = scripts.connect(settings)
        keys = Keys(prefix)
        policy = connections.PolicyServer(settings, client, keys, clock=lambda: NOW)
        path = server.socket_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        listener = await asyncio.start_unix_server(
            policy.serve_connection, path=str(path), limit=protocol.MAX_REQUEST
        )

        async def connect() -> Peer:
            return Peer(*await asyncio.open_unix_connection(str(path)))

        try:
            return await test(connect, policy, keys)
        finally:
            listener.close()
            await listener.wait_closed()
            await asyncio.gather(*policy.background)
            policy.scripts.close()
            await client.aclose()

    if account is not None:
        sync = redis.Redis.from_url(redis_url, decode_responses=True)
        Accounts(sync, Keys(prefix)).add(
            "acme", ["acme.example"], "a-good-password", settings={"warmup": False, **account}
        )
        sync.close()
    return asyncio.run(main())


def test_one_connection_serves_many_requests(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        answers = []
        for n in range(3):
            answers.append(await peer.ask(block("RCPT", instance=f"m{n}")))
            answers.append(
                await peer.ask(block("END-OF-MESSAGE", queue_id=f"Q{n}", count=1, instance=f"m{n}"))
            )
        answers.append(await peer.ask(block("RCPT", instance="m3")))
        assert answers[:6] == ["DUNNO"] * 6
        # Q0..Q2 were never counted by a milter, but each next request gave the last one back,
        # so only Q2's hold could still be in flight: the limit of 3 is not yet reached.
        assert answers[6] == "DUNNO"
        assert await peer.ask(block("RCPT", user="")) == "DUNNO"  # no login: port 25 bounce
        assert await peer.ask(block("CONNECT")) == "DUNNO"
        peer.close()

    run_with_server(redis_server.url, test, {"messages_per_minute": 3})


def test_rcpt_counts_recipients_of_the_transaction(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        answers = [
            await peer.ask(block("RCPT", instance="t1", recipient=f"r{n}@x.example"))
            for n in range(4)
        ]
        assert answers[:3] == ["DUNNO"] * 3
        assert answers[3].startswith("450 4.7.1 Rate limit of 3 recipients per minute")
        # A new transaction starts counting again.
        assert await peer.ask(block("RCPT", instance="t2")) == "DUNNO"
        peer.close()

    run_with_server(redis_server.url, test, {"recipients_per_minute": 3})


def test_a_refused_message_gives_its_hold_back_when_the_connection_moves_on(
    redis_server: RedisServer,
) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        first = await connect()
        assert await first.ask(block("END-OF-MESSAGE", queue_id="A", count=1)) == "DUNNO"
        other = await connect()
        refused = await other.ask(block("END-OF-MESSAGE", queue_id="B", count=1))
        assert refused.startswith("450 4.7.1 Rate limit of 1 message per day")
        first.close()  # A's fate is sealed and the milter never counted it: A was refused
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not await policy.client.hget(keys.holds("acme"), "A"):
                break
        assert await other.ask(block("END-OF-MESSAGE", queue_id="B", count=1)) == "DUNNO"
        other.close()

    run_with_server(redis_server.url, test, {"messages_per_day": 1})


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello there\n\n",
        b"protocol_state=RCPT\n\n",
        b"request=smtpd_access_policy\nsender=" + b"x" * 600 + b"\n\n",
        b"request=smtpd_access_policy\n" + b"x=1\n" * 10000,  # never stops sending
        b"\x00\xff\xfe\n\n",
    ],
)
def test_garbage_closes_the_connection_and_the_server_goes_on(
    redis_server: RedisServer, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        peer.writer.write(garbage)
        assert await peer.closed()
        peer.close()
        fresh = await connect()
        assert await fresh.ask(block("RCPT")) == "DUNNO"
        fresh.close()

    with caplog.at_level(logging.WARNING, logger="txmail.policyd"):
        run_with_server(redis_server.url, test, {})
    assert any("disconnecting" in r.getMessage() for r in caplog.records)


def test_redis_down_means_defer(caplog: pytest.LogCaptureFixture) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        assert await peer.ask(block("RCPT")) == protocol_tempfail()
        assert await peer.ask(block("END-OF-MESSAGE", queue_id="A", count=1)) == protocol_tempfail()
        peer.close()

    with caplog.at_level(logging.WARNING, logger="txmail.policyd"):
        run_with_server(f"redis://127.0.0.1:{free_port()}/0", test, account=None)
    assert any("Redis unavailable" in r.getMessage() for r in caplog.records)


def protocol_tempfail() -> str:
    return "451 4.3.0 txmail cannot check the sending limits right now; try again in a few minutes"


def test_account_changes_reach_the_cache(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        assert await peer.ask(block("RCPT")) == "DUNNO"
        sync = redis.Redis(port=redis_server.port, decode_responses=True)
        Accounts(sync, keys).suspend("acme", "unpaid invoice")
        sync.close()
        await policy.accounts.refresh()
        answer = await peer.ask(block("RCPT"))
        assert answer.startswith("554 5.7.1 Account acme is suspended (unpaid invoice)")
        peer.close()

    run_with_server(redis_server.url, test, {})


def test_concurrent_checks_share_a_pipeline_and_each_gets_its_own_answer(
    redis_server: RedisServer,
) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peers = [await connect() for _ in range(8)]
        await policy.client.script_flush()  # a Redis that lost the script: loaded again
        answers = await asyncio.gather(
            *(
                peer.ask(block("END-OF-MESSAGE", queue_id=f"Q{n}", count=1, instance=f"m{n}"))
                for n, peer in enumerate(peers)
            )
        )
        # Five fit in the day's limit of five; which five is up to the race.
        assert answers.count("DUNNO") == 5
        assert all(
            a.startswith("450 4.7.1 Rate limit of 5 messages per day")
            for a in answers
            if a != "DUNNO"
        )
        assert int(await policy.client.hget(keys.holds("acme"), "*m")) == 5
        for peer in peers:
            peer.close()

    run_with_server(redis_server.url, test, {"messages_per_day": 5})


def test_silent_connections_are_closed(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        policy.idle_timeout = 0.2
        closer = asyncio.get_running_loop().create_task(policy.close_idle())
        peer = await connect()
        assert await peer.ask(block("RCPT")) == "DUNNO"
        assert await peer.closed()
        peer.close()
        closer.cancel()

    run_with_server(redis_server.url, test, {})


def test_rcpt_is_answered_from_the_room_without_redis(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        assert await peer.ask(block("END-OF-MESSAGE", queue_id="A", count=1)) == "DUNNO"
        calls = (await policy.client.info("commandstats")).get("cmdstat_evalsha", {})
        assert await peer.ask(block("RCPT", instance="i2")) == "DUNNO"
        after = (await policy.client.info("commandstats")).get("cmdstat_evalsha", {})
        assert after.get("calls") == calls.get("calls")  # no check script ran
        # The next END-OF-MESSAGE asks Redis, and gives A's hold back on the way.
        assert (
            await peer.ask(block("END-OF-MESSAGE", queue_id="B", count=1, instance="i2")) == "DUNNO"
        )
        assert await policy.client.hget(keys.holds("acme"), "A") is None
        peer.close()

    run_with_server(redis_server.url, test, {"messages_per_minute": 100})


def test_decisions_are_counted_by_outcome_for_metrics(redis_server: RedisServer) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peers = [await connect() for _ in range(3)]  # each holds its message's share
        for n, peer in enumerate(peers):
            await peer.ask(block("END-OF-MESSAGE", queue_id=f"Q{n}", count=1, instance=f"m{n}"))
        await policy.flush_decisions()
        assert await policy.client.hgetall(keys.policy_stats) == {"dunno": "2", "rate-limit": "1"}
        await policy.flush_decisions()  # nothing new: nothing added
        assert await policy.client.hget(keys.policy_stats, "dunno") == "2"
        for peer in peers:
            peer.close()

    run_with_server(redis_server.url, test, {"messages_per_minute": 2})


def test_counts_and_histograms_that_could_not_be_written_go_with_the_next_flush(
    redis_server: RedisServer,
) -> None:
    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        await peer.ask(block("END-OF-MESSAGE", queue_id="Q1", count=1))
        live = policy.client
        policy.client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        await policy.flush_decisions()  # Redis away: everything kept
        await policy.client.aclose()
        policy.client = live
        await policy.flush_decisions()
        assert await live.hgetall(keys.policy_stats) == {"dunno": "1"}
        stored = await live.hgetall(policy.histogram_key)
        assert stored[f"{histograms.POLICY_DECISION.name}||sum"]
        assert "seen|policyd" in stored  # the heartbeat that failed is written now
        peer.close()

    run_with_server(redis_server.url, test, {})


def test_log_lines_of_one_loop_turn_go_out_in_one_write() -> None:
    class Stream:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, text: str) -> None:
            self.writes.append(text)

        def flush(self) -> None:
            pass

    stream = Stream()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("txmail.test-turns")
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger().addHandler(handler)  # turn_buffered_logs wraps the root's handlers

    async def scenario() -> list[list[str]]:
        seen = []
        with log_buffer.turn_buffered_logs(asyncio.get_running_loop()):
            logger.warning("one")
            logger.warning("two")
            seen.append(list(stream.writes))  # nothing written inside the turn
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            seen.append(list(stream.writes))
            logger.warning("last")  # written out when the loop stops serving
        seen.append(list(stream.writes))
        return seen

    try:
        inside, after_turn, at_exit = asyncio.run(scenario())
    finally:
        logging.getLogger().removeHandler(handler)
        logger.removeHandler(handler)
    assert inside == []
    assert after_turn == ["one\ntwo\n"]
    assert at_exit == ["one\ntwo\n", "last\n"]
    assert handler.stream is stream


def test_permits_are_logged_only_when_asked(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="txmail.policyd")

    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        assert not policy.log_permits  # the default (policyd.log_permits)
        assert await peer.ask(block("RCPT", instance="m0")) == "DUNNO"
        refused = await peer.ask(block("RCPT", instance="m0", recipient="b@example.net"))
        assert refused != "DUNNO"  # one recipient per minute
        policy.log_permits = True
        assert await peer.ask(block("RCPT", instance="m1", user="other")) != ""
        peer.close()

    run_with_server(redis_server.url, test, {"recipients_per_minute": 1})
    decisions = [
        (r.levelname, r.getMessage().split(": ")[2].split()[0])
        for r in caplog.records
        if r.getMessage().startswith("NOQUEUE: rcpt: ")
    ]
    assert [level for level, _ in decisions] == ["DEBUG", "INFO", "INFO"]
    assert decisions[0][1] == "dunno" and decisions[1][1] != "dunno"


def test_a_decision_line_names_queue_id_and_account_as_fields(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The fields of txmail/logs.py: both formats show them (`queue_id=... account=...`)."""
    caplog.set_level(logging.DEBUG, logger="txmail.policyd")

    async def test(connect: Any, policy: connections.PolicyServer, keys: Keys) -> None:
        peer = await connect()
        assert await peer.ask(block("END-OF-MESSAGE", queue_id="4jLOGFIELDSzJ01", count=1)) == (
            "DUNNO"
        )
        await peer.ask(block("RCPT", user="not an account!"))
        peer.close()

    run_with_server(redis_server.url, test, {})
    about = [r for r in caplog.records if r.getMessage().startswith("4jLOGFIELDSzJ01: ")]
    # the decision, and the hold given back when the session moved on
    assert [r.getMessage().split(": ")[1] for r in about] == ["end-of-message", "released"]
    for record in about:
        assert logs.message_fields(record) == {"queue_id": "4jLOGFIELDSzJ01", "account": "acme"}
    (stranger,) = [r for r in caplog.records if "account=not an account!" in r.getMessage()]
    assert logs.message_fields(stranger) == {}
