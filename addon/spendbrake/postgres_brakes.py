"""What the brakes read from and write to the PostgreSQL ledger, inside the hold's transaction.

The same reads and writes as ``sqlite_brakes``, in PostgreSQL's dialect; the decisions
(``brakes.check``) and the run-time settings are shared.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from spendbrake.brakes import BURN_WINDOW, RATE_WINDOW, Activity, Brake, Brakes
from spendbrake.ledger import CallIntent, Event
from spendbrake.sqlite_brakes import BRAKE_ACTOR, activity_of, iso, watches_rates, with_rates

type Conn = psycopg.Connection[tuple[Any, ...]]


def activity(conn: Conn, intent: CallIntent, brakes: Brakes) -> Activity:
    now = intent.started_at
    fingerprint = intent.fingerprint if brakes.loop_repeats is not None else ""
    row = conn.execute(
        """
        SELECT s.reason, s.detail, s.since, a.consecutive_failures, a.last_failure_at,
            a.resumed_at,
            CASE WHEN %(fingerprint)s = '' THEN 0 ELSE (
                SELECT COUNT(*) FROM calls AS c
                WHERE c.agent = x.agent AND c.fingerprint = %(fingerprint)s
                    AND c.started_at >= GREATEST(%(loop_since)s, COALESCE(a.resumed_at, ''))
                    AND c.state <> 'refused'
            ) END
        FROM (SELECT %(agent)s::text AS agent) AS x
        LEFT JOIN suspensions AS s ON s.agent = x.agent
        LEFT JOIN agent_state AS a ON a.agent = x.agent
        """,
        {
            "agent": intent.agent,
            "fingerprint": fingerprint,
            "loop_since": iso(now - timedelta(seconds=brakes.loop_window_s)),
        },
    ).fetchone()
    assert row is not None
    rates, resumed_at = activity_of(row)
    if not watches_rates(brakes):
        return rates
    return _with_rates(conn, rates, intent, resumed_at)


def _with_rates(conn: Conn, base: Activity, intent: CallIntent, resumed_at: str) -> Activity:
    now = intent.started_at
    since_day = (date.fromisoformat(intent.day) - timedelta(days=1)).isoformat()
    row = conn.execute(
        """
        SELECT
            COUNT(*) FILTER (WHERE started_at >= %(rate_since)s AND state <> 'refused'),
            MIN(started_at) FILTER (WHERE started_at >= %(rate_since)s AND state <> 'refused'),
            COALESCE(SUM(CASE state
                WHEN 'held' THEN estimated_input_tokens + estimated_output_tokens
                ELSE input_tokens + output_tokens END)
                FILTER (WHERE started_at >= %(rate_since)s AND state <> 'refused'), 0),
            COALESCE(SUM(actual_nanos)
                FILTER (WHERE started_at >= %(burn_since)s AND state = 'settled'), 0),
            (SELECT COUNT(*) FROM calls WHERE state = 'held' AND agent = %(agent)s)
        FROM calls
        WHERE agent = %(agent)s AND day >= %(since_day)s
            AND started_at >= LEAST(%(rate_since)s, %(burn_since)s)
        """,
        {
            "agent": intent.agent,
            "since_day": since_day,
            "rate_since": iso(now - RATE_WINDOW),
            "burn_since": max(iso(now - BURN_WINDOW), resumed_at),
        },
    ).fetchone()
    assert row is not None
    calls, oldest, tokens, spent, in_flight = row
    return with_rates(base, calls, oldest, int(tokens), in_flight, int(spent))


def suspend(conn: Conn, agent: str, brake: Brake, at: datetime) -> None:
    conn.execute(
        """
        INSERT INTO suspensions (agent, reason, detail, since) VALUES (%s, %s, %s, %s)
        ON CONFLICT (agent) DO NOTHING
        """,
        (agent, brake.code, brake.detail, iso(at)),
    )
    record(conn, agent, "suspended", f"{brake.code}: {brake.detail}", BRAKE_ACTOR, at)


def resume(conn: Conn, agent: str, actor: str, at: datetime) -> bool:
    lifted = conn.execute("DELETE FROM suspensions WHERE agent = %s RETURNING reason", (agent,))
    reasons = [reason for (reason,) in lifted.fetchall()]
    conn.execute(
        """
        INSERT INTO agent_state (agent, resumed_at) VALUES (%s, %s)
        ON CONFLICT (agent) DO UPDATE SET resumed_at = excluded.resumed_at,
            consecutive_failures = 0
        """,
        (agent, iso(at)),
    )
    if reasons:
        record(conn, agent, "resumed", f"lifted a suspension for {reasons[0]}", actor, at)
    return bool(reasons)


def record(conn: Conn, agent: str, kind: str, detail: str, actor: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO events (at, agent, kind, detail, actor) VALUES (%s, %s, %s, %s, %s)",
        (iso(at), agent, kind, detail, actor),
    )


def suspended_agents(conn: Conn) -> dict[str, str]:
    rows = conn.execute("SELECT agent, reason FROM suspensions ORDER BY agent").fetchall()
    return {agent: reason for agent, reason in rows}


def events(conn: Conn, agent: str | None, limit: int) -> list[Event]:
    rows = conn.execute(
        """
        SELECT at, agent, kind, detail, actor FROM events
        WHERE %(agent)s::text IS NULL OR agent = %(agent)s ORDER BY id DESC LIMIT %(limit)s
        """,
        {"agent": agent, "limit": limit},
    ).fetchall()
    return [
        Event(datetime.fromisoformat(at), who, kind, detail, actor)
        for at, who, kind, detail, actor in rows
    ]
