"""Which windows besides the day limit a call, and what each has used: the part of a hold's
window check that does not depend on the database (both ledgers read the totals their way).

A window's totals live at a place ``(scope, name, period)`` of ``windows_after_resets``:
the agent's month, its group's day and month, its session. Its limit is the configured one
unless ``spendbrake limit set`` set another at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spendbrake.ledger import TOKEN_WINDOWS, WINDOWS, CallIntent, DayTotals, Limits, WindowUse

type Place = tuple[str, str, str]  # scope, name, period


@dataclass(frozen=True)
class WindowPlan:
    places: Mapping[str, Place]  # window → where its totals are
    limited: Mapping[str, int]  # window → its limit (nanos, or tokens), for limited ones only

    def keys(self) -> set[Place]:
        return {self.places[window] for window in self.limited}


def plan_windows(intent: CallIntent, limits: Limits, set_now: Mapping[str, int]) -> WindowPlan:
    """``set_now``: what 'limit set' set for the agent and its group (window → limit)."""
    month, session = intent.day[:7], f"{intent.agent}/{intent.session}"
    configured: dict[str, tuple[Place, int | None]] = {
        "monthly": (("agent_month", intent.agent, month), limits.monthly_nanos),
        "session_usd": (("session", session, ""), limits.session_nanos),
        "session_tokens": (("session", session, ""), limits.session_tokens),
        "monthly_tokens": (("agent_month", intent.agent, month), limits.monthly_tokens),
    }
    if limits.group:
        configured |= {
            "group_daily": (("group_day", limits.group, intent.day), limits.group_daily_nanos),
            "group_monthly": (("group_month", limits.group, month), limits.group_monthly_nanos),
            "group_monthly_tokens": (
                ("group_month", limits.group, month),
                limits.group_monthly_tokens,
            ),
        }
    wanted = {window: limit for window, (_, limit) in configured.items()}
    for window, limit in set_now.items():
        if window not in wanted:
            continue
        if window in TOKEN_WINDOWS:
            if limits.keep_downgraded_when_empty and window != "session_tokens":
                continue  # an empty bucket keeps the cheaper model: it never refuses
            wanted[window] = limit or None  # 0 turns a token limit off, as 'limit set' says
        else:
            wanted[window] = limit
    return WindowPlan(
        places={window: place for window, (place, _) in configured.items()},
        limited={window: limit for window, limit in wanted.items() if limit is not None},
    )


def window_uses(
    intent: CallIntent, plan: WindowPlan, totals: Mapping[Place, Sequence[int]]
) -> list[WindowUse]:
    """``totals``: place → (spent_nanos, held_nanos, spent_tokens, held_tokens) as read; a
    place without a row has used nothing. In the order refusals name windows."""
    uses = []
    for window in WINDOWS[1:]:
        if window not in plan.limited:
            continue
        scope, name, period = plan.places[window]
        spent, held, spent_tokens, held_tokens = totals.get((scope, name, period), (0, 0, 0, 0))
        shown = intent.session if scope == "session" else name
        limit = plan.limited[window]
        if window in TOKEN_WINDOWS:
            uses.append(WindowUse(window, shown, spent_tokens, held_tokens, limit))
        else:
            uses.append(WindowUse(window, shown, spent, held, limit))
    return uses


def first_without_room(
    totals: DayTotals, others: Sequence[WindowUse], nanos: int, tokens: int
) -> WindowUse | None:
    """The first window, the day's first, that has no room for a hold of ``nanos`` (``tokens``
    in the token windows); None when every window has room."""
    day = WindowUse(
        "daily", totals.agent, totals.spent_nanos, totals.held_nanos, totals.limit_nanos
    )
    for use in (day, *others):
        if (tokens if use.window in TOKEN_WINDOWS else nanos) > use.remaining:
            return use
    return None


def run_time_limits(rows: Sequence[tuple[str, str, int]], agent: str, group: str) -> dict[str, int]:
    """The agent's rows of the limits table, and its group's (windows named group_*)."""
    return {
        window: limit
        for who, window, limit in rows
        if (who == group if window.startswith("group_") else who == agent)
    }
