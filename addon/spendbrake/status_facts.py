"""What the status page and ``/metrics`` show, read from the ledger in one go: ``top``'s facts
(``top.gather``) plus the day's spend series, refusals, calls and use per model.

Plain data read on a read-only connection; drawing it is ``status_page``'s and ``metrics``'
business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from spendbrake.burn import Point
from spendbrake.config import Config
from spendbrake.ledger import Event
from spendbrake.ledger_reads import Reader, spend_points
from spendbrake.status_reads import (
    CallRow,
    ModelUse,
    RefusalCount,
    day_agents,
    model_use,
    recent_calls,
    refusal_counts,
)
from spendbrake.top import AgentLine, gather, sorted_lines
from spendbrake.windows import day_window

RECENT = 20  # refusals on the overview; calls and events on an agent's page


@dataclass(frozen=True)
class Day:
    """The local calendar day the page is about."""

    day: str  # "2026-03-14", the ledger's key
    start: datetime  # its local midnight
    end: datetime  # the next one: when daily limits reset
    tz: ZoneInfo


def today(now: datetime, tz: ZoneInfo) -> Day:
    window = day_window(now, tz)
    local = date.fromisoformat(window.day)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    return Day(window.day, start, window.resets_at, tz)


@dataclass(frozen=True)
class Overview:
    now: datetime
    day: Day
    lines: list[AgentLine]  # the biggest spender first
    series: dict[str, list[Point]]  # agent → the day's settled calls, in the lines' order
    refusals: list[CallRow]  # the day's latest, newest first


def read_overview(ledger: Reader, config: Config, now: datetime) -> Overview:
    day = today(now, config.timezone)
    lines = sorted_lines(gather(ledger, config, now), "spend")
    with ledger.snapshot() as conn:
        series = {line.agent: spend_points(conn, line.agent, day.day, day.start) for line in lines}
        agents = day_agents(conn, day.day)
        refusals = recent_calls(conn, day.day, agents, refused_only=True, limit=RECENT)
    return Overview(now, day, lines, series, refusals)


@dataclass(frozen=True)
class AgentDetail:
    now: datetime
    day: Day
    agent: str
    line: AgentLine | None  # None: an agent spendbrake has never heard of
    series: list[Point]
    models: list[ModelUse]
    refusals: list[RefusalCount]
    calls: list[CallRow]  # the day's latest, newest first
    events: list[Event]  # the latest, newest first


def read_agent(ledger: Reader, config: Config, now: datetime, agent: str) -> AgentDetail:
    day = today(now, config.timezone)
    line = next((line for line in gather(ledger, config, now) if line.agent == agent), None)
    with ledger.snapshot() as conn:
        series = spend_points(conn, agent, day.day, day.start)
        models = model_use(conn, agent, day.day)
        refusals = refusal_counts(conn, agent, day.day)
        calls = recent_calls(conn, day.day, [agent], limit=RECENT)
        events = ledger.events(agent, RECENT)
    return AgentDetail(now, day, agent, line, series, models, refusals, calls, events)


@dataclass(frozen=True)
class MetricFacts:
    """Everything ``/metrics`` reports from the ledger, for the current local day."""

    day: Day
    lines: list[AgentLine]
    models: list[ModelUse]
    refusals: list[RefusalCount]


def read_metric_facts(ledger: Reader, config: Config, now: datetime) -> MetricFacts:
    day = today(now, config.timezone)
    lines = sorted_lines(gather(ledger, config, now), "agent")
    models: list[ModelUse] = []
    refusals: list[RefusalCount] = []
    with ledger.snapshot() as conn:
        for agent in day_agents(conn, day.day):
            models += model_use(conn, agent, day.day)
            refusals += refusal_counts(conn, agent, day.day)
    return MetricFacts(day, lines, models, refusals)
