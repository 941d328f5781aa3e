"""The ledger reads behind the status page, its JSON API and ``/metrics`` that ``top`` does not
already make: a day's calls and refusals, and its use per model.

Every query is per agent and day, so it runs on the ``(agent, day)`` index however long the
ledger's history is; the agents of a day come from ``day_totals`` (one row each).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spendbrake.ledger_reads import ReadConn
from spendbrake.money import format_usd_exact

TOKEN_KINDS = (
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
)  # the ledger's token columns, each <kind>_tokens
_CALL_COLUMNS = (
    "id",
    "started_at",
    "day",
    "agent",
    "session",
    "provider",
    "endpoint",
    "requested_model",
    "forwarded_model",
    "stream",
    "state",
    "outcome",
    "reason",
    "held_nanos",
    "actual_nanos",
    *(f"{kind}_tokens" for kind in TOKEN_KINDS),
    "settled_at",
)  # not the fingerprint or the owner: nothing a reader of the page needs


@dataclass(frozen=True)
class CallRow:
    """One call as the page and the JSON API show it (a row of ``calls``)."""

    values: dict[str, Any]

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.values["started_at"])

    def as_json(self) -> dict[str, Any]:
        """The row, with its money as exact dollars beside the nanos (as ``export`` writes)."""
        row = dict(self.values)
        row["stream"] = bool(row["stream"])
        row["held_usd"] = format_usd_exact(row["held_nanos"])
        actual = row["actual_nanos"]
        row["actual_usd"] = None if actual is None else format_usd_exact(actual)
        return row


def day_agents(conn: ReadConn, day: str) -> list[str]:
    rows = conn.execute("SELECT agent FROM day_totals WHERE day = ? ORDER BY agent", (day,))
    return [agent for (agent,) in rows]


def recent_calls(
    conn: ReadConn,
    day: str,
    agents: Iterable[str],
    *,
    refused_only: bool = False,
    limit: int = 50,
) -> list[CallRow]:
    """The latest ``limit`` calls of the day among ``agents``, newest first."""
    columns = ", ".join(_CALL_COLUMNS)
    refused = "AND state = 'refused'" if refused_only else ""
    per_agent = []
    for agent in agents:
        cursor = conn.execute(
            f"""
            SELECT {columns} FROM calls WHERE agent = ? AND day = ? {refused}
            ORDER BY id DESC LIMIT ?
            """,
            (agent, day, limit),
        )
        per_agent.append([CallRow(dict(zip(_CALL_COLUMNS, row, strict=True))) for row in cursor])
    newest = heapq.merge(*per_agent, key=lambda row: row.values["id"], reverse=True)
    return list(newest)[:limit]


@dataclass(frozen=True)
class ModelUse:
    """One agent's day with one model: what was forwarded to it and what that cost."""

    agent: str
    provider: str
    model: str  # the model the calls went out with
    calls: int  # forwarded
    spent_nanos: int  # settled calls' actual cost
    held_nanos: int  # calls still in flight
    tokens: dict[str, int]  # TOKEN_KINDS → billed tokens


def model_use(conn: ReadConn, agent: str, day: str) -> list[ModelUse]:
    sums = ", ".join(f"CAST(SUM({kind}_tokens) AS BIGINT)" for kind in TOKEN_KINDS)
    rows = conn.execute(
        f"""
        SELECT provider, forwarded_model, COUNT(*), CAST(COALESCE(SUM(actual_nanos), 0) AS BIGINT),
            CAST(SUM(CASE state WHEN 'held' THEN held_nanos ELSE 0 END) AS BIGINT), {sums}
        FROM calls WHERE agent = ? AND day = ? AND state <> 'refused'
        GROUP BY provider, forwarded_model ORDER BY provider, forwarded_model
        """,
        (agent, day),
    )
    return [
        ModelUse(agent, provider, model, calls, spent, held, _by_kind(kinds))
        for provider, model, calls, spent, held, *kinds in rows
    ]


def _by_kind(tokens: list[int]) -> dict[str, int]:
    return dict(zip(TOKEN_KINDS, tokens, strict=True))


@dataclass(frozen=True)
class RefusalCount:
    agent: str
    provider: str
    model: str  # the model the client asked for
    reason: str  # the refusal code
    count: int


def refusal_counts(conn: ReadConn, agent: str, day: str) -> list[RefusalCount]:
    rows = conn.execute(
        """
        SELECT provider, requested_model, reason, COUNT(*) FROM calls
        WHERE agent = ? AND day = ? AND state = 'refused'
        GROUP BY provider, requested_model, reason ORDER BY reason, provider, requested_model
        """,
        (agent, day),
    )
    return [RefusalCount(agent, *row) for row in rows]
