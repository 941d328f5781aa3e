"""Calendar days roll over at local midnight in the configured timezone."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.windows import current_day_window, day_window, month_resets_at


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


@pytest.mark.parametrize(
    ("moment", "zone", "resets"),
    [
        # 23:30 UTC on New Year's Eve is already January in Berlin: February is next.
        (datetime(2026, 12, 31, 23, 30, tzinfo=UTC), "Europe/Berlin", datetime(2027, 2, 1)),
        # Still March in New York (UTC-4 after the spring change): April 1 local midnight.
        (datetime(2026, 4, 1, 3, 59, tzinfo=UTC), "America/New_York", datetime(2026, 4, 1)),
        (datetime(2026, 10, 31, 23, 0, tzinfo=UTC), "Europe/London", datetime(2026, 11, 1)),
    ],
)
def test_a_month_resets_at_the_local_midnight_that_starts_the_next_one(
    moment: datetime, zone: str, resets: datetime
) -> None:
    tz = ZoneInfo(zone)
    assert month_resets_at(moment, tz) == resets.replace(tzinfo=tz)
    # The ledger's month key is the local day's: the same month the reset ends.
    assert day_window(moment, tz).day[:7] < resets.strftime("%Y-%m")
