"""Calendar windows in the configured timezone: which day a call belongs to, and when it resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


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


def utc_now() -> datetime:
    return datetime.now(UTC)
