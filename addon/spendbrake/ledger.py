"""The ledger interface: hold, settle, release, windows, events.

The governor and the addon only speak to this interface, so a shared server-side ledger
(PostgreSQL for a fleet of proxies) can stand beside the SQLite one without touching them.
All money is integer nanos (see ``spendbrake.money``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from spendbrake.brakes import NO_BRAKES, Brake, Brakes


class LedgerUnavailable(RuntimeError):
    """The ledger could not be read or written; the call must not go out (fail closed)."""


class LedgerBusy(LedgerUnavailable):
    """Another process holds the write lock; nothing was written. Waiting may succeed."""


@dataclass(frozen=True)
class CallIntent:
    """What is known of a call before it is forwarded; no prompt or key is ever stored."""

    agent: str
    session: str
    provider: str
    endpoint: str
    requested_model: str
    forwarded_model: str
    stream: bool
    day: str
    started_at: datetime
    estimated_input_tokens: int = 0  # the worst case behind the hold, kept beside the actual
    estimated_output_tokens: int = 0
    fingerprint: str = ""  # of the request's model and prompt: the same request, the same value


@dataclass(frozen=True)
class EstimateAccuracy:
    """How the estimates behind the holds compare with what was billed, for one model."""

    provider: str
    model: str
    calls: int  # settled calls with usage
    held_nanos: int
    actual_nanos: int
    estimated_input_tokens: int
    actual_input_tokens: int
    max_input_ratio: float  # the worst single call's actual / estimated input (> 1: underestimated)


@dataclass(frozen=True)
class TokenCounts:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0  # all cache writes, 1-hour ones included
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens kept for an hour (dearer)
    output_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class DayTotals:
    """One agent's daily window. ``remaining`` counts every hold as if it were spent."""

    agent: str
    day: str
    spent_nanos: int
    held_nanos: int
    limit_nanos: int
    calls: int  # forwarded
    blocked: int  # refused, for any reason
    budget_blocked: int = 0  # refused because the window had no room

    @property
    def remaining_nanos(self) -> int:
        return self.limit_nanos - self.spent_nanos - self.held_nanos


@dataclass(frozen=True)
class Limits:
    """The windows a call must fit besides its agent's day; ``None``: no limit in that window.

    Run-time overrides (``spendbrake limit set``) in the ledger win over these configured values.
    """

    monthly_nanos: int | None = None
    session_nanos: int | None = None
    session_tokens: int | None = None
    group: str = ""  # the team whose shared limits apply too ("" for none)
    group_daily_nanos: int | None = None
    group_monthly_nanos: int | None = None
    monthly_tokens: int | None = None  # the agent's token bucket for the calendar month
    group_monthly_tokens: int | None = None  # its group's, when the bucket is shared
    keep_downgraded_when_empty: bool = False  # then no token bucket refuses, even one set later


NO_MORE_LIMITS = Limits()

# The windows a hold is checked against, in the order a refusal names them.
WINDOWS = (
    "daily",
    "monthly",
    "group_daily",
    "group_monthly",
    "session_usd",
    "session_tokens",
    "monthly_tokens",
    "group_monthly_tokens",
)
TOKEN_WINDOWS = frozenset(
    {"session_tokens", "monthly_tokens", "group_monthly_tokens"}
)  # counted in tokens, not nanos


@dataclass(frozen=True)
class WindowUse:
    """One window at the moment of a hold: money in nanos, or tokens for session_tokens."""

    window: str  # one of WINDOWS
    name: str  # the agent, the group, or the session id
    spent: int
    held: int
    limit: int

    @property
    def remaining(self) -> int:
        return self.limit - self.spent - self.held


@dataclass(frozen=True)
class HoldGranted:
    call_id: int
    held_nanos: int
    totals: DayTotals  # after the hold


@dataclass(frozen=True)
class HoldRefused:
    call_id: int  # the refusal is recorded as a row too
    requested_nanos: int
    totals: DayTotals  # the agent's day, before the refused hold
    blocked_by: WindowUse | None = None  # the first window the call did not fit
    requested_tokens: int = 0

    @property
    def window(self) -> str:
        return self.blocked_by.window if self.blocked_by else "daily"


@dataclass(frozen=True)
class HoldBraked:
    """A brake stopped the call before any money window was checked."""

    call_id: int | None  # recorded as a refused row; None: not recorded, the call may wait
    brake: Brake


@dataclass(frozen=True)
class Event:
    at: datetime
    agent: str
    kind: str  # suspended, resumed
    detail: str
    actor: str


@dataclass(frozen=True)
class Settlement:
    actual_nanos: int
    tokens: TokenCounts
    outcome: str  # "ok", "upstream_error", "no_usage", "client_disconnected", "crashed", ...
    reason: str = ""


class Ledger(Protocol):
    def hold(
        self,
        intent: CallIntent,
        amount_nanos: int,
        configured_limit: int,
        limits: Limits = NO_MORE_LIMITS,
        brakes: Brakes = NO_BRAKES,
    ) -> HoldGranted | HoldRefused | HoldBraked:
        """Atomically check the agent's brakes, then spent + held + amount against the day's
        limit and every other window in ``limits`` (the intent's estimated tokens against the
        session's tokens), and hold it in all of them. A brake that suspends the agent does so
        in the same transaction."""
        ...

    def refuse(self, intent: CallIntent, reason: str) -> int:
        """Record a call refused before any hold (unreadable request, unknown model...)."""
        ...

    def settle(self, call_id: int, settlement: Settlement, configured_limit: int) -> DayTotals:
        """Replace the hold by the actual cost. Settling twice is a no-op."""
        ...

    def day_totals(self, agent: str, day: str, configured_limit: int) -> DayTotals: ...

    def month_tokens(self, agent: str, month: str, group: str = "") -> int:
        """Tokens the agent (or, given, its group) used and holds in a month ("2026-11")."""
        ...

    def token_bucket(self, agent: str, month: str, group: str = "") -> tuple[int, int | None]:
        """The month's tokens used by the agent (or its group), and the bucket's size if
        'limit set' changed it."""
        ...

    def window_uses(self, intent: CallIntent, limits: Limits) -> list[WindowUse]:
        """The windows besides the day that limit the call's agent (configured or set at run
        time), with what each has spent and held; token windows in tokens."""
        ...

    def room_nanos(self, intent: CallIntent, configured_limit: int, limits: Limits) -> int:
        """What the tightest money window that applies to the call has left."""
        ...

    def set_daily_limit(self, agent: str, limit_nanos: int) -> None:
        """A run-time limit that wins over the config; read on every hold, so no restart."""
        ...

    def set_limits(self, limits: list[tuple[str, str, int]]) -> None:
        """Several (window, name, limit) at once: all of them, or none."""
        ...

    def set_limit(self, window: str, name: str, limit: int) -> None:
        """A run-time limit of any window (nanos, or tokens for session_tokens) for an agent,
        or for a group in group_daily / group_monthly; wins over the config at once."""
        ...

    def daily_limit_overrides(self) -> dict[str, int]: ...

    def reset_window(
        self, agent: str, window: str, period: str, actor: str, session: str = ""
    ) -> int:
        """Zero a window on purpose (recorded as an event with the actor); returns nanos."""
        ...

    def resume(self, agent: str, actor: str) -> bool:
        """Lift the agent's suspension (its loop and burn history start over); False if it was
        not suspended."""
        ...

    def suspended_agents(self) -> dict[str, str]:
        """Suspended agent → the reason code."""
        ...

    def events(self, agent: str | None = None, limit: int = 100) -> list[Event]: ...

    def record_event(
        self, agent: str, kind: str, detail: str, actor: str = "spendbrake"
    ) -> None: ...

    def agents_with_activity(self, day: str) -> list[str]: ...

    def held_back(self, agent: str, day: str, since: datetime) -> tuple[bool, bool]:
        """(throttled, downgraded): a rate or backoff brake held the agent back since
        ``since``; a call of the day went to a cheaper model than asked."""
        ...

    def estimate_accuracy(self, since_day: str) -> list[EstimateAccuracy]:
        """Per model, the holds and estimates against actual costs and tokens since a day."""
        ...

    def recover_orphaned_holds(self, lease_ttl_s: float | None = None) -> int:
        """Settle, at their held amount, holds of proxy processes that died. Returns how many.
        On this host the process table says who died; with ``lease_ttl_s``, so does a lease
        not renewed for that long, on any host (``spendbrake.leases``)."""
        ...

    def settle_own_holds(self, outcome: str) -> int:
        """At shutdown: settle this process's open holds at their held amount."""
        ...

    def keep_lease(self) -> None:
        """For a proxy: tell the other proxies sharing this ledger, until ``close``, that this
        one still runs, so that they settle its holds if it dies (``spendbrake.leases``)."""
        ...

    def close(self) -> None: ...
