"""Burn rates and projections, computed from a known series of (time, nanos) points."""

from datetime import UTC, datetime, timedelta

import pytest

from spendbrake.burn import (
    FIFTEEN_MINUTES,
    ONE_MINUTE,
    LimitWindow,
    Projection,
    burn_rate,
    format_duration,
    format_rate,
    projection,
)

NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 15, tzinfo=UTC)
CENT = 10_000_000  # nanos


def at(clock: str) -> datetime:
    return datetime.fromisoformat(f"2026-03-14T{clock}+00:00")


# $0.01 in the last minute, $0.015 in the last 15, $0.017 in the last 30.
SERIES = [(at("11:30:00"), 2_000_000), (at("11:50:00"), 5_000_000), (at("11:59:30"), CENT)]


def test_the_rate_is_what_the_window_spent_per_minute() -> None:
    assert burn_rate(SERIES, NOW, ONE_MINUTE) == CENT  # $0.01 a minute
    assert burn_rate(SERIES, NOW, FIFTEEN_MINUTES) == 1_000_000  # $0.015 / 15
    assert burn_rate(SERIES, NOW, timedelta(minutes=30)) == 566_667  # $0.017 / 30, rounded up


def test_the_window_holds_both_its_ends_and_nothing_after_now() -> None:
    edge = [(NOW - ONE_MINUTE, 7), (NOW, 11), (NOW + timedelta(seconds=1), 1_000)]
    assert burn_rate(edge, NOW, ONE_MINUTE) == 18
    assert burn_rate([(NOW - ONE_MINUTE - timedelta(microseconds=1), 7)], NOW, ONE_MINUTE) == 0


def test_a_rate_is_rounded_up_so_it_never_understates_the_burn() -> None:
    assert burn_rate([(NOW, 1)], NOW, FIFTEEN_MINUTES) == 1  # 1/15 of a nano a minute
    assert burn_rate([(NOW, 30)], NOW, timedelta(seconds=30)) == 60  # a half-minute window
    assert burn_rate([], NOW, ONE_MINUTE) == 0


def test_the_projection_says_when_the_first_limit_is_reached() -> None:
    day = LimitWindow("day", 29_000_000, MIDNIGHT)  # $0.029 left of the day
    month = LimitWindow("month", 19_980_000_000, datetime(2026, 4, 1, tzinfo=UTC))
    reached = projection([day, month], CENT, NOW)
    assert reached == Projection("day", timedelta(minutes=2.9))
    assert reached.describe() == "2 min (day)"  # rounded down: no later than it says
    # Only the month left: $19.98 at $0.01 a minute is 33 h 18 min, well before April.
    assert projection([month], CENT, NOW) == Projection("month", timedelta(minutes=1998))


def test_a_limit_its_window_resets_before_is_never_reached() -> None:
    # $1.00 left at $0.01 a minute is 100 min; the day ends in 30.
    day = LimitWindow("day", 1_000_000_000, NOW + timedelta(minutes=30))
    assert projection([day], CENT, NOW) is None


def test_a_limit_already_reached_says_so_and_nothing_spent_projects_nothing() -> None:
    spent = LimitWindow("month", 0, MIDNIGHT)
    assert projection([LimitWindow("day", CENT, MIDNIGHT), spent], 0, NOW) == Projection(
        "month", timedelta(0)
    )
    assert Projection("month", timedelta(0)).describe() == "reached (month)"
    assert projection([LimitWindow("day", CENT, MIDNIGHT)], 0, NOW) is None


def test_a_huge_limit_at_a_tiny_rate_does_not_overflow() -> None:
    far = LimitWindow("month", 10**18, datetime(2026, 4, 1, tzinfo=UTC))
    assert projection([far], 1, NOW) is None


@pytest.mark.parametrize(
    ("span", "shown"),
    [
        (timedelta(seconds=59), "under 1 min"),
        (timedelta(minutes=23, seconds=59), "23 min"),
        (timedelta(hours=4, minutes=12), "4 h 12 min"),
        (timedelta(hours=2), "2 h"),
        (timedelta(days=3, hours=5), "3 days"),
    ],
)
def test_durations_read_in_whole_minutes_rounded_down(span: timedelta, shown: str) -> None:
    assert format_duration(span) == shown


def test_a_rate_reads_to_the_micro_dollar_rounded_up() -> None:
    assert format_rate(CENT) == "$0.01/min"
    assert format_rate(566_667) == "$0.000567/min"
    assert format_rate(1) == "$0.000001/min"
    assert format_rate(0) == "$0.00/min"
