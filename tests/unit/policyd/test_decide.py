"""decide.py (plans, verdicts) and accounts.reputation (judgements) with a fake clock; no Redis."""

from __future__ import annotations

import calendar
import dataclasses
import time
from typing import Any

import pytest

from txmail.accounts import reputation
from txmail.accounts import settings as account_settings
from txmail.accounts.limits import Windows, clock_time, limits_for, warmup_day, warmup_quotas
from txmail.accounts.settings import AccountSettings
from txmail.policyd import decide


def at(text: str) -> float:
    """A fake clock reading: seconds since 1970 for an ISO time in UTC."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


def settings(**overrides: Any) -> AccountSettings:
    return dataclasses.replace(account_settings.from_fields({}), **overrides)


def account(status: str = "active", reason: str = "", **overrides: Any) -> decide.AccountState:
    return decide.AccountState("acme", status, reason, "1700000000.5", settings(**overrides))


def rcpt(**kw: Any) -> decide.Request:
    return decide.Request(decide.RCPT, sasl_username="acme", instance="i1", **kw)


def eom(**kw: Any) -> decide.Request:
    return decide.Request(
        decide.END_OF_MESSAGE, sasl_username="acme", queue_id="4jXQ1", instance="i1", **kw
    )


NOON = at("2026-11-22T10:30:59")


def test_windows_are_clock_aligned() -> None:
    windows = Windows.at(NOON)
    assert clock_time(windows.reset("minute")) == "10:31:00Z"
    assert clock_time(windows.reset("hour")) == "11:00:00Z"
    assert windows.reset("day") == at("2026-11-23T00:00:00")
    assert windows.day == int(NOON // 86400)


@pytest.mark.parametrize(
    "request_, expected",
    [
        (decide.Request(decide.RCPT), decide.DUNNO),  # port 25 bounce: no login
        (decide.Request("DATA", sasl_username="acme"), decide.DUNNO),
        (decide.Request("CONNECT", sasl_username="acme"), decide.DUNNO),
    ],
)
def test_requests_that_need_no_count(request_: decide.Request, expected: decide.Action) -> None:
    assert decide.plan(request_, account(), NOON) == expected


def test_unknown_account_is_left_to_the_milter() -> None:
    assert decide.plan(rcpt(), None, NOON) == decide.DUNNO


def test_suspended_account_gets_a_permanent_refusal_with_its_reason() -> None:
    reason = (
        "Sending suspended: hard bounce rate 3.4% (34 of 1000) over the last 7 days "
        "exceeds 2%; contact the operator"
    )
    action = decide.plan(rcpt(), account("suspended", reason), NOON)
    assert isinstance(action, decide.Action)
    assert action.text.startswith("554 5.7.1 Account acme is suspended (Sending suspended: hard")
    assert not action.permits


def test_rcpt_asks_room_for_one_more_recipient_and_holds_nothing() -> None:
    check = decide.plan(rcpt(size=2000), account(), NOON, transaction_recipients=4)
    assert isinstance(check, decide.Check)
    assert (check.messages, check.recipients, check.size, check.hold) == (1, 5, 2000, "")


def test_end_of_message_holds_the_whole_message_under_its_queue_id() -> None:
    check = decide.plan(eom(recipient_count=3, size=5120), account(), NOON)
    assert isinstance(check, decide.Check)
    assert (check.messages, check.recipients, check.size, check.hold) == (1, 3, 5120, "4jXQ1")


def test_limits_in_checking_order_without_the_ones_set_to_zero() -> None:
    limits = limits_for(settings(messages_per_hour=0, bytes_per_day=1000))
    assert [(limit.unit, limit.window) for limit in limits] == [
        ("bytes", "day"),
        ("messages", "day"),
        ("recipients", "day"),
        ("recipients", "hour"),
        ("messages", "minute"),
        ("recipients", "minute"),
    ]
    assert limits[0].value == 1000 and limits[0].bucket == 3 and limits[0].field == "b"


def test_script_arguments_follow_the_scripts_header() -> None:
    state = account(
        warmup_schedule=["50"], recipients_per_day=400, bytes_per_day=1000, messages_per_hour=0
    )
    check = decide.plan(eom(recipient_count=2, size=10), state, NOON)
    assert isinstance(check, decide.Check)
    assert check.script_args(NOON + 120, "4jXQ0") == [
        f"{NOON!r} {int(NOON // 86400)} 1 2 10 {NOON + 120!r} {decide.MAX_HOLDS} 4jXQ1 4jXQ0 "
        "1700000000.5",
        "3b1000 3m50000 3r400 2r10000 1m100 1r500",
        "50 100 200",
    ]
    rcpt_check = decide.plan(rcpt(), account(warmup=False), NOON)
    assert isinstance(rcpt_check, decide.Check)
    request, _, quotas = rcpt_check.script_args(NOON, "")
    assert request.split()[7:9] == ["-", "-"] and quotas == ""


@pytest.mark.parametrize(
    "schedule, cap, expected",
    [
        (["50"], 400, [50, 100, 200]),  # the default: doubling until the daily cap
        (["50"], 100_000, [50 * 2**n for n in range(11)]),
        (["100", "150", "1000"], 1500, [100, 150, 1000]),  # 2000 would pass the cap
        (["10", "20"], 0, [10, 20]),  # no daily cap: the warm-up ends after the list
        (["500"], 300, []),  # the cap is below the first quota: the cap alone applies
    ],
)
def test_warmup_quotas(schedule: list[str], cap: int, expected: list[int]) -> None:
    assert warmup_quotas(settings(warmup_schedule=schedule, recipients_per_day=cap)) == expected


def test_no_warmup_no_quotas() -> None:
    assert warmup_quotas(settings(warmup=False)) == []


@pytest.mark.parametrize(
    "days_sent, last, expected",
    [
        (0, None, 1),  # never sent: day 1
        (1, 100, 1),  # sent today only: still day 1
        (1, 99, 2),  # sent yesterday: day 2 today
        (2, 90, 3),  # days without sending do not count
        (3, 100, 3),
    ],
)
def test_warmup_day_counts_only_sending_days(
    days_sent: int, last: int | None, expected: int
) -> None:
    assert warmup_day(days_sent, last, 100) == expected


def test_verdict_names_the_limit_its_value_and_when_it_resets() -> None:
    check = decide.plan(rcpt(), account(messages_per_minute=100), NOON)
    assert isinstance(check, decide.Check)
    index = [(lim.unit, lim.window) for lim in check.limits].index(("messages", "minute")) + 1
    action = decide.verdict(check, [1, index, 100])
    assert action.text == (
        "450 4.7.1 Rate limit of 100 messages per minute for account acme "
        "reached; retry after 10:31:00Z"
    )
    hour = decide.verdict(check, [1, 4, 3000])
    assert hour.text.endswith(
        "3000 messages per hour for account acme reached; retry after 11:00:00Z"
    )


def test_verdict_for_the_warmup_quota() -> None:
    check = decide.plan(rcpt(), account(), NOON)
    assert isinstance(check, decide.Check)
    assert decide.verdict(check, [2, 3, 200, 200]).text == (
        "450 4.7.1 Daily warm-up quota of 200 recipients reached (day 3 of warm-up); resets "
        "at 00:00Z"
    )


def test_verdict_permits_and_refuses_unknown_answers() -> None:
    check = decide.plan(rcpt(), account(), NOON)
    assert isinstance(check, decide.Check)
    assert decide.verdict(check, [0]).permits
    assert decide.verdict(check, [3, 10000]).text.startswith("450 4.7.1 Account acme has 10000")
    with pytest.raises(ValueError):
        decide.verdict(check, [9])


# -- reputation ---------------------------------------------------------------------------


def levels(delivered: int, bounced: int, complained: int, **overrides: Any) -> list[str]:
    judged = reputation.judge(
        reputation.Outcomes(delivered, bounced, complained), settings(**overrides)
    )
    return [j.level for j in judged]


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        ((966, 34, 0), ["suspend", "ok"]),  # 3.4% > 2%
        ((980, 20, 0), ["warning", "ok"]),  # exactly 2%: not above, but past 80% of it
        ((985, 15, 0), ["ok", "ok"]),  # 1.5% < 1.6%
        ((984, 16, 0), ["warning", "ok"]),  # 1.6% = 80% of 2%
        ((100, 50, 0), ["ok", "ok"]),  # 150 outcomes: too few to judge
        ((0, 200, 0), ["suspend", "ok"]),  # all bounced: judged all the same
        ((1000, 0, 2), ["ok", "suspend"]),  # 0.2% complaints > 0.1%
        ((1250, 0, 1), ["ok", "warning"]),  # 0.08% = 80% of 0.1%
        ((1000, 0, 0), ["ok", "ok"]),
    ],
)
def test_judge(outcomes: tuple[int, int, int], expected: list[str]) -> None:
    assert levels(*outcomes) == expected


def test_thresholds_are_per_account() -> None:
    assert levels(966, 34, 0, max_bounce_rate=5.0) == ["ok", "ok"]
    assert levels(99, 1, 0, reputation_min_recipients=100, max_bounce_rate=0.5) == ["suspend", "ok"]


def test_suspension_reason_is_the_issue_sentence() -> None:
    [bounce, _] = reputation.judge(reputation.Outcomes(966, 34, 0), settings())
    assert bounce.suspension_reason() == (
        "Sending suspended: hard bounce rate 3.4% (34 of 1000) over the last 7 days exceeds "
        "2%; contact the operator"
    )
    [_, complaint] = reputation.judge(
        reputation.Outcomes(400, 0, 1), settings(reputation_window_days=1)
    )
    assert complaint.suspension_reason() == (
        "Sending suspended: complaint rate 0.25% (1 of 400) over the last day exceeds 0.1%; "
        "contact the operator"
    )
    [warning, _] = reputation.judge(reputation.Outcomes(983, 17, 0), settings())
    assert warning.warning() == (
        "hard bounce rate 1.7% (17 of 1000) over the last 7 days has "
        "reached 85% of the 2% at which sending is suspended"
    )


def test_a_rate_just_above_the_threshold_never_reads_as_equal_to_it() -> None:
    [_, complaint] = reputation.judge(reputation.Outcomes(999, 0, 1), settings())
    assert complaint.level == "suspend"
    assert (
        "complaint rate 0.1001% (1 of 999) over the last 7 days exceeds 0.1%"
        in complaint.suspension_reason()
    )


def test_mail_on_the_trusted_listener_is_sent_as_its_account() -> None:
    anonymous = decide.Request(decide.RCPT, server_port=2600)
    assert anonymous.sent_as(2600, "bench").sasl_username == "bench"
    assert anonymous.sent_as(0, "bench").sasl_username == ""  # no trusted listener
    assert anonymous.sent_as(2700, "bench").sasl_username == ""  # another listener
    logged_in = decide.Request(decide.RCPT, sasl_username="acme", server_port=2600)
    assert logged_in.sent_as(2600, "bench").sasl_username == "acme"


@pytest.mark.parametrize(
    "later, recipients_so_far, room, fits",
    [
        (0.5, 0, (10, 10, -1), True),  # fresh, asks for 1 of 10
        (0.5, 4, (10, 10, -1), True),  # the transaction's 5th recipient: half the room
        (0.5, 5, (10, 10, -1), False),  # the 6th: more than half, so Redis is asked
        (0.5, 0, (1, 10, -1), False),  # one message left: near the limit, ask
        (0.5, 0, (-1, -1, -1), True),  # nothing limits the account
        (1.5, 0, (10, 10, -1), False),  # stale
        (-0.5, 0, (10, 10, -1), False),  # from the future (the clock went back): ask
        (0.9, 0, (10, 10, 100), False),  # a 1 KB message against 100 bytes of room
    ],
)
def test_room_answers_rcpt_only_while_fresh_and_far_from_a_limit(
    later: float, recipients_so_far: int, room: tuple[int, int, int], fits: bool
) -> None:
    left = decide.Room(Windows.at(NOON - 0.5), *room)  # NOON is 10:30:59
    check = decide.plan(rcpt(size=1000), account(), NOON - 0.5 + later, recipients_so_far)
    assert isinstance(check, decide.Check)
    assert left.fits(check) is fits


def test_room_never_crosses_into_the_next_window() -> None:
    left = decide.Room(Windows.at(NOON + 0.5), 100, 100, -1)  # 10:30:59.5
    check = decide.plan(rcpt(), account(), NOON + 1.2)  # 10:31:00.2
    assert isinstance(check, decide.Check)
    assert not left.fits(check)


def test_only_a_passing_answer_reports_room() -> None:
    check = decide.plan(rcpt(), account(), NOON)
    assert isinstance(check, decide.Check)
    assert decide.room_left(check, [0, 5, 6, -1]) == decide.Room(check.windows, 5, 6, -1)
    assert decide.room_left(check, [1, 2, 100]) is None
