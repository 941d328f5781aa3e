"""The brakes besides money: suspension, loops, failures, burn rate, rates and concurrency.

Pure: ``check`` takes what the ledger knows of an agent at the moment of a call (``Activity``)
and the agent's settings (``Brakes``), and says whether the call may go, and if not which brake
stopped it. The ledger gathers the activity and applies the verdict inside the hold's
transaction, so processes sharing a ledger see one another's calls.

Order: a suspension stops everything; then the brakes that suspend (a loop, repeated upstream
failures, a burn rate); then the ones that only ask the agent to wait (backoff, concurrency,
calls and tokens per minute), which answer 429 with a wait the SDKs honour by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from spendbrake.money import format_usd

RATE_WINDOW = timedelta(seconds=60)  # calls and tokens per minute: a sliding 60 s window
BURN_WINDOW = timedelta(seconds=60)  # spend per minute: the last 60 s
MAX_WAIT_S = 60  # SDKs ignore longer waits; a longer brake is a suspension


@dataclass(frozen=True)
class Brakes:
    """One agent's brake settings. Loop and backoff brakes are on by default; ``None``: off."""

    loop_repeats: int | None = 8  # the Nth identical request within the window trips it
    loop_window_s: int = 60
    backoff_steps_s: tuple[int, ...] = (1, 5)  # waits after the 1st, 2nd... failure; then suspend
    calls_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    burn_nanos_per_min: int | None = None
    # Wait instead: a call the rate or backoff brakes would answer 429 is held back until it may
    # go (up to MAX_WAIT_S), an async wait that blocks no other agent.
    throttle: bool = False


NO_BRAKES = Brakes(loop_repeats=None, backoff_steps_s=())


@dataclass(frozen=True)
class Suspension:
    reason: str  # the code of the brake that suspended: loop_detected, agent_suspended...
    detail: str
    since: datetime


@dataclass(frozen=True)
class Activity:
    """What the ledger knows of an agent when a call arrives (since it was last resumed)."""

    suspension: Suspension | None = None
    same_request_recently: int = 0  # earlier calls with this request's fingerprint, in the window
    consecutive_failures: int = 0  # upstream failures since the last success
    last_failure_at: datetime | None = None
    calls_last_minute: int = 0  # forwarded calls started in the rate window
    oldest_call_last_minute: datetime | None = None
    tokens_last_minute: int = 0  # estimated while held, actual once settled
    in_flight: int = 0  # held, not settled
    spent_last_minute: int = 0  # nanos: actual costs of the calls settled in the burn window


@dataclass(frozen=True)
class Brake:
    code: str  # a refusal code of DESIGN.md
    detail: str  # which brake, with the figures, for the message
    retry_after_s: int | None = None
    suspends: bool = False  # the agent stays suspended until a person resumes it


def check(
    activity: Activity, brakes: Brakes, *, tokens: int, nanos: int, now: datetime
) -> Brake | None:
    """Whether a call of ``tokens`` (estimated) and ``nanos`` (its hold) may go now."""
    for rule in (
        _suspended,
        _loop,
        _failures,
        _burn,
        _concurrency,
        _calls_per_minute,
        _tokens_per_minute,
    ):
        if brake := rule(activity, brakes, tokens, nanos, now):
            return brake
    return None


def _suspended(a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime) -> Brake | None:
    if a.suspension is None:
        return None
    return Brake("agent_suspended", f"suspended since {_when(a.suspension.since)}: "
                 f"{a.suspension.detail}")  # fmt: skip


def _loop(a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime) -> Brake | None:
    if b.loop_repeats is None or a.same_request_recently + 1 < b.loop_repeats:
        return None
    return Brake(
        "loop_detected",
        f"the same request {a.same_request_recently + 1} times within {b.loop_window_s} s "
        f"(the limit is {b.loop_repeats - 1})",
        suspends=True,
    )


def _failures(a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime) -> Brake | None:
    failures, steps = a.consecutive_failures, b.backoff_steps_s
    if failures == 0 or not steps:
        return None
    if failures > len(steps):
        return Brake(
            "agent_suspended",
            f"{failures} upstream failures in a row (after {len(steps)} waits)",
            suspends=True,
        )
    wait = timedelta(seconds=steps[failures - 1])
    since = now - (a.last_failure_at or now)
    if since >= wait:
        return None
    return Brake(
        "backoff",
        f"{failures} upstream failure{'s' if failures > 1 else ''} in a row: wait "
        f"{steps[failures - 1]} s before the next call",
        retry_after_s=_seconds(wait - since),
    )


def _burn(a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime) -> Brake | None:
    # What was spent, not what is held: one call's worst case is no burn rate.
    limit = b.burn_nanos_per_min
    if limit is None or a.spent_last_minute <= limit:
        return None
    return Brake(
        "agent_suspended",
        f"{format_usd(a.spent_last_minute)} spent in the last minute, above the brake's "
        f"{format_usd(limit)} a minute",
        suspends=True,
    )


def _concurrency(a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime) -> Brake | None:
    if b.max_concurrent is None or a.in_flight < b.max_concurrent:
        return None
    return Brake(
        "rate_limited",
        f"{a.in_flight} calls in flight, the most allowed at once is {b.max_concurrent}",
        retry_after_s=1,
    )


def _calls_per_minute(
    a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime
) -> Brake | None:
    if b.calls_per_minute is None or a.calls_last_minute < b.calls_per_minute:
        return None
    return Brake(
        "rate_limited",
        f"{a.calls_last_minute} call{'' if a.calls_last_minute == 1 else 's'} in the last "
        f"minute, the limit is {b.calls_per_minute}",
        retry_after_s=_until_window_frees(a, now),
    )


def _tokens_per_minute(
    a: Activity, b: Brakes, tokens: int, nanos: int, now: datetime
) -> Brake | None:
    limit = b.tokens_per_minute
    if limit is None or a.tokens_last_minute + tokens <= limit:
        return None
    if tokens > limit:
        # It would never fit: waiting cannot help, so say so instead of a retry loop.
        return Brake(
            "rate_limited", f"this call may use {tokens:,} tokens, above {limit:,} a minute"
        )
    return Brake(
        "rate_limited",
        f"{a.tokens_last_minute:,} tokens in the last minute and this call may use "
        f"{tokens:,}, the limit is {limit:,}",
        retry_after_s=_until_window_frees(a, now),
    )


def _until_window_frees(a: Activity, now: datetime) -> int:
    """Until the oldest call of the window leaves it."""
    oldest = a.oldest_call_last_minute or now
    return min(MAX_WAIT_S, _seconds(oldest + RATE_WINDOW - now))


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up, at least one: a client never retries too early."""
    return max(1, int(-(-delta.total_seconds() // 1)))


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
