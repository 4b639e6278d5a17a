"""accounts.limits: an account's sending limits and warm-up quotas, and the windows they count in.

Pure arithmetic over an account's settings and the clock, shared by policyd (which checks the
limits), the milter (which counts accepted mail against them, accounts.usage) and the CLI
(`txmail stats`, `txmail accounts show`). No Redis, no clock of its own.

Windows are clock-aligned: a minute limit resets at the next full minute, an hour limit at the
next full hour, a day limit and the warm-up quota at 00:00 UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings

# The order is the order of the checks: the first limit reached is the one the client is told
# about, so the one that resets last comes first and "retry after" is never too early.
LIMITS: list[tuple[str, str, str]] = [  # (unit, window, setting)
    ("bytes", "day", "bytes_per_day"),
    ("messages", "day", "messages_per_day"),
    ("recipients", "day", "recipients_per_day"),
    ("messages", "hour", "messages_per_hour"),
    ("recipients", "hour", "recipients_per_hour"),
    ("messages", "minute", "messages_per_minute"),
    ("recipients", "minute", "recipients_per_minute"),
]
BUCKET = {"minute": 1, "hour": 2, "day": 3}  # KEYS index of the usage bucket in the script
FIELD = {"messages": "m", "recipients": "r", "bytes": "b"}
SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Limit:
    unit: str  # messages, recipients or bytes
    window: str  # minute, hour or day
    value: int

    @property
    def bucket(self) -> int:
        return BUCKET[self.window]

    @property
    def field(self) -> str:
        return FIELD[self.unit]


@dataclass(frozen=True)
class Windows:
    """The clock-aligned minute, hour and UTC day that `now` falls in (numbered from 1970)."""

    now: float
    minute: int
    hour: int
    day: int

    @classmethod
    def at(cls, now: float) -> Windows:
        return cls(now, int(now // 60), int(now // 3600), int(now // 86400))

    def number(self, window: str) -> int:
        return {"minute": self.minute, "hour": self.hour, "day": self.day}[window]

    def reset(self, window: str) -> float:
        """When the current `window` ends and its limits are free again."""
        return float((self.number(window) + 1) * SECONDS[window])


def limits_for(settings: AccountSettings) -> list[Limit]:
    """The account's limits in checking order; a limit set to 0 does not apply."""
    values = ((unit, window, int(getattr(settings, name))) for unit, window, name in LIMITS)
    return [Limit(unit, window, value) for unit, window, value in values if value > 0]


def warmup_quotas(settings: AccountSettings) -> list[int]:
    """Recipient quotas of warm-up days 1, 2, ... while they stay below the daily cap.

    The schedule's days come first; after the last one the quota doubles on each sending day
    until it reaches recipients_per_day, from where the daily cap alone applies. Without a daily
    cap the warm-up ends after the schedule. An account that does not warm up gets no quotas.
    """
    if not settings.warmup:
        return []
    cap = settings.recipients_per_day
    quotas = [int(q) for q in settings.warmup_schedule]
    if cap:
        while quotas[-1] < cap:
            quotas.append(quotas[-1] * 2)
        quotas = [q for q in quotas if q < cap]
    return quotas


def warmup_day(days_sent: int, last_sent_day: int | None, today: int) -> int:
    """The warm-up day an account is on: one more than the days it has sent on before today."""
    return days_sent if last_sent_day == today else days_sent + 1


def clock_time(moment: float) -> str:
    """`10:31:00Z`: when a window resets, as the refusal and `txmail stats` say it."""
    return time.strftime("%H:%M:%S", time.gmtime(moment)) + "Z"
