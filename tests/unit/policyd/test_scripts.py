"""The policyd Lua scripts against a real redis-server, driven by a fake clock.

Each test works under its own key prefix on the session's private Redis (conftest.redis_server).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import key_slot

from txmail.accounts import reputation
from txmail.accounts.limits import Windows
from txmail.accounts.records import Accounts
from txmail.accounts.usage import Usage, check_keys, count_accepted, read_usage, release
from txmail.config import Settings
from txmail.policyd import decide
from txmail.store import Keys, scripts
from txmail_testing.harness import RedisServer

DAY = 86400.0
START = 1_795_000_000.0 - 1_795_000_000.0 % DAY + 10 * 3600  # 10:00:00Z on some day
_prefixes = itertools.count()


class Relay:
    """One account's view of policyd's scripts at a time the test sets."""

    def __init__(self, client: redis.Redis, prefix: str, **settings: Any) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.accounts = Accounts(client, self.keys)
        self.accounts.add("acme", ["acme.example"], "a-good-password", settings=settings)
        self.now = START
        self.queue_ids = (f"Q{n}" for n in itertools.count())

    @property
    def state(self) -> decide.AccountState:
        raw = self.client.hgetall(self.keys.account("acme"))
        account = self.accounts.get("acme")
        return decide.AccountState(
            "acme", account.status, account.suspended_reason, raw["created_at"], account.settings
        )

    def ask(
        self,
        stage: str,
        recipients: int = 1,
        size: int = 100,
        queue_id: str = "",
        release: str = "",
        transaction: int = 0,
    ) -> decide.Action:
        request = decide.Request(stage, "acme", queue_id, "i", "", recipients, size)
        check = decide.plan(request, self.state, self.now, transaction)
        assert isinstance(check, decide.Check)
        result = scripts.get(self.client, "policy_check")(
            keys=check_keys(self.keys, "acme", check.windows),
            args=check.script_args(self.now + 120, release),
        )
        return decide.verdict(check, result)

    def send(self, recipients: int = 1, size: int = 100) -> decide.Action:
        """RCPT checks, the end-of-data check and, if it passes, the milter's count."""
        for n in range(recipients):
            action = self.ask(decide.RCPT, transaction=n)
            if not action.permits:
                return action
        queue_id = next(self.queue_ids)
        action = self.ask(decide.END_OF_MESSAGE, recipients, size, queue_id)
        if action.permits:
            self.count(queue_id, recipients, size)
        return action

    def count(self, queue_id: str, recipients: int = 1, size: int = 100) -> list[int]:
        settings = Settings()
        offset = self.now - time.time()
        settings = dataclasses.replace(
            settings, policyd=dataclasses.replace(settings.policyd, clock_offset=offset)
        )
        return count_accepted(settings, self.client, self.keys, "acme", queue_id, recipients, size)

    def usage(self) -> Usage:
        state = self.state
        return read_usage(
            self.client, self.keys, "acme", state.settings, state.created_at, self.now
        )

    def used(self, window: str, unit: str) -> int:
        return next(
            r["used"] for r in self.usage().limits if (r["window"], r["unit"]) == (window, unit)
        )


@pytest.fixture
def make(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()

    def build(**settings: Any) -> Relay:
        return Relay(client, f"t{next(_prefixes)}:", **settings)

    yield build
    client.close()


def test_a_limit_holds_and_names_itself(make: Any) -> None:
    relay = make(warmup=False, messages_per_minute=3)
    assert [relay.send().permits for _ in range(3)] == [True, True, True]
    refused = relay.send()
    assert refused.text == (
        "450 4.7.1 Rate limit of 3 messages per minute for account acme "
        "reached; retry after 10:01:00Z"
    )
    assert relay.used("minute", "messages") == 3
    relay.now += 60  # the next clock minute
    assert relay.send().permits


def test_recipients_and_bytes_limits(make: Any) -> None:
    relay = make(warmup=False, recipients_per_hour=6, bytes_per_day=1000)
    assert relay.send(recipients=4).permits
    refused = relay.send(recipients=3)  # the 7th recipient is refused at its RCPT
    assert "Rate limit of 6 recipients per hour" in refused.text
    assert relay.used("hour", "recipients") == 4
    assert relay.send(recipients=1, size=800).permits
    assert "Rate limit of 1000 bytes per day" in relay.send(size=200).text


def test_a_held_message_counts_against_the_limit_until_released(make: Any) -> None:
    relay = make(warmup=False, messages_per_day=2)
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="A").permits
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="B").permits
    assert not relay.ask(decide.END_OF_MESSAGE, queue_id="C").permits  # A and B in flight
    assert relay.usage().in_flight == {"messages": 2, "recipients": 2, "bytes": 200}
    assert release(relay.client, relay.keys, "acme", "A")  # A was refused after all
    assert not release(relay.client, relay.keys, "acme", "A")
    # ... and the release can ride along with the next check of the same account.
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="C", release="B").permits
    assert relay.usage().in_flight["messages"] == 1
    assert relay.used("day", "messages") == 0  # nothing counted: nothing was accepted


def test_holds_lapse(make: Any) -> None:
    relay = make(warmup=False, messages_per_day=1)
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="A").permits
    assert not relay.ask(decide.END_OF_MESSAGE, queue_id="B").permits
    relay.now += 121  # the hold was taken for 120 s
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="B").permits


def test_count_turns_the_hold_into_usage(make: Any) -> None:
    relay = make(warmup=False)
    assert relay.ask(decide.END_OF_MESSAGE, recipients=3, size=5000, queue_id="A").permits
    # The milter's own figures differ (it removed a suppressed recipient): the hold wins.
    assert relay.count("A", recipients=2, size=4990) == [1, 3, 5000, 1]
    assert relay.usage().in_flight == {"messages": 0, "recipients": 0, "bytes": 0}
    assert relay.used("day", "recipients") == 3
    # Without a hold (it lapsed) the milter's figures count.
    assert relay.count("B", recipients=2, size=10) == [1, 2, 10, 0]
    assert relay.used("minute", "messages") == 2 and relay.used("day", "bytes") == 5010


def test_rcpt_checks_are_read_only(make: Any) -> None:
    relay = make(warmup=False, messages_per_minute=1)
    for _ in range(5):
        assert relay.ask(decide.RCPT).permits
    assert relay.usage().in_flight["messages"] == 0 and relay.used("minute", "messages") == 0


def test_warmup_grows_on_sending_days_only(make: Any) -> None:
    relay = make(warmup_schedule=["2"], recipients_per_day=10)
    assert relay.send(recipients=2).permits
    refused = relay.send()
    assert refused.text == (
        "450 4.7.1 Daily warm-up quota of 2 recipients reached (day 1 of warm-up); resets at 00:00Z"
    )
    assert relay.usage().warmup == {"day": 1, "quota": 2, "used": 2, "days_in_schedule": 3}
    relay.now += DAY  # day 2: quota 4
    assert relay.send(recipients=4).permits
    assert "(day 2 of warm-up)" in relay.send().text
    relay.now += 3 * DAY  # three days later, without sending in between: day 3, quota 8
    assert relay.usage().warmup == {"day": 3, "quota": 8, "used": 0, "days_in_schedule": 3}
    assert relay.send(recipients=8).permits
    assert "quota of 8 recipients reached (day 3" in relay.send().text
    relay.now += DAY  # day 4: past the schedule (16 > the daily cap), the cap alone applies
    assert relay.usage().warmup is not None and relay.usage().warmup["quota"] is None
    assert relay.send(recipients=10).permits
    assert "Rate limit of 10 recipients per day" in relay.send().text


def test_refused_messages_do_not_advance_the_warmup(make: Any) -> None:
    relay = make(warmup_schedule=["2"])
    assert relay.ask(decide.END_OF_MESSAGE, queue_id="A").permits
    release(relay.client, relay.keys, "acme", "A")  # refused after end of data
    relay.now += DAY
    assert relay.usage().warmup["day"] == 1  # type: ignore[index]


def test_a_recreated_account_warms_up_again(make: Any) -> None:
    relay = make(warmup_schedule=["2"])
    assert relay.send().permits
    relay.now += DAY
    assert relay.send().permits
    assert relay.usage().warmup["day"] == 2  # type: ignore[index]
    relay.accounts.remove("acme")
    relay.accounts.add("acme", ["acme.example"], "a-good-password")
    assert relay.usage().warmup["day"] == 1  # type: ignore[index]


def test_in_flight_cap(make: Any) -> None:
    relay = make(warmup=False)
    check = decide.plan(decide.Request(decide.END_OF_MESSAGE, "acme", "Z"), relay.state, relay.now)
    assert isinstance(check, decide.Check)
    args = check.script_args(relay.now + 120, "")
    words = args[0].split()
    words[6] = "1"  # at most one hold
    script = scripts.get(relay.client, "policy_check")
    keys = check_keys(relay.keys, "acme", check.windows)
    assert script(keys=keys, args=[" ".join(words), *args[1:]])[0] == 0
    words[7] = "Y"
    assert script(keys=keys, args=[" ".join(words), *args[1:]]) == [3, 1]


def test_every_key_of_one_call_is_in_one_cluster_slot() -> None:
    keys = Keys("txmail:")
    windows = Windows.at(START)
    names = [
        *check_keys(keys, "acme", windows),
        keys.account("acme"),
        keys.reputation("acme"),
        keys.outcomes("acme", windows.day),
        keys.reputation_alerts("acme"),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1


# -- reputation ---------------------------------------------------------------------------


def feed(relay: Relay, kind: str, times: int) -> list[reputation.Judgement]:
    judged: list[reputation.Judgement] = []
    for _ in range(times):
        judged = reputation.count_outcome(relay.client, relay.keys, "acme", kind, relay.now)
    return judged


def alerts(relay: Relay) -> list[dict[str, str]]:
    return [fields for _, fields in relay.client.xrange(relay.keys.reputation_alerts("acme"))]


def test_bounces_suspend_the_account(make: Any) -> None:
    relay = make(reputation_min_recipients=1000)  # judged first at the 1000th outcome
    feed(relay, "delivery", 966)
    feed(relay, "soft_bounce", 50)  # soft bounces never count
    judged = feed(relay, "bounce", 34)
    assert [j.level for j in judged] == ["suspend", "ok"]
    account = relay.accounts.get("acme")
    assert account.status == "suspended"
    assert account.suspended_reason == (
        "Sending suspended: hard bounce rate 3.4% (34 of 1000) over the last 7 days exceeds 2%; "
        "contact the operator"
    )
    assert [a["kind"] for a in alerts(relay)] == ["reputation_warning", "reputation_suspended"]
    assert alerts(relay)[1]["text"] == account.suspended_reason
    assert relay.usage().reputation["checks"][0]["level"] == "suspend"
    # The suspended account is refused by policyd too (the milter refuses it at MAIL FROM).
    request = decide.Request(decide.RCPT, "acme")
    action = decide.plan(request, relay.state, relay.now)
    assert isinstance(action, decide.Action) and action.text.startswith("554 5.7.1")


def test_resume_starts_a_fresh_window(make: Any) -> None:
    relay = make()
    feed(relay, "delivery", 190)
    feed(relay, "bounce", 10)
    assert relay.accounts.get("acme").status == "suspended"
    relay.accounts.resume("acme")
    judged = feed(relay, "delivery", 1)
    assert judged[0].total == 1  # the old outcomes are gone
    assert relay.accounts.get("acme").status == "active"
    feed(relay, "delivery", 199)
    assert relay.accounts.get("acme").status == "active"


def test_an_operator_suspension_is_left_alone(make: Any) -> None:
    relay = make()
    relay.accounts.suspend("acme", "unpaid invoice")
    feed(relay, "delivery", 190)
    feed(relay, "bounce", 10)
    assert relay.accounts.get("acme").suspended_reason == "unpaid invoice"
    relay.accounts.resume("acme")
    feed(relay, "delivery", 1)
    assert relay.usage().reputation["delivered"] == 191  # no fresh window: the guard did not act


def test_complaints_warn_then_suspend_within_the_window(make: Any) -> None:
    relay = make(reputation_window_days=2)
    feed(relay, "delivery", 1000)
    relay.now += 2 * DAY  # those deliveries leave the two-day window
    feed(relay, "delivery", 1000)
    judged = feed(relay, "complaint", 1)  # 0.1%: not above it, but past 80% of it
    assert (judged[1].level, judged[1].total, judged[1].count) == ("warning", 1000, 1)
    assert relay.accounts.get("acme").status == "active"
    assert feed(relay, "complaint", 1)[1].level == "suspend"
    assert relay.accounts.get("acme").suspended_reason == (
        "Sending suspended: complaint rate 0.2% (2 of 1000) over the last 2 days exceeds 0.1%; "
        "contact the operator"
    )
    assert [a["kind"] for a in alerts(relay)] == ["reputation_warning", "reputation_suspended"]


def test_warnings_come_once_per_crossing(make: Any) -> None:
    relay = make()
    feed(relay, "delivery", 984)
    feed(relay, "bounce", 16)  # 1.6%: warning
    feed(relay, "bounce", 1)
    assert [a["kind"] for a in alerts(relay)] == ["reputation_warning"]
    feed(relay, "delivery", 500)  # back below 80% of the threshold
    feed(relay, "bounce", 10)  # 27 of 1510 = 1.79%: a new crossing
    assert [a["kind"] for a in alerts(relay)] == ["reputation_warning"] * 2


def test_unknown_kinds_and_accounts_are_ignored(make: Any) -> None:
    relay = make()
    assert reputation.count_outcome(relay.client, relay.keys, "acme", "open", relay.now) == []
    assert reputation.count_outcome(relay.client, relay.keys, "nobody", "bounce", relay.now) == []


def test_a_passing_check_reports_the_room_its_tightest_limits_leave(make: Any) -> None:
    relay = make(warmup=False, messages_per_minute=10, recipients_per_hour=50, bytes_per_day=0)
    check = decide.plan(
        decide.Request(decide.END_OF_MESSAGE, "acme", "Q1", recipient_count=4, size=100),
        relay.state,
        relay.now,
    )
    assert isinstance(check, decide.Check)
    result = scripts.get(relay.client, "policy_check")(
        keys=check_keys(relay.keys, "acme", check.windows),
        args=check.script_args(relay.now + 120, ""),
    )
    room = decide.room_left(check, result)
    assert room is not None
    # 10 messages a minute less this one; 50 recipients an hour less these 4 (the default
    # per-minute recipient limit is looser); no byte limit.
    assert (room.messages, room.recipients, room.size) == (9, 46, -1)


def test_holds_live_in_memory_and_counts_survive_a_restart() -> None:
    """Holds are not written to the append-only file (no fsync per check): a restarted Redis
    has forgotten the messages in flight but kept what was counted."""
    server = RedisServer().start()
    try:
        client = server.client()
        relay = Relay(client, "aof:", warmup=False, messages_per_day=5)
        for queue_id in ("A", "B", "C"):
            assert relay.ask(decide.END_OF_MESSAGE, queue_id=queue_id).permits
        relay.count("A")
        assert (
            scripts.get(client, "policy_release")(
                keys=[relay.keys.holds("acme"), relay.keys.holds_expiry("acme")], args=["C"]
            )
            == 1
        )
        assert relay.usage().in_flight["messages"] == 1  # B
        client.close()
        server.stop()
        server.start()
        relay.client = relay.accounts.client = client = server.client()
        assert relay.usage().in_flight == {"messages": 0, "recipients": 0, "bytes": 0}
        assert relay.used("day", "messages") == 1
        assert not client.exists(relay.keys.holds("acme"), relay.keys.holds_expiry("acme"))
        client.close()
    finally:
        server.close()
