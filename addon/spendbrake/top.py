"""``spendbrake top``: every agent's spend, burn rate and brakes, redrawn about once a second.

It reads the ledger (SQLite or PostgreSQL) through a read-only reader, so it runs beside the
proxies without ever taking a lock their holds wait on; only the resume key writes, through the
ledger's own ``resume``. The parts are apart so each can be tested alone: ``gather`` reads one
moment of the ledger, ``render`` draws it, ``on_key`` turns a key into a change of view or an
action, and ``watch`` is the loop that joins them to a terminal.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Protocol, TextIO
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spendbrake.burn import (
    FIFTEEN_MINUTES,
    ONE_MINUTE,
    LimitWindow,
    Projection,
    burn_rate,
    format_rate,
    projection,
)
from spendbrake.config import Config
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_reads import (
    Reader,
    last_refusal,
    month_use,
    run_time_limits,
    spend_points,
)
from spendbrake.ledger_url import LedgerLocation, open_ledger
from spendbrake.money import format_usd, parse_usd
from spendbrake.status import agent_statuses
from spendbrake.windows import day_window, month_resets_at

SORTS = ("burn", "spend", "state", "agent")  # the order 's' cycles through
DEFAULT_RED_ABOVE = parse_usd("1.00")  # a minute, for an agent without a burn-rate brake
_STATE_ORDER = ("suspended", "exhausted", "throttled", "downgraded", "ok")
_STATE_STYLE = {
    "ok": "green",
    "throttled": "yellow",
    "downgraded": "cyan",
    "exhausted": "red",
    "suspended": "bold red",
}
_BAR_WIDTH = 8


@dataclass(frozen=True)
class AgentLine:
    """One agent at one moment, as ``top`` shows it."""

    agent: str
    state: str  # ok, throttled, downgraded, exhausted or suspended (as ``status`` says)
    spent_today: int
    limit_today: int
    spent_month: int
    limit_month: int | None  # None: no monthly limit
    rate_1m: int  # nanos a minute
    rate_15m: int
    red_above: int  # a burn rate above this (nanos a minute) is shown in red
    projection: Projection | None
    calls: int  # forwarded today
    blocked: int  # refused today
    last_refusal: str | None  # the code of today's latest refusal


def gather(
    ledger: Reader, config: Config, now: datetime, red_above: int | None = None
) -> list[AgentLine]:
    """Every agent ``status`` lists, read in one snapshot of the ledger. ``red_above``: one
    threshold for every agent instead of each one's burn-rate brake."""
    tz = config.timezone
    day = day_window(now, tz)
    month, month_ends = day.day[:7], month_resets_at(now, tz)
    lines = []
    with ledger.snapshot() as conn:
        for status in agent_statuses(ledger, config, now):
            totals, agent = status.totals, status.totals.agent
            set_now = run_time_limits(conn, agent)
            monthly = set_now.get("monthly", config.limits(agent).monthly_nanos)
            brake = config.brakes(agent).burn_nanos_per_min
            if "burn_usd_per_min" in set_now:
                brake = set_now["burn_usd_per_min"] or None  # 0 turned it off
            spent_month, held_month = month_use(conn, agent, month)
            points = spend_points(conn, agent, day.day, now - FIFTEEN_MINUTES)
            rate_1m = burn_rate(points, now, ONE_MINUTE)
            rate_15m = burn_rate(points, now, FIFTEEN_MINUTES)
            windows = [LimitWindow("day", totals.remaining_nanos, day.resets_at)]
            if monthly is not None:
                windows.append(LimitWindow("month", monthly - spent_month - held_month, month_ends))
            lines.append(
                AgentLine(
                    agent=agent,
                    state=status.state,
                    spent_today=totals.spent_nanos,
                    limit_today=totals.limit_nanos,
                    spent_month=spent_month,
                    limit_month=monthly,
                    rate_1m=rate_1m,
                    rate_15m=rate_15m,
                    red_above=red_above if red_above is not None else brake or DEFAULT_RED_ABOVE,
                    # The faster of the two rates: a runaway that started a minute ago is not
                    # averaged away over fifteen.
                    projection=projection(windows, max(rate_1m, rate_15m), now),
                    calls=totals.calls,
                    blocked=totals.blocked,
                    last_refusal=last_refusal(conn, agent, day.day),
                )
            )
    return lines


def sorted_lines(lines: list[AgentLine], sort: str) -> list[AgentLine]:
    keys: dict[str, Callable[[AgentLine], tuple[object, ...]]] = {
        "burn": lambda a: (-a.rate_1m, -a.rate_15m, a.agent),
        "spend": lambda a: (-a.spent_today, a.agent),
        "state": lambda a: (_STATE_ORDER.index(a.state), a.agent),
        "agent": lambda a: (a.agent,),
    }
    return sorted(lines, key=keys[sort])


# -- drawing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """What the person at the terminal chose: the order, the selected agent, and the answer to
    their last key."""

    sort: str = "burn"
    selected: str | None = None  # None: the first line
    message: str = ""


def _against(spent: int, limit: int | None, *, bars: bool) -> Text:
    if limit is None:
        return Text(format_usd(spent))  # no limit to reach
    used = spent * 100 // limit if limit > 0 else 100
    figures = f"{format_usd(spent)} of {format_usd(limit)}"
    if not bars:
        return Text(f"{figures} ({used}%)")
    filled = min(_BAR_WIDTH, used * _BAR_WIDTH // 100)
    style = "red" if used >= 100 else "yellow" if used >= 80 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (_BAR_WIDTH - filled), "dim"), f" {figures}")


def _rate(nanos_per_minute: int, red_above: int) -> Text:
    shown = format_rate(nanos_per_minute).removesuffix("/min")  # the column says a minute
    return Text(shown, "bold red" if nanos_per_minute > red_above else "")


_COLUMNS = (
    "agent",
    "state",
    "today",
    "this month",
    "$/min 1m",
    "$/min 15m",
    "limit reached in",
    "calls",
    "blocked",
    "last refusal",
)


def render(lines: list[AgentLine], now: datetime, tz: ZoneInfo, view: View | None) -> Table:
    """The table of ``lines`` in their order. ``view``: the live view, with bars, the selected
    line and the keys; None: a plain table, for a pipe or a log."""
    sort = f", by {view.sort}" if view else ""
    table = Table(
        title=f"spendbrake top: {now.astimezone(tz):%Y-%m-%d %H:%M:%S} ({tz.key}){sort}",
        caption=(
            "s sort · ↑↓ select · r resume · q quit" + (f"\n{view.message}" if view.message else "")
            if view
            else None
        ),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for column in _COLUMNS:
        numeric = column.startswith("$") or column in ("calls", "blocked")
        # At a narrow terminal, money and names wrap or fold: nothing is cut short.
        table.add_column(
            column, justify="right" if numeric else "left", no_wrap=numeric, overflow="fold"
        )
    selected = _selected(view, lines) if view else None
    for line in lines:
        marker = ("> " if line.agent == selected else "  ") if view else ""
        # A suspended agent spends nothing until it is resumed: no limit comes nearer.
        ahead = line.projection if line.state != "suspended" else None
        table.add_row(
            marker + line.agent,
            Text(line.state, _STATE_STYLE.get(line.state, "")),
            _against(line.spent_today, line.limit_today, bars=view is not None),
            _against(line.spent_month, line.limit_month, bars=view is not None),
            _rate(line.rate_1m, line.red_above),
            _rate(line.rate_15m, line.red_above),
            ahead.describe() if ahead else "",
            f"{line.calls:,}",
            f"{line.blocked:,}",
            line.last_refusal or "",
            style="reverse" if view and line.agent == selected else None,
        )
    return table


def _selected(view: View, lines: list[AgentLine]) -> str | None:
    """The selected agent, else the first line's (the selected one may have left the list)."""
    agents = [line.agent for line in lines]
    return view.selected if view.selected in agents else agents[0] if agents else None


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Resume:
    agent: str


def on_key(view: View, key: str, lines: list[AgentLine]) -> tuple[View, Quit | Resume | None]:
    """What a key does, given the lines as shown: ``s`` cycles the order, ``↑``/``↓`` (or
    ``k``/``j``) move the selection, ``r`` resumes the selected agent if it is suspended, ``q``
    quits. Any key clears the last message."""
    view = replace(view, message="")
    agents = [line.agent for line in lines]
    selected = _selected(view, lines)
    at = agents.index(selected) if selected is not None else 0
    if key in ("q", "Q"):
        return view, Quit()
    if key == "s":
        return replace(view, sort=SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]), None
    if key in ("down", "j") and agents:
        return replace(view, selected=agents[min(at + 1, len(agents) - 1)]), None
    if key in ("up", "k") and agents:
        return replace(view, selected=agents[max(at - 1, 0)]), None
    if key == "r" and agents:
        line = lines[at]
        if line.state == "suspended":
            return replace(view, selected=line.agent), Resume(line.agent)
        return replace(view, message=f"{line.agent} is not suspended: nothing to resume"), None
    return view, None


_SEQUENCES = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down"}


def decode_key(data: bytes) -> str:
    """One read from the terminal: an arrow's escape sequence, else its first character."""
    text = data.decode(errors="replace")
    return _SEQUENCES.get(text, text[:1])


class Keys(Protocol):
    def read(self, timeout: float) -> str | None:
        """The next key pressed within ``timeout`` seconds, or None."""
        ...


class TerminalKeys:
    """Key presses from a terminal, one at a time, unechoed and without waiting for Enter."""

    def __init__(self, stream: TextIO = sys.stdin) -> None:
        self.fd = stream.fileno()
        self.closed = False

    def __enter__(self) -> TerminalKeys:
        import termios  # POSIX only: imported where it is needed
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def read(self, timeout: float) -> str | None:
        if self.closed:  # the terminal hung up: keep redrawing, on the clock alone
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 16)
        self.closed = not data
        return decode_key(data) if data else None


class NoKeys:
    """When the input is not a terminal: no keys, a redraw on the clock; Ctrl-C ends it."""

    def __enter__(self) -> NoKeys:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def read(self, timeout: float) -> str | None:
        time.sleep(timeout)
        return None


def watch(
    read: Callable[[], tuple[datetime, list[AgentLine]]],
    resume: Callable[[str], str],
    keys: Keys,
    console: Console,
    tz: ZoneInfo,
    interval: float = 1.0,
    sort: str = "burn",
) -> None:
    """Redraw every ``interval`` seconds and at each key, until ``q`` (or Ctrl-C)."""
    view = View(sort=sort)
    with Live(console=console, auto_refresh=False, screen=True) as live:
        while True:
            now, lines = read()
            lines = sorted_lines(lines, view.sort)
            live.update(render(lines, now, tz, view), refresh=True)
            key = keys.read(interval)
            if key is None:
                continue
            view, action = on_key(view, key, lines)
            if isinstance(action, Quit):
                return
            if isinstance(action, Resume):
                view = replace(view, message=resume(action.agent))


def resume_agent(location: LedgerLocation, agent: str, actor: str) -> str:
    """The resume key: the ledger's own ``resume``, the one write ``top`` makes."""
    try:
        ledger = open_ledger(location)
    except LedgerUnavailable as e:
        return f"{agent}: not resumed: {e}"
    try:
        reason = ledger.suspended_agents().get(agent)
        lifted = ledger.resume(agent, actor=actor)
    except LedgerUnavailable as e:
        return f"{agent}: not resumed: {e}"
    finally:
        ledger.close()
    if not lifted:
        return f"{agent}: was not suspended (any more)"
    return f"{agent}: resumed (it was suspended for {reason}); recorded as done by {actor}"
