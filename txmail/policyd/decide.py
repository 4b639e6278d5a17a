"""policyd decisions: from a policy request, the account and the clock to Postfix's action.

Pure: no Redis, no sockets, no clock of its own. `plan()` turns a request, what policyd knows of
the account and the time into a Check: the limits that apply with their values, the warm-up
quotas, the request's share (messages, recipients, bytes) and whether to hold it. The server
hands the Check to one atomic Lua script (store/scripts/policy_check.lua) and `verdict()` turns
the script's answer into the action line Postfix gets, with a sentence that names the limit, its
value and when it resets.

Stages: at RCPT the check is advisory and read-only (it refuses a recipient early, before the
client sends the body, and lets recipients through one by one up to a recipient quota); at
END-OF-MESSAGE it is decisive and holds the message's share, which the milter turns into counted
usage at end of message once every rule has passed (store/scripts/_commit.lua, which
message_accept.lua includes), so only accepted mail counts and parallel clients cannot overrun
a limit.

Windows are clock-aligned: a minute limit resets at the next full minute, an hour limit at the
next full hour, a day limit and the warm-up quota at 00:00 UTC.

Room: each check that passes also says how much the account's tightest limits leave free. For
up to ROOM_SECONDS within the same windows, an RCPT request that asks for at most half of that
room is let through without asking Redis (`Room.fits`). This is safe because the RCPT check is
advisory: END-OF-MESSAGE always asks Redis and holds the share atomically, so the worst a stale
room can do is move a refusal from RCPT to end of data. Near a limit the room is small and
every RCPT asks again.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from txmail.accounts.limits import Limit, Windows, clock_time, limits_for, warmup_quotas
from txmail.accounts.settings import AccountSettings, from_fields

RCPT = "RCPT"
END_OF_MESSAGE = "END-OF-MESSAGE"

MAX_HOLDS = 10_000  # messages of one account in flight between end of data and the count
ROOM_SECONDS = 1.0  # how long the room a check reported may answer RCPT requests

TEMPFAIL_TEXT = (
    "451 4.3.0 txmail cannot check the sending limits right now; try again in a few minutes"
)


@dataclass(frozen=True)
class Request:
    """The attributes of one policy request that policyd decides on."""

    protocol_state: str
    sasl_username: str = ""
    queue_id: str = ""
    instance: str = ""
    recipient: str = ""
    recipient_count: int = 0
    size: int = 0
    server_port: int = 0

    def sent_as(self, trusted_port: int, trusted_account: str) -> Request:
        """The request as the account it is sent as: its login, or the trusted listener's
        account for mail on that listener (the milter does the same at MAIL FROM)."""
        if self.sasl_username or not trusted_port or self.server_port != trusted_port:
            return self
        return dataclasses.replace(self, sasl_username=trusted_account)


@dataclass(frozen=True)
class AccountState:
    """What policyd knows of an account: its status and settings (accounts.settings)."""

    name: str
    status: str
    suspended_reason: str
    created_at: str  # as stored; identifies the account for its warm-up state
    settings: AccountSettings

    @classmethod
    def from_hash(cls, name: str, raw: dict[str, str]) -> AccountState:
        """From the account's hash (PREFIX {ACCOUNT}:account)."""
        return cls(
            name=name,
            status=raw.get("status", "active"),
            suspended_reason=raw.get("suspended_reason", ""),
            created_at=raw.get("created_at", ""),
            settings=from_fields(raw),
        )

    # Worked out once per account (policyd caches the state), not once per request.
    @functools.cached_property
    def limits(self) -> tuple[Limit, ...]:
        return tuple(limits_for(self.settings))

    @functools.cached_property
    def warmup_quotas(self) -> tuple[int, ...]:
        return tuple(warmup_quotas(self.settings))

    @functools.cached_property
    def packed_limits(self) -> str:
        """The limits as policy_check.lua reads them: BUCKET FIELD VALUE, space-separated."""
        return " ".join(f"{limit.bucket}{limit.field}{limit.value}" for limit in self.limits)

    @functools.cached_property
    def packed_quotas(self) -> str:
        return " ".join(str(quota) for quota in self.warmup_quotas)


@dataclass(frozen=True)
class Action:
    """The answer to one request: `text` goes after `action=`; `verb` is for the log."""

    text: str
    verb: str

    @property
    def permits(self) -> bool:
        return self.text == "DUNNO"


DUNNO = Action("DUNNO", "dunno")
TEMPFAIL = Action(TEMPFAIL_TEXT, "tempfail")


@dataclass(frozen=True)
class Check:
    """What the check script is asked for one request."""

    account: AccountState
    windows: Windows
    messages: int
    recipients: int
    size: int
    hold: str  # queue id to hold the share under, "" to check only

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.account.limits

    def script_args(self, hold_until: float, release: str) -> list[str]:
        """ARGV of policy_check.lua (its header documents them)."""
        request = (
            f"{self.windows.now!r} {self.windows.day} {self.messages} {self.recipients} "
            f"{self.size} {hold_until!r} {MAX_HOLDS} {self.hold or '-'} {release or '-'} "
            f"{self.account.created_at or '-'}"
        )
        return [request, self.account.packed_limits, self.account.packed_quotas]


@dataclass(frozen=True)
class Room:
    """What a passing check left free for its account: messages, recipients and bytes under
    the tightest limit of each (-1: unlimited), as of the check's windows (and time)."""

    windows: Windows
    messages: int
    recipients: int
    size: int

    def fits(self, check: Check) -> bool:
        """May this RCPT check be answered from the room, without Redis? (See the module
        docstring: only while fresh, in the same windows, and for at most half the room.)"""
        now, then = check.windows, self.windows
        if (
            not 0 <= now.now - then.now <= ROOM_SECONDS
            or now.minute != then.minute
            or now.hour != then.hour
            or now.day != then.day
        ):
            return False
        return all(
            room < 0 or 2 * want <= room
            for want, room in (
                (check.messages, self.messages),
                (check.recipients, self.recipients),
                (check.size, self.size),
            )
        )


def room_left(check: Check, result: list[Any]) -> Room | None:
    """The Room a passing check script answer reports (policy_check.lua), else None."""
    if int(result[0]) != 0 or len(result) < 4:
        return None
    return Room(check.windows, int(result[1]), int(result[2]), int(result[3]))


def plan(
    request: Request, account: AccountState | None, now: float, transaction_recipients: int = 0
) -> Check | Action:
    """The Check for a request, or the action itself when no counting is needed.

    `transaction_recipients` is how many recipients of the same transaction policyd has
    already let through at RCPT; the RCPT check asks room for one more.
    """
    if not request.sasl_username or request.protocol_state not in (RCPT, END_OF_MESSAGE):
        return DUNNO  # not a login's submission (bounces to port 25), or a stage we ignore
    if account is None:
        return DUNNO  # the milter refuses unknown accounts at MAIL FROM, with its own sentence
    if account.status == "suspended":
        return Action(
            f"554 5.7.1 Account {account.name} is suspended "
            f"({account.suspended_reason}); sending is refused until the operator "
            "resumes it",
            "suspended",
        )
    windows, size = Windows.at(now), max(request.size, 0)
    if request.protocol_state == RCPT:
        return Check(account, windows, 1, transaction_recipients + 1, size, "")
    return Check(
        account,
        windows,
        1,
        max(request.recipient_count, 1),
        size,
        request.queue_id or f"instance:{request.instance}",
    )


def verdict(check: Check, result: list[Any]) -> Action:
    """The action for the check script's answer (policy_check.lua documents its shape)."""
    outcome = int(result[0])
    if outcome == 0:
        return DUNNO
    if outcome == 1:
        limit = check.limits[int(result[1]) - 1]
        unit = limit.unit[:-1] if limit.value == 1 else limit.unit  # "1 message", "2 messages"
        return Action(
            f"450 4.7.1 Rate limit of {limit.value} {unit} per {limit.window} "
            f"for account {check.account.name} reached; retry after "
            f"{clock_time(check.windows.reset(limit.window))}",
            "rate-limit",
        )
    if outcome == 2:
        day, quota = int(result[1]), int(result[2])
        return Action(
            f"450 4.7.1 Daily warm-up quota of {quota} recipients reached (day {day} "
            "of warm-up); resets at 00:00Z",
            "warm-up",
        )
    if outcome == 3:
        return Action(
            f"450 4.7.1 Account {check.account.name} has {int(result[1])} messages in "
            "flight, the most txmail takes at once; retry in a minute",
            "in-flight",
        )
    raise ValueError(f"policy_check.lua answered {result!r}")
