"""The status page's chart: each agent's cumulative spend over the day, as one inline SVG.

Drawn on the server from the day's settled calls, so the page needs no JavaScript, no external
asset and no network: it renders the same offline, in a browser, or saved to a file. A line is a
staircase (spend moves in steps, one per call) that ends at ``now``; calls that fall in the same
pixel column are drawn as one step, so a day of 100,000 calls is still a few hundred points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from spendbrake.burn import Point
from spendbrake.money import format_usd

WIDTH, HEIGHT = 820, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 230, 16, 34  # margins: y labels, legend, x labels
# Distinguishable on white and for the common colour blindnesses (Okabe-Ito, then darker kin).
PALETTE = (
    "#0072b2",
    "#d55e00",
    "#009e73",
    "#cc79a7",
    "#e69f00",
    "#56b4e9",
    "#000000",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
)
_IDLE_SCALE = 10_000_000  # $0.01: the axis of a day without spend
_LEGEND_ROWS = 14  # agents named in the legend; the rest are in the table beside the chart


@dataclass(frozen=True)
class _Frame:
    start: datetime
    end: datetime
    top_nanos: int

    @property
    def plot_width(self) -> int:
        return WIDTH - _LEFT - _RIGHT

    @property
    def plot_height(self) -> int:
        return HEIGHT - _TOP - _BOTTOM

    def x(self, at: datetime) -> float:
        # Timestamps, not datetime subtraction: between two times of one zone, that ignores a
        # daylight-saving change and would draw a 23-hour day 24 hours wide.
        start = self.start.timestamp()
        share = (at.timestamp() - start) / (self.end.timestamp() - start)
        return _LEFT + min(max(share, 0.0), 1.0) * self.plot_width

    def y(self, nanos: int) -> float:
        return _TOP + self.plot_height * (1 - nanos / self.top_nanos)


def nice_step(top: int, ticks: int = 4) -> int:
    """The step of at most ``ticks`` gridlines up to ``top``: 1, 2 or 5 times a power of ten."""
    rough = max(1, -(-top // ticks))
    power = 1
    while power * 10 <= rough:
        power *= 10
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def spend_chart(
    series: Mapping[str, Sequence[Point]],
    start: datetime,
    end: datetime,
    now: datetime,
    tz: ZoneInfo,
    title: str = "Spend today, per agent",
) -> str:
    """An SVG of each agent's cumulative spend from ``start`` (a local midnight) to ``end`` (the
    next one), up to ``now``. ``series``: agent → its settled calls, oldest first; the agents
    keep this order in the legend and the colours."""
    totals = {agent: sum(nanos for _, nanos in points) for agent, points in series.items()}
    # Scaled to the biggest spender, however small: a day of fractions of a cent still shows.
    biggest = max(totals.values(), default=0) or _IDLE_SCALE
    step = nice_step(biggest)
    frame = _Frame(start, end, -(-biggest // step) * step)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spend-chart" viewBox="0 0 {WIDTH} '
        f'{HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        *_y_axis(frame, step),
        *_x_axis(frame, tz),
    ]
    until = min(max(now, start), end)
    for i, (agent, points) in enumerate(series.items()):
        colour, path = PALETTE[i % len(PALETTE)], _staircase(frame, points, until)
        parts.append(
            f'<path class="agent-line" data-agent="{escape(agent)}" d="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
    parts.extend(_legend(series, totals))
    if not series:
        parts.append(
            f'<text x="{_LEFT + frame.plot_width / 2:.0f}" y="{_TOP + frame.plot_height / 2:.0f}" '
            'text-anchor="middle" fill="#555555">no spend yet today</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _staircase(frame: _Frame, points: Sequence[Point], until: datetime) -> str:
    """The path of a cumulative sum: flat, then up by each call at the time it started."""
    spent = 0
    steps: list[tuple[int, int]] = []  # (x, cumulative nanos), one per pixel column
    for at, nanos in points:
        spent += nanos
        x = round(frame.x(at))
        if steps and steps[-1][0] == x:
            steps[-1] = (x, spent)
        else:
            steps.append((x, spent))
    path = [f"M{_LEFT} {frame.y(0):.1f}"]
    for column, cumulative in steps:
        path.append(f"H{column} V{frame.y(cumulative):.1f}")
    path.append(f"H{frame.x(until):.1f}")
    return " ".join(path)


def _y_axis(frame: _Frame, step: int) -> list[str]:
    right = _LEFT + frame.plot_width
    parts = []
    for nanos in range(0, frame.top_nanos + 1, step):
        y = frame.y(nanos)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e0e0e0"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333333">'
            f"{format_usd(nanos)}</text>"
        )
    return parts


def _x_axis(frame: _Frame, tz: ZoneInfo) -> list[str]:
    """A tick every three local hours: on a day of 23 or 25 hours they are not evenly apart."""
    bottom = _TOP + frame.plot_height
    local = frame.start.astimezone(tz)
    parts = [f'<line x1="{_LEFT}" y1="{bottom}" x2="{_LEFT + frame.plot_width}" y2="{bottom}" '
             'stroke="#333333"/>']  # fmt: skip
    for hour in range(0, 25, 3):
        wall = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(hours=hour)
        at = wall if hour < 24 else frame.end
        x = frame.x(at)
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#333333"/>'
            f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" fill="#333333">'
            f"{hour:02d}:00</text>"
        )
    return parts


def _legend(series: Mapping[str, Sequence[Point]], totals: Mapping[str, int]) -> list[str]:
    x = WIDTH - _RIGHT + 14
    parts = []
    for i, agent in enumerate(list(series)[:_LEGEND_ROWS]):
        y = _TOP + 8 + i * 18
        name = agent if len(agent) <= 18 else agent[:17] + "…"
        parts.append(
            f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text class="legend" x="{x + 15}" y="{y + 1}" fill="#222222">'
            f"{escape(name)} {format_usd(totals[agent])}</text>"
        )
    if len(series) > _LEGEND_ROWS:
        y = _TOP + 8 + _LEGEND_ROWS * 18
        more = len(series) - _LEGEND_ROWS
        parts.append(f'<text x="{x}" y="{y + 1}" fill="#555555">and {more} more</text>')
    return parts
