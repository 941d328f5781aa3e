"""Calendar windows in the configured timezone: which day a call belongs to, and when it resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# Every UTC offset in use is a whole number of quarter hours (Nepal +5:45, Chatham +12:45):
# a local midnight never falls inside a quarter hour of UTC.
_QUARTER_HOUR_S = 900


@dataclass(frozen=True)
class DayWindow:
    day: str  # local calendar date, ISO "YYYY-MM-DD": the ledger's key for daily totals
    resets_at: datetime  # the next local midnight, timezone-aware

    def seconds_to_reset(self, now: datetime) -> int:
        """Whole seconds until the reset, rounded up so a client never retries too early."""
        delta = (self.resets_at - now).total_seconds()
        return max(1, int(-(-delta // 1)))


def day_window(now: datetime, tz: ZoneInfo) -> DayWindow:
    """The local day containing ``now`` (an aware datetime) and its end.

    The end is computed on the wall clock and then localised, so days of 23 or 25 hours at
    daylight-saving changes end at the real local midnight.
    """
    local = now.astimezone(tz)
    next_date = local.date() + timedelta(days=1)
    resets_at = datetime(next_date.year, next_date.month, next_date.day, tzinfo=tz)
    return DayWindow(day=local.date().isoformat(), resets_at=resets_at)


def month_resets_at(now: datetime, tz: ZoneInfo) -> datetime:
    """The local midnight that starts the next calendar month."""
    local = now.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=tz)


def current_day_window(now: datetime, tz: ZoneInfo) -> DayWindow:
    """``day_window``, worked out once per quarter hour instead of on every call."""
    return _day_window_of_quarter(int(now.timestamp()) // _QUARTER_HOUR_S, tz)


@lru_cache(maxsize=16)
def _day_window_of_quarter(quarter: int, tz: ZoneInfo) -> DayWindow:
    return day_window(datetime.fromtimestamp(quarter * _QUARTER_HOUR_S, UTC), tz)


def utc_now() -> datetime:
    return datetime.now(UTC)
