"""Calendar days roll over at local midnight in the configured timezone."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from spendbrake.windows import day_window


def test_a_day_is_the_local_calendar_date() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    late_utc = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # already 00:30 on the 23rd in Berlin
    window = day_window(late_utc, berlin)
    assert window.day == "2026-11-23"
    assert window.resets_at == datetime(2026, 11, 24, tzinfo=berlin)


def test_reset_is_rounded_up_to_whole_seconds() -> None:
    now = datetime(2026, 11, 22, 23, 59, 59, 500_000, tzinfo=UTC)
    assert day_window(now, ZoneInfo("UTC")).seconds_to_reset(now) == 1


def test_a_daylight_saving_day_ends_at_the_real_local_midnight() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-10-25 has 25 hours in Berlin (clocks go back at 03:00).
    start = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 local on the 25th
    window = day_window(start, berlin)
    assert window.day == "2026-10-25"
    assert window.seconds_to_reset(start) == 25 * 3600
