"""Heartbeat: agents that were calling and went silent, and agents that never pause.

Pure: fed the start time of every call the ledger records (any proxy's, refused ones too: an
agent retrying a refusal is still calling), it keeps each agent's current run of calls, a run
being calls with no pause longer than ``gap`` between them, and says which runs are due an
alert. Each alert names its episode (the last call before the silence, the first call of the
busy run), so it fires once per episode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendbrake import alerts
from spendbrake.alerts import Alert

MAX_AGENTS = 10_000  # agent names are client input: stay bounded


@dataclass
class Run:
    first: datetime
    last: datetime


@dataclass(frozen=True)
class Due:
    alert: Alert
    # Unless this agent had an alert of the same kind since then: another proxy that saw the
    # run from a later start (it started later) names the same episode differently.
    unless_since: datetime


class Heartbeat:
    def __init__(
        self,
        *,
        gap: timedelta,
        silent_after: timedelta | None,
        busy_for: timedelta | None,
    ) -> None:
        self.gap, self.silent_after, self.busy_for = gap, silent_after, busy_for
        self.runs: dict[str, Run] = {}

    def saw(self, agent: str, at: datetime) -> None:
        run = self.runs.get(agent)
        if run is None or at - run.last > self.gap:
            if run is None and len(self.runs) >= MAX_AGENTS:
                return
            self.runs[agent] = Run(at, at)
        elif at > run.last:
            run.last = at
        # An earlier call that lands late (another proxy's, its clock a hair behind) changes
        # nothing: the run already covers it.

    def due(self, now: datetime) -> Iterator[Due]:
        for agent, run in list(self.runs.items()):
            quiet = now - run.last
            if self.silent_after is not None and quiet >= self.silent_after:
                del self.runs[agent]  # the episode is over; the next call starts a new one
                yield Due(alerts.silent(agent, run.last, now), run.last)
                continue
            if (
                self.busy_for is not None
                and quiet <= self.gap
                and run.last - run.first >= self.busy_for
            ):
                yield Due(alerts.busy(agent, run.first, now), run.first)
            elif quiet > self.gap and self.silent_after is None:
                del self.runs[agent]  # over, and no silence to wait for
