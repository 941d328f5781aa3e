"""Calendar days roll over at local midnight in the configured timezone."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.windows import current_day_window, day_window


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


# Odd offsets and odd daylight-saving shifts: +5:45, +12:45/+13:45, a 30-minute shift (Lord Howe),
# -3:30/-2:30, +3:30, and zones whose shifts happen at local midnight (Havana, Santiago).
ZONES = [
    "UTC",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Tehran",
    "America/Havana",
    "America/Santiago",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
]


@given(
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(ZONES),
)
def test_the_cached_window_is_the_window_of_that_moment(moment: datetime, zone: str) -> None:
    assert current_day_window(moment, ZoneInfo(zone)) == day_window(moment, ZoneInfo(zone))


@pytest.mark.parametrize("zone", ZONES)
def test_the_cached_window_is_right_on_both_sides_of_every_local_midnight(zone: str) -> None:
    tz = ZoneInfo(zone)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(800):  # two years and more of local midnights, daylight-saving days included
        midnight = day_window(moment, tz).resets_at
        for instant in (midnight - timedelta(microseconds=1), midnight):
            assert current_day_window(instant, tz) == day_window(instant, tz)
        moment = midnight.astimezone(UTC)
