"""Reading the ledger beside running proxies, without ever taking a lock a hold waits on.

Both back ends are read through a *reader*: ``open_reader`` gives ``ReadOnlyLedger`` for a
SQLite file (SQLite's ``mode=ro``: in WAL a reader never blocks the proxy's writers, and cannot
take the write lock even by mistake) or ``PostgresReader`` for a PostgreSQL database (every
transaction read-only; plain reads take no lock a hold's advisory or row locks wait on). Each
has the ledger's own reads (``day_totals``, ``events``...) and ``snapshot()``, one read
transaction whose connection the queries here take: one set of SQL that both dialects accept
(``"window"`` quoted, no boolean sums, integer sums cast back to integers, ``?`` placeholders,
which ``PostgresReads`` turns into psycopg's).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode

import sqlite_utils

from spendbrake.burn import Point
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_schema import migrations
from spendbrake.ledger_url import LedgerLocation, PostgresUrl
from spendbrake.postgres_ledger import Conn, PostgresLedger
from spendbrake.sqlite_brakes import iso
from spendbrake.sqlite_ledger import BUSY_TIMEOUT_MS, SQLiteLedger


class Rows(Protocol):
    """What a query returns on either back end (a sqlite3 or a psycopg cursor)."""

    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class ReadConn(Protocol):
    """A snapshot's connection: ``execute`` SQL with ``?`` placeholders, as sqlite3 does."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...


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
    def location(self) -> LedgerLocation:
        return self.path

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self.db.conn
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[ReadConn]:
        """One read transaction: every query inside sees the ledger at the same moment."""
        try:
            self.conn.execute("BEGIN")
            yield self.conn
        except sqlite3.Error as e:
            raise LedgerUnavailable(f"cannot read the ledger {self.path}: {e}") from e
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")


_LITERAL = re.compile(r"('(?:[^']|'')*')")


@lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """SQL written for sqlite3 (``?`` placeholders) as psycopg takes it (``%s``): a literal
    ``%`` is doubled, and a ``?`` inside a quoted string stays a question mark."""
    parts = _LITERAL.split(sql.replace("%", "%%"))
    return "".join(part if i % 2 else part.replace("?", "%s") for i, part in enumerate(parts))


class PostgresReads:
    """A PostgreSQL connection inside a snapshot, taking the SQL of this module as is."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        return self.conn.execute(pg_sql(sql), parameters)

    def stream(self, sql: str, parameters: Sequence[Any] = ()) -> Rows:
        """A server-side cursor: rows arrive in batches, never all at once (an export)."""
        cursor = self.conn.cursor(name="spendbrake_export")
        cursor.execute(pg_sql(sql), parameters)
        return cursor


def read_only_url(location: PostgresUrl) -> PostgresUrl:
    """``location`` with every session's transactions read-only (libpq's ``options``)."""
    # Not urlunsplit: it would drop the empty host of postgresql:///db (a local socket).
    base, _, query_text = location.url.partition("?")
    query = parse_qsl(query_text, keep_blank_values=True)
    # An 'options' in the URL overrides PGOPTIONS: keep what either said, and add ours.
    given = [value for key, value in query if key == "options"]
    if not given and (environment := os.environ.get("PGOPTIONS")):
        given = [environment]
    options = " ".join([*given, "-cdefault_transaction_read_only=on"])
    query = [(key, value) for key, value in query if key != "options"] + [("options", options)]
    return PostgresUrl(f"{base}?{urlencode(query, quote_via=quote)}")


class PostgresReader(PostgresLedger):
    """The PostgreSQL ledger's reads on connections that cannot write: every transaction is
    read-only (``default_transaction_read_only``), and no read takes an advisory or row lock,
    so a reader never makes a hold wait. Inside ``snapshot()`` the ledger's own reads on that
    thread run in the snapshot's transaction too (one moment, as in SQLite)."""

    def __init__(self, location: PostgresUrl) -> None:
        read_only = read_only_url(location)
        try:
            # Few connections: the ledger's reads inside a snapshot reuse its connection.
            super().__init__(read_only, owner="read-only", pool_size=2, migrate=False)
        except LedgerUnavailable as e:
            message = str(e).replace(read_only.redacted(), location.redacted())
            raise LedgerUnavailable(message) from e.__cause__
        self.location, self.path = location, location.redacted()
        self._snapshots = threading.local()

    @contextmanager
    def _connection(self) -> Iterator[Conn]:
        conn: Conn | None = getattr(self._snapshots, "conn", None)
        if conn is not None:
            yield conn
            return
        with super()._connection() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[ReadConn]:
        """One read-only transaction that sees the ledger at one moment (repeatable read)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._snapshots.conn = conn
            try:
                yield PostgresReads(conn)
            finally:
                self._snapshots.conn = None


type Reader = ReadOnlyLedger | PostgresReader


def open_reader(location: LedgerLocation) -> Reader:
    """A reader of the ledger at ``location``; it creates and migrates nothing."""
    if isinstance(location, PostgresUrl):
        return PostgresReader(location)
    return ReadOnlyLedger(location)


def spend_points(conn: ReadConn, agent: str, day: str, since: datetime) -> list[Point]:
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


def month_use(conn: ReadConn, agent: str, month: str) -> tuple[int, int]:
    """(spent, held) nanos of the agent's month ("2026-03"), less what resets forgave."""
    row = conn.execute(
        """
        SELECT spent_nanos, held_nanos FROM windows_after_resets
        WHERE scope = 'agent_month' AND name = ? AND period = ?
        """,
        (agent, month),
    ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def run_time_limits(conn: ReadConn, agent: str) -> dict[str, int]:
    """What 'spendbrake limit set' set for the agent: window → limit (0 turns a brake off)."""
    rows = conn.execute('SELECT "window", limit_nanos FROM limits WHERE agent = ?', (agent,))
    return dict(rows.fetchall())


def last_refusal(conn: ReadConn, agent: str, day: str) -> str | None:
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


def spend_by(conn: ReadConn, by: str, since_day: str) -> list[SpendRow]:
    """Calls since a day (the ledger's calendar day), summed per ``GROUPINGS[by]``: the
    biggest spender first, by day in calendar order."""
    columns = ", ".join(column for column, _ in GROUPINGS[by])
    order = "day" if by == "day" else f"spent DESC, {columns}"
    rows = conn.execute(
        f"""
        SELECT {columns},
            SUM(CASE WHEN state <> 'refused' THEN 1 ELSE 0 END),
            SUM(CASE WHEN state = 'refused' THEN 1 ELSE 0 END),
            CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT),
            CAST(COALESCE(SUM(actual_nanos), 0) AS BIGINT) AS spent,
            CAST(SUM(CASE state WHEN 'held' THEN held_nanos ELSE 0 END) AS BIGINT)
        FROM calls WHERE day >= ?
        GROUP BY {columns} ORDER BY {order}
        """,
        (since_day,),
    )
    width = len(GROUPINGS[by])
    return [SpendRow(tuple(row[:width]), *row[width:]) for row in rows]


def rows_of(conn: ReadConn, table: str, since: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """The column names, and every row of ``calls`` (from a day) or ``events`` (from a UTC
    instant, ISO) in the order they were written, as the ledger holds them; streamed."""
    where = {"calls": "day >= ?", "events": "at >= ?"}[table]
    sql, parameters = f"SELECT * FROM {table} WHERE {where} ORDER BY id", (since,)
    if isinstance(conn, PostgresReads):
        cursor = conn.stream(sql, parameters)
    else:
        cursor = conn.execute(sql, parameters)
    return [d[0] for d in cursor.description], iter(cursor)
