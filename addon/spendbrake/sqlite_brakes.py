"""What the brakes read from and write to the SQLite ledger, inside the hold's transaction.

Reads only what the agent's enabled brakes need, so a call pays for the brakes it is under:
the suspension and failure run (one row each), the count of its request's fingerprint (an
index range), and the rate window when a rate, concurrency or burn brake is set.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from spendbrake.brakes import BURN_WINDOW, RATE_WINDOW, Activity, Brake, Brakes, Suspension
from spendbrake.ledger import CallIntent, Event

BRAKE_ACTOR = "spendbrake"

# Brake settings 'spendbrake limit set' can change at run time, kept in the limits table like the
# money windows (0 turns a brake off).
BRAKE_SETTINGS = (
    "calls_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "loop_repeats",
    "burn_usd_per_min",  # in nanos, like the money windows
)


def with_run_time_settings(brakes: Brakes, set_now: dict[str, int]) -> Brakes:
    """The configured brakes with what 'limit set' changed (the agent's rows of limits)."""
    if not set_now.keys() & set(BRAKE_SETTINGS):
        return brakes

    def setting(name: str, configured: int | None) -> int | None:
        return (set_now[name] or None) if name in set_now else configured  # 0: off

    return replace(
        brakes,
        calls_per_minute=setting("calls_per_minute", brakes.calls_per_minute),
        tokens_per_minute=setting("tokens_per_minute", brakes.tokens_per_minute),
        max_concurrent=setting("max_concurrent", brakes.max_concurrent),
        loop_repeats=setting("loop_repeats", brakes.loop_repeats),
        burn_nanos_per_min=setting("burn_usd_per_min", brakes.burn_nanos_per_min),
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def activity(conn: sqlite3.Connection, intent: CallIntent, brakes: Brakes) -> Activity:
    agent, now = intent.agent, intent.started_at
    fingerprint = intent.fingerprint if brakes.loop_repeats is not None else ""
    # One statement: this runs on every hold, and each statement costs.
    row = conn.execute(
        """
        SELECT s.reason, s.detail, s.since, a.consecutive_failures, a.last_failure_at,
            a.resumed_at,
            CASE WHEN :fingerprint = '' THEN 0 ELSE (
                SELECT COUNT(*) FROM calls AS c
                WHERE c.agent = x.agent AND c.fingerprint = :fingerprint
                    AND c.started_at >= MAX(:loop_since, COALESCE(a.resumed_at, ''))
                    -- an SDK retrying a refused call is not looping
                    AND c.state <> 'refused'
            ) END
        FROM (SELECT :agent AS agent) AS x
        LEFT JOIN suspensions AS s ON s.agent = x.agent
        LEFT JOIN agent_state AS a ON a.agent = x.agent
        """,
        {
            "agent": agent,
            "fingerprint": fingerprint,
            "loop_since": iso(now - timedelta(seconds=brakes.loop_window_s)),
        },
    ).fetchone()
    rates, resumed_at = activity_of(row)
    if not watches_rates(brakes):
        return rates
    return _with_rates(conn, rates, intent, resumed_at)


def activity_of(row: tuple[Any, ...]) -> tuple[Activity, str]:
    """The agent's suspension, repeats and failure run, from the row ``activity`` reads on
    either ledger (suspension reason, detail, since; failures, last failure, resumed at; the
    count of the same request); and when it was last resumed ("" for never)."""
    reason, detail, since, failures, last_failure_at, resumed_at, same = row
    suspension = Suspension(reason, detail, datetime.fromisoformat(since)) if reason else None
    found = Activity(
        suspension=suspension,
        same_request_recently=same,
        consecutive_failures=failures or 0,
        last_failure_at=_parse(last_failure_at),
    )
    return found, resumed_at or ""


def watches_rates(brakes: Brakes) -> bool:
    """Whether a brake needs the agent's last minute: rates, concurrency or burn."""
    return not (
        brakes.calls_per_minute is None
        and brakes.tokens_per_minute is None
        and brakes.max_concurrent is None
        and brakes.burn_nanos_per_min is None
    )


def with_rates(
    base: Activity, calls: int, oldest: str | None, tokens: int, in_flight: int, spent: int
) -> Activity:
    """``base`` with the agent's last minute, as either ledger counted it."""
    return replace(
        base,
        calls_last_minute=calls,
        oldest_call_last_minute=_parse(oldest),
        tokens_last_minute=tokens,
        in_flight=in_flight,
        spent_last_minute=spent,
    )


def _with_rates(
    conn: sqlite3.Connection, base: Activity, intent: CallIntent, resumed_at: str
) -> Activity:
    now = intent.started_at
    # The (agent, day) index finds the agent's calls of today and yesterday (a minute can
    # straddle a local midnight); started_at then picks the window. An index of its own on
    # started_at would cost every call's insert more than it saves these few.
    since_day = (date.fromisoformat(intent.day) - timedelta(days=1)).isoformat()
    calls, oldest, tokens = conn.execute(
        """
        SELECT COUNT(*), MIN(started_at), COALESCE(SUM(CASE state
            WHEN 'held' THEN estimated_input_tokens + estimated_output_tokens
            ELSE input_tokens + output_tokens END), 0)
        FROM calls
        WHERE agent = ? AND day >= ? AND started_at >= ? AND state <> 'refused'
        """,
        (intent.agent, since_day, iso(now - RATE_WINDOW)),
    ).fetchone()
    (spent,) = conn.execute(
        """
        SELECT COALESCE(SUM(actual_nanos), 0)
        FROM calls
        WHERE agent = ? AND day >= ? AND started_at >= ? AND state = 'settled'
        """,
        (intent.agent, since_day, max(iso(now - BURN_WINDOW), resumed_at)),
    ).fetchone()
    (in_flight,) = conn.execute(
        "SELECT COUNT(*) FROM calls WHERE state = 'held' AND agent = ?", (intent.agent,)
    ).fetchone()
    return with_rates(base, calls, oldest, tokens, in_flight, spent)


def suspend(conn: sqlite3.Connection, agent: str, brake: Brake, at: datetime) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO suspensions (agent, reason, detail, since) VALUES (?, ?, ?, ?)",
        (agent, brake.code, brake.detail, iso(at)),
    )
    record(conn, agent, "suspended", f"{brake.code}: {brake.detail}", BRAKE_ACTOR, at)


def resume(conn: sqlite3.Connection, agent: str, actor: str, at: datetime) -> bool:
    lifted = conn.execute("DELETE FROM suspensions WHERE agent = ? RETURNING reason", (agent,))
    reasons = [reason for (reason,) in lifted]
    # Whatever led to the suspension starts over: the loop and burn windows, the failure run.
    conn.execute(
        """
        INSERT INTO agent_state (agent, resumed_at) VALUES (?, ?)
        ON CONFLICT (agent) DO UPDATE SET resumed_at = excluded.resumed_at,
            consecutive_failures = 0
        """,
        (agent, iso(at)),
    )
    if reasons:
        record(conn, agent, "resumed", f"lifted a suspension for {reasons[0]}", actor, at)
    return bool(reasons)


def record(
    conn: sqlite3.Connection, agent: str, kind: str, detail: str, actor: str, at: datetime
) -> None:
    conn.execute(
        "INSERT INTO events (at, agent, kind, detail, actor) VALUES (?, ?, ?, ?, ?)",
        (iso(at), agent, kind, detail, actor),
    )


def suspended_agents(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT agent, reason FROM suspensions ORDER BY agent"))


def events(conn: sqlite3.Connection, agent: str | None, limit: int) -> list[Event]:
    rows = conn.execute(
        """
        SELECT at, agent, kind, detail, actor FROM events
        WHERE ? IS NULL OR agent = ? ORDER BY id DESC LIMIT ?
        """,
        (agent, agent, limit),
    )
    return [
        Event(datetime.fromisoformat(at), who, kind, detail, actor)
        for at, who, kind, detail, actor in rows
    ]
