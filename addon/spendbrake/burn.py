"""Burn rates and projections: pure arithmetic over a series of (time, nanos) points.

A point is one settled call: when it started and what it actually cost, the same measure the
burn-rate brake reads. A rate is nanos a minute over the window that ends now; a projection says
which limit that rate reaches first, and when, unless the limit's window resets before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendbrake.money import format_usd

ONE_MINUTE = timedelta(minutes=1)
FIFTEEN_MINUTES = timedelta(minutes=15)
_MICRO = 1_000  # nanos
_MICROSECOND = timedelta(microseconds=1)
_MICROSECONDS_PER_MINUTE = 60_000_000


type Point = tuple[datetime, int]  # (when a call started, what it cost in nanos)


def burn_rate(points: Iterable[Point], now: datetime, window: timedelta) -> int:
    """Nanos a minute spent by the calls started within ``window`` before ``now`` (both ends
    included), rounded up: a rate that errs, errs towards the limit."""
    since = now - window
    spent = sum(nanos for at, nanos in points if since <= at <= now)
    return -(-spent * _MICROSECONDS_PER_MINUTE // (window // _MICROSECOND))


@dataclass(frozen=True)
class LimitWindow:
    """A limit a rate runs towards: what it has left and when it starts over."""

    name: str  # "day", "month"
    remaining_nanos: int  # limit - spent - held
    resets_at: datetime


@dataclass(frozen=True)
class Projection:
    window: str  # the LimitWindow's name
    reached_in: timedelta  # zero: already reached

    def describe(self) -> str:
        """Under a 'limit reached in' heading: '23 min (day)', 'reached (month)'."""
        when = "reached" if self.reached_in <= timedelta(0) else format_duration(self.reached_in)
        return f"{when} ({self.window})"


def projection(
    windows: Sequence[LimitWindow], nanos_per_minute: int, now: datetime
) -> Projection | None:
    """The first limit reached at this rate before its window resets, or None: at this rate
    every limit outlasts its window (or nothing is being spent)."""
    reached: list[Projection] = []
    for window in windows:
        if window.remaining_nanos <= 0:
            reached.append(Projection(window.name, timedelta(0)))
            continue
        if nanos_per_minute <= 0:
            continue
        seconds = window.remaining_nanos * 60 / nanos_per_minute
        if seconds < (window.resets_at - now).total_seconds():
            reached.append(Projection(window.name, timedelta(seconds=seconds)))
    return min(reached, key=lambda p: p.reached_in, default=None)


def format_duration(span: timedelta) -> str:
    """Whole minutes, rounded down (a limit is reached no later than it says): '23 min',
    '4 h 12 min', 'under 1 min', '3 days'."""
    minutes = int(span.total_seconds() // 60)
    if minutes < 1:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def format_rate(nanos_per_minute: int) -> str:
    """A rate for reading, not an amount of the ledger: to the micro-dollar, rounded up."""
    return f"{format_usd(-(-nanos_per_minute // _MICRO) * _MICRO)}/min"
