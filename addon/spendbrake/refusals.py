"""Refusals: the codes, statuses and retry headers of DESIGN.md, and the messages users read.

A refusal is answered by the proxy itself in the provider's error shape; nothing reaches the
provider. Status codes are chosen for what the official SDKs do with them: 402/423/400 are
never retried, 429 is waited out using ``retry-after``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spendbrake.ledger import DayTotals
from spendbrake.money import format_usd

STATUS: dict[str, int] = {
    "daily_budget_exceeded": 402,
    "monthly_budget_exceeded": 402,
    "session_budget_exceeded": 402,
    "session_tokens_exceeded": 402,
    "rate_limited": 429,
    "backoff": 429,
    "agent_suspended": 423,
    "loop_detected": 423,
    "unauthenticated_agent": 407,
    "unreadable_request": 400,
    "unknown_model": 400,
    "unmetered_route": 403,
    "ledger_unavailable": 503,
    "internal_error": 500,
}
_RETRY_WAIT_CAP_S = 60  # SDKs ignore longer waits (and then retry sooner on their own)
_RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    retry_after_s: int | None = None

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "x-spendbrake-reason": self.code}
        if self.status not in _RETRIED_STATUSES:
            headers["x-should-retry"] = "false"
        if self.retry_after_s is not None:
            if self.status == 429:
                wait = min(self.retry_after_s, _RETRY_WAIT_CAP_S)
                headers["retry-after"] = str(wait)
                headers["retry-after-ms"] = str(wait * 1000)
            else:
                headers["retry-after"] = str(self.retry_after_s)
        return headers


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = -(-rest // 60) if hours == 0 else rest // 60
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes} min"


def daily_budget_exceeded(
    totals: DayTotals, requested_nanos: int, resets_at: datetime, now: datetime
) -> Refusal:
    seconds = max(1, int(-(-(resets_at - now).total_seconds() // 1)))
    in_flight = (
        f" (another {format_usd(totals.held_nanos)} is held by calls in flight)"
        if totals.held_nanos
        else ""
    )
    suggestion = format_usd(max(totals.limit_nanos * 2, 10_000_000)).removeprefix("$")
    message = (
        f"spendbrake: daily budget exceeded for agent '{totals.agent}': "
        f"spent {format_usd(totals.spent_nanos)} of {format_usd(totals.limit_nanos)} today"
        f"{in_flight}, and this call may cost up to {format_usd(requested_nanos)}. "
        f"The limit resets at {resets_at.strftime('%Y-%m-%d %H:%M %Z')} "
        f"(in {_duration(seconds)}). "
        f"To raise it: spendbrake limit set {totals.agent} --daily {suggestion}"
    )
    return Refusal("daily_budget_exceeded", message, retry_after_s=seconds)
