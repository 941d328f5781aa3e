"""Refusals: the codes, statuses and retry headers of DESIGN.md, and the messages users read.

A refusal is answered by the proxy itself in the provider's error shape; nothing reaches the
provider. Status codes are chosen for what the official SDKs do with them: 402/423/400 are
never retried, 429 is waited out using ``retry-after``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spendbrake.brakes import Brake
from spendbrake.ledger import DayTotals, HoldRefused, WindowUse
from spendbrake.money import format_usd

STATUS: dict[str, int] = {
    "daily_budget_exceeded": 402,
    "monthly_budget_exceeded": 402,
    "session_budget_exceeded": 402,
    "session_tokens_exceeded": 402,
    "monthly_tokens_exceeded": 402,
    "rate_limited": 429,
    "backoff": 429,
    "agent_suspended": 423,
    "loop_detected": 423,
    "unauthenticated_agent": 407,
    "unreadable_request": 400,
    "unknown_model": 400,
    "unmetered_route": 403,
    "llm_calls_blocked": 402,
    "unmetered_tool": 403,
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
    days, seconds = divmod(seconds, 86_400)
    hours, rest = divmod(seconds, 3600)
    minutes = -(-rest // 60) if hours == 0 and days == 0 else rest // 60
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes} min"


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int(-(-(moment - now).total_seconds() // 1)))


def _raised(limit: int) -> str:
    """A suggested new limit: double the old one, at least one cent."""
    return format_usd(max(limit * 2, 10_000_000)).removeprefix("$")


def window_exceeded(
    refused: HoldRefused,
    *,
    agent: str,
    day_resets_at: datetime,
    month_resets_at: datetime,
    now: datetime,
) -> Refusal:
    """The refusal of a hold that did not fit one of its windows (the first that blocked)."""
    use = refused.blocked_by
    if use is None or use.window == "daily":
        return daily_budget_exceeded(refused.totals, refused.requested_nanos, day_resets_at, now)
    if use.window == "session_tokens":
        return _session_tokens_exceeded(use, agent, refused.requested_tokens)
    if use.window in ("monthly_tokens", "group_monthly_tokens"):
        return _monthly_tokens_exceeded(use, agent, refused.requested_tokens, month_resets_at, now)
    in_flight = f" (another {format_usd(use.held)} is held by calls in flight)" if use.held else ""
    spent = f"spent {format_usd(use.spent)} of {format_usd(use.limit)}"
    asked = f"and this call may cost up to {format_usd(refused.requested_nanos)}"
    if use.window == "session_usd":
        message = (
            f"spendbrake: session budget exceeded for agent '{agent}', session '{use.name}': "
            f"{spent} in this session{in_flight}, {asked}. A session does not reset: start a "
            f"new one, or raise it: spendbrake limit set {agent} --session-usd {_raised(use.limit)}"
        )
        return Refusal("session_budget_exceeded", message)
    monthly = use.window in ("monthly", "group_monthly")
    resets_at = month_resets_at if monthly else day_resets_at
    seconds = _seconds_until(resets_at, now)
    flag = "--monthly" if monthly else "--daily"
    if use.window.startswith("group_"):
        whose = f"group '{use.name}' (agent '{agent}' is one of its agents)"
        command = f"spendbrake limit set --group {use.name} {flag} {_raised(use.limit)}"
    else:
        whose = f"agent '{agent}'"
        command = f"spendbrake limit set {agent} {flag} {_raised(use.limit)}"
    message = (
        f"spendbrake: {'monthly' if monthly else 'daily'} budget exceeded for {whose}: "
        f"{spent} this {'month' if monthly else 'day'}{in_flight}, {asked}. "
        f"The limit resets at {resets_at.strftime('%Y-%m-%d %H:%M %Z')} "
        f"(in {_duration(seconds)}). To raise it: {command}"
    )
    code = "monthly_budget_exceeded" if monthly else "daily_budget_exceeded"
    return Refusal(code, message, retry_after_s=seconds)


def _whose(use: WindowUse, agent: str) -> str:
    if use.window.startswith("group_"):
        return f"group '{use.name}' (agent '{agent}' is one of its agents)"
    return f"agent '{agent}'"


def _monthly_tokens_exceeded(
    use: WindowUse, agent: str, requested_tokens: int, resets_at: datetime, now: datetime
) -> Refusal:
    seconds = _seconds_until(resets_at, now)
    in_flight = f" (another {use.held:,} held by calls in flight)" if use.held else ""
    message = (
        f"spendbrake: monthly token quota used up for {_whose(use, agent)}: {use.spent:,} of "
        f"{use.limit:,} tokens this month{in_flight}, and this call may use up to "
        f"{requested_tokens:,}. It refills at {resets_at.strftime('%Y-%m-%d %H:%M %Z')} "
        f"(in {_duration(seconds)}). To raise it: set monthly_tokens in the configuration"
    )
    return Refusal("monthly_tokens_exceeded", message, retry_after_s=seconds)


def _session_tokens_exceeded(use: WindowUse, agent: str, requested_tokens: int) -> Refusal:
    in_flight = f" (another {use.held:,} held by calls in flight)" if use.held else ""
    message = (
        f"spendbrake: session token limit reached for agent '{agent}', session '{use.name}': "
        f"{use.spent:,} of {use.limit:,} tokens used{in_flight}, and this call may use up to "
        f"{requested_tokens:,}. The session is stopped (a circuit breaker): start a new one, or "
        f"raise it: spendbrake limit set {agent} --session-tokens {max(use.limit * 2, 1000)}"
    )
    return Refusal("session_tokens_exceeded", message)


def daily_budget_exceeded(
    totals: DayTotals, requested_nanos: int, resets_at: datetime, now: datetime
) -> Refusal:
    seconds = _seconds_until(resets_at, now)
    in_flight = (
        f" (another {format_usd(totals.held_nanos)} is held by calls in flight)"
        if totals.held_nanos
        else ""
    )
    suggestion = _raised(totals.limit_nanos)
    message = (
        f"spendbrake: daily budget exceeded for agent '{totals.agent}': "
        f"spent {format_usd(totals.spent_nanos)} of {format_usd(totals.limit_nanos)} today"
        f"{in_flight}, and this call may cost up to {format_usd(requested_nanos)}. "
        f"The limit resets at {resets_at.strftime('%Y-%m-%d %H:%M %Z')} "
        f"(in {_duration(seconds)}). "
        f"To raise it: spendbrake limit set {totals.agent} --daily {suggestion}"
    )
    return Refusal("daily_budget_exceeded", message, retry_after_s=seconds)


def unmetered_tool(tools: list[str], provider_id: str) -> Refusal:
    listed = ", ".join(f'"{tool}"' for tool in tools)
    message = (
        f"spendbrake: this call enables server-side tools of {provider_id} ({', '.join(tools)}). "
        "They are billed per use and add their results to the prompt, and nothing in the "
        "request bounds either, so spendbrake cannot hold this call's worst case and does not "
        "let it through. To allow them, accepting that their fees are not held in advance, "
        f"list them in the configuration: allow_server_tools = [{listed}]"
    )
    return Refusal("unmetered_tool", message)


def braked(brake: Brake, agent: str) -> Refusal:
    """The refusal of a call a brake stopped: what the brake saw, and what lifts it."""
    if brake.code == "loop_detected":
        message = (
            f"spendbrake: loop detected for agent '{agent}': {brake.detail}. The agent is "
            f"suspended until a person resumes it: spendbrake resume {agent}"
        )
    elif brake.code == "agent_suspended":
        message = (
            f"spendbrake: agent '{agent}' is suspended ({brake.detail}); human intervention "
            f"required. To lift it: spendbrake resume {agent}"
        )
    elif brake.code == "backoff":
        message = f"spendbrake: backing off agent '{agent}': {brake.detail}"
    elif brake.retry_after_s is None:
        message = f"spendbrake: rate limit for agent '{agent}': {brake.detail}; it cannot pass"
    else:
        message = (
            f"spendbrake: rate limit for agent '{agent}': {brake.detail}; retry in "
            f"{brake.retry_after_s} s"
        )
    return Refusal(brake.code, message, retry_after_s=brake.retry_after_s)
