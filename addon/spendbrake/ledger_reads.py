"""Reading the SQLite ledger beside a running proxy, without ever taking its write lock.

``ReadOnlyLedger`` opens the file read-only (SQLite's ``mode=ro``): in WAL a reader never blocks
the proxy's writers, and a read-only connection cannot take the write lock even by mistake. The
queries here take that connection and answer what ``top``, ``report`` and ``export`` show.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from spendbrake.burn import Point
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_schema import migrations
from spendbrake.sqlite_brakes import iso
from spendbrake.sqlite_ledger import BUSY_TIMEOUT_MS, SQLiteLedger


class ReadOnlyLedger(SQLiteLedger):
    """The SQLite ledger's reads (``day_totals``, ``held_back``, ``suspended_agents``...) on a
    read-only connection: the same queries the proxy's own ledger runs, and any write fails."""

    def __init__(self, path: Path) -> None:
        # Not SQLiteLedger.__init__: that one migrates under the write lock.
        self.path, self.owner = path, "read-only"
        if not path.is_file():
            raise LedgerUnavailable(
                f"no ledger at {path}: start the proxy (spendbrake up) or create it with "
                "spendbrake migrate"
            )
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
            conn.isolation_level = None  # read transactions are begun explicitly (snapshot)
            self.db = sqlite_utils.Database(conn)
            pending = migrations.pending(self.db)
        except sqlite3.Error as e:
            raise LedgerUnavailable(f"cannot read the ledger {path}: {e}") from e
        if pending:
            self.db.close()
            raise LedgerUnavailable(
                f"the ledger {path} was written by an older spendbrake; bring it up to date "
                "with spendbrake migrate (the proxy does so when it starts)"
            )

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self.db.conn
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the ledger at the same moment."""
        try:
            self.conn.execute("BEGIN")
            yield self.conn
        except sqlite3.Error as e:
            raise LedgerUnavailable(f"cannot read the ledger {self.path}: {e}") from e
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")


def spend_points(conn: sqlite3.Connection, agent: str, day: str, since: datetime) -> list[Point]:
    """The agent's settled calls started since ``since``: (start, actual nanos), oldest first."""
    # The (agent, day) index finds today's and yesterday's calls (the window may straddle a
    # local midnight); started_at then picks the window.
    yesterday = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    rows = conn.execute(
        """
        SELECT started_at, actual_nanos FROM calls
        WHERE agent = ? AND day >= ? AND started_at >= ? AND state = 'settled'
        ORDER BY started_at
        """,
        (agent, yesterday, iso(since)),
    )
    return [(datetime.fromisoformat(at), nanos) for at, nanos in rows]


def month_use(conn: sqlite3.Connection, agent: str, month: str) -> tuple[int, int]:
    """(spent, held) nanos of the agent's month ("2026-03"), less what resets forgave."""
    row = conn.execute(
        """
        SELECT spent_nanos, held_nanos FROM windows_after_resets
        WHERE scope = 'agent_month' AND name = ? AND period = ?
        """,
        (agent, month),
    ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def run_time_limits(conn: sqlite3.Connection, agent: str) -> dict[str, int]:
    """What 'spendbrake limit set' set for the agent: window → limit (0 turns a brake off)."""
    rows = conn.execute("SELECT window, limit_nanos FROM limits WHERE agent = ?", (agent,))
    return dict(rows.fetchall())


def last_refusal(conn: sqlite3.Connection, agent: str, day: str) -> str | None:
    """The reason code of the agent's latest refused call of the day."""
    row = conn.execute(
        """
        SELECT reason FROM calls WHERE agent = ? AND day = ? AND state = 'refused'
        ORDER BY id DESC LIMIT 1
        """,
        (agent, day),
    ).fetchone()
    return row[0] if row else None


# report --by: the columns a row is keyed by, and what the user reads above them.
GROUPINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "agent": (("agent", "agent"),),
    "model": (("provider", "provider"), ("forwarded_model", "model")),
    "day": (("day", "day"),),
    "session": (("agent", "agent"), ("session", "session")),
}


@dataclass(frozen=True)
class SpendRow:
    key: tuple[str, ...]  # the GROUPINGS columns' values
    calls: int  # forwarded
    blocked: int  # refused
    input_tokens: int
    output_tokens: int
    spent_nanos: int  # actual costs of settled calls
    in_flight_nanos: int  # holds of calls still in flight


def spend_by(conn: sqlite3.Connection, by: str, since_day: str) -> list[SpendRow]:
    """Calls since a day (the ledger's calendar day), summed per ``GROUPINGS[by]``: the
    biggest spender first, by day in calendar order."""
    columns = ", ".join(column for column, _ in GROUPINGS[by])
    order = "day" if by == "day" else f"spent DESC, {columns}"
    rows = conn.execute(
        f"""
        SELECT {columns}, SUM(state <> 'refused'), SUM(state = 'refused'),
            SUM(input_tokens), SUM(output_tokens), COALESCE(SUM(actual_nanos), 0) AS spent,
            SUM(CASE state WHEN 'held' THEN held_nanos ELSE 0 END)
        FROM calls WHERE day >= ?
        GROUP BY {columns} ORDER BY {order}
        """,
        (since_day,),
    )
    width = len(GROUPINGS[by])
    return [SpendRow(tuple(row[:width]), *row[width:]) for row in rows]


def rows_of(
    conn: sqlite3.Connection, table: str, since: str
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """The column names, and every row of ``calls`` (from a day) or ``events`` (from a UTC
    instant, ISO) in the order they were written, as the ledger holds them; streamed."""
    where = {"calls": "day >= ?", "events": "at >= ?"}[table]
    cursor = conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id", (since,))
    return [d[0] for d in cursor.description], iter(cursor)
