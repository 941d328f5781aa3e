"""What ``spendbrake status`` shows: every configured or active agent's day, as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spendbrake.config import Config
from spendbrake.ledger import DayTotals, Ledger
from spendbrake.money import format_usd_exact
from spendbrake.windows import day_window


@dataclass(frozen=True)
class AgentStatus:
    totals: DayTotals
    suspended_for: str | None = None  # the code of the brake that suspended the agent
    throttled: bool = False  # a rate brake held it back in the last minute
    downgraded: bool = False  # calls of the day went to a cheaper model

    @property
    def state(self) -> str:
        t = self.totals
        if self.suspended_for:
            return "suspended"
        if t.budget_blocked or t.remaining_nanos <= 0:
            return "exhausted"
        if self.throttled:
            return "throttled"
        if self.downgraded:
            return "downgraded"
        return "ok"

    def as_json(self) -> dict[str, Any]:
        t = self.totals
        return {
            "agent": t.agent,
            "spent_usd": format_usd_exact(t.spent_nanos),
            "held_usd": format_usd_exact(t.held_nanos),
            "limit_usd": format_usd_exact(t.limit_nanos),
            "remaining_usd": format_usd_exact(t.remaining_nanos),
            "calls": t.calls,
            "blocked": t.blocked,
            "state": self.state,
        }


def agent_statuses(ledger: Ledger, config: Config, now: datetime) -> list[AgentStatus]:
    day = day_window(now, config.timezone).day
    suspended = ledger.suspended_agents()
    names = sorted(set(config.agents) | set(ledger.agents_with_activity(day)) | set(suspended))
    minute_ago = now - timedelta(seconds=60)
    statuses = []
    for name in names:
        throttled, downgraded = ledger.held_back(name, day, minute_ago)
        totals = ledger.day_totals(name, day, config.daily_limit(name))
        statuses.append(AgentStatus(totals, suspended.get(name), throttled, downgraded))
    return statuses


def status_document(ledger: Ledger, config: Config, now: datetime) -> dict[str, Any]:
    return {
        "as_of": now.astimezone(config.timezone).isoformat(timespec="seconds"),
        "timezone": config.timezone.key,
        "agents": [s.as_json() for s in agent_statuses(ledger, config, now)],
    }
