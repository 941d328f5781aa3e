"""The SQLite ledger: one file, WAL, shared safely by several proxy processes on one host.

Every hold is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before the window is
read, so two processes can never both see room for the same last cent. Daily totals are kept in
their own table, updated in the same transactions as the call rows, so a hold costs the same on
the millionth call of the day as on the first.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from spendbrake.ledger import (
    CallIntent,
    DayTotals,
    EstimateAccuracy,
    HoldGranted,
    HoldRefused,
    LedgerBusy,
    LedgerUnavailable,
    Settlement,
)
from spendbrake.processes import current_owner, owner_is_alive

BUSY_TIMEOUT_MS = 2_000

migrations = Migrations("spendbrake")


@migrations()
def m001_calls_and_totals(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            day TEXT NOT NULL,
            agent TEXT NOT NULL,
            session TEXT NOT NULL,
            provider TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            requested_model TEXT NOT NULL,
            forwarded_model TEXT NOT NULL,
            stream INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            held_nanos INTEGER NOT NULL,  -- for a refused call: what its hold would have been
            actual_nanos INTEGER,
            state TEXT NOT NULL CHECK (state IN ('held', 'settled', 'refused')),
            outcome TEXT,
            reason TEXT NOT NULL DEFAULT '',
            owner TEXT NOT NULL,
            settled_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX calls_agent_day ON calls (agent, day)")
    db.execute("CREATE INDEX calls_held ON calls (state) WHERE state = 'held'")
    db.execute(
        """
        CREATE TABLE day_totals (
            agent TEXT NOT NULL,
            day TEXT NOT NULL,
            spent_nanos INTEGER NOT NULL DEFAULT 0,
            held_nanos INTEGER NOT NULL DEFAULT 0,
            calls INTEGER NOT NULL DEFAULT 0,
            blocked INTEGER NOT NULL DEFAULT 0,
            budget_blocked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (agent, day)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE limits (
            agent TEXT NOT NULL,
            window TEXT NOT NULL,
            limit_nanos INTEGER NOT NULL,
            set_at TEXT NOT NULL,
            PRIMARY KEY (agent, window)
        )
        """
    )


@migrations()
def m002_one_hour_cache_writes(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE calls ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0")


@migrations()
def m003_estimates_beside_actuals(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE calls ADD COLUMN estimated_input_tokens INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE calls ADD COLUMN estimated_output_tokens INTEGER NOT NULL DEFAULT 0")


@migrations()
def m004_day_totals_kept_by_triggers(db: sqlite_utils.Database) -> None:
    """day_totals is the sum of calls, kept by the database itself: every statement that writes
    a call also moves its day's totals, in the same statement, so no code path can forget to,
    and a settlement is one statement instead of four."""
    db.execute(
        """
        CREATE TRIGGER calls_insert_moves_day_totals AFTER INSERT ON calls
        BEGIN
            INSERT INTO day_totals (agent, day, spent_nanos, held_nanos, calls, blocked,
                budget_blocked)
            VALUES (
                NEW.agent,
                NEW.day,
                CASE NEW.state WHEN 'settled' THEN NEW.actual_nanos ELSE 0 END,
                CASE NEW.state WHEN 'held' THEN NEW.held_nanos ELSE 0 END,
                NEW.state <> 'refused',
                NEW.state = 'refused',
                NEW.state = 'refused' AND NEW.reason = 'daily_budget_exceeded'
            )
            ON CONFLICT (agent, day) DO UPDATE SET
                spent_nanos = spent_nanos + excluded.spent_nanos,
                held_nanos = held_nanos + excluded.held_nanos,
                calls = calls + excluded.calls,
                blocked = blocked + excluded.blocked,
                budget_blocked = budget_blocked + excluded.budget_blocked;
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER calls_settle_moves_day_totals AFTER UPDATE OF state ON calls
        WHEN OLD.state = 'held' AND NEW.state = 'settled'
        BEGIN
            UPDATE day_totals SET
                held_nanos = held_nanos - OLD.held_nanos,
                spent_nanos = spent_nanos + NEW.actual_nanos
            WHERE agent = NEW.agent AND day = NEW.day;
        END
        """
    )
    # Any other change to a call's money would leave day_totals wrong: a call is held once and
    # settled once, and then it is final.
    db.execute(
        """
        CREATE TRIGGER calls_money_is_final BEFORE UPDATE OF state, held_nanos, actual_nanos,
            agent, day ON calls
        WHEN NOT (OLD.state = 'held' AND NEW.state = 'settled')
            OR NEW.held_nanos IS NOT OLD.held_nanos
            OR NEW.agent IS NOT OLD.agent
            OR NEW.day IS NOT OLD.day
            OR NEW.actual_nanos IS NULL
        BEGIN
            SELECT RAISE(ABORT, 'a call is held once and settled once; its money is then final');
        END
        """
    )


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switching to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (no busy
    handler) while another connection is mid-switch: retry for the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class SQLiteLedger:
    """``spendbrake.ledger.Ledger`` on one SQLite file. One instance per thread."""

    def __init__(self, path: Path, *, owner: str | None = None) -> None:
        self.path = path
        self.owner = owner or current_owner()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # Created 0600: the ledger says who spent what; other users have no business here.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            conn.isolation_level = None  # transactions are begun explicitly, never implicitly
            self.db = sqlite_utils.Database(conn)
            _enable_wal(conn)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # One process migrates under the write lock; others starting at the same moment
            # wait for it, then find nothing pending (sqlite-utils' atomic() nests as a
            # savepoint inside this transaction).
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrations.apply(self.db)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as e:
            raise LedgerUnavailable(f"cannot open the ledger {path}: {e}") from e

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock first; SQLite errors become LedgerUnavailable,
        or LedgerBusy when another writer holds the lock and nothing was written."""
        conn = self.db.conn
        with self._lock_errors():
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LedgerUnavailable(f"ledger {self.path} write failed: {e}") from e
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _lock_errors(self) -> Iterator[None]:
        """Around a statement that either takes the write lock or writes nothing."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise LedgerBusy(f"ledger {self.path} is locked by another writer: {e}") from e
            raise LedgerUnavailable(f"ledger {self.path} is not writable: {e}") from e
        except sqlite3.Error as e:
            raise LedgerUnavailable(f"ledger {self.path} is not writable: {e}") from e

    # -- the Ledger interface ------------------------------------------------------------------

    def hold(
        self, intent: CallIntent, amount_nanos: int, configured_limit: int
    ) -> HoldGranted | HoldRefused:
        if amount_nanos < 0:
            raise ValueError("a hold cannot be negative")
        with self._immediate() as conn:
            totals = self._totals(conn, intent.agent, intent.day, configured_limit)
            if totals.spent_nanos + totals.held_nanos + amount_nanos > totals.limit_nanos:
                call_id = self._insert_call(
                    conn, intent, amount_nanos, "refused", "daily_budget_exceeded"
                )
                return HoldRefused(call_id=call_id, requested_nanos=amount_nanos, totals=totals)
            call_id = self._insert_call(conn, intent, amount_nanos, "held", "")
            after = replace(
                totals, held_nanos=totals.held_nanos + amount_nanos, calls=totals.calls + 1
            )
            return HoldGranted(call_id=call_id, held_nanos=amount_nanos, totals=after)

    def refuse(self, intent: CallIntent, reason: str) -> int:
        with self._immediate() as conn:
            return self._insert_call(conn, intent, 0, "refused", reason)

    def settle(self, call_id: int, settlement: Settlement, configured_limit: int) -> DayTotals:
        if settlement.actual_nanos < 0:
            raise ValueError("an actual cost cannot be negative")
        conn, t = self.db.conn, settlement.tokens
        # One statement, so one transaction of its own; a trigger moves the day's totals with it.
        with self._lock_errors():
            settled = conn.execute(
                """
                UPDATE calls SET state = 'settled', actual_nanos = ?, outcome = ?, reason = ?,
                    input_tokens = ?, cached_input_tokens = ?, cache_write_tokens = ?,
                    cache_write_1h_tokens = ?, output_tokens = ?, reasoning_tokens = ?,
                    settled_at = ?
                WHERE id = ? AND state = 'held'
                RETURNING agent, day
                """,
                (
                    settlement.actual_nanos,
                    settlement.outcome,
                    settlement.reason,
                    t.input_tokens,
                    t.cached_input_tokens,
                    t.cache_write_tokens,
                    t.cache_write_1h_tokens,
                    t.output_tokens,
                    t.reasoning_tokens,
                    _utc_iso(datetime.now(UTC)),
                    call_id,
                ),
            ).fetchall()  # to the end: the statement, and its lock, finish there
        if not settled:  # settled before (a call is settled once), or unknown
            settled = conn.execute(
                "SELECT agent, day FROM calls WHERE id = ?", (call_id,)
            ).fetchall()
            if not settled:
                raise KeyError(f"no call {call_id} in the ledger")
        [(agent, day)] = settled
        return self._totals(conn, agent, day, configured_limit)

    def day_totals(self, agent: str, day: str, configured_limit: int) -> DayTotals:
        return self._totals(self.db.conn, agent, day, configured_limit)

    def set_daily_limit(self, agent: str, limit_nanos: int) -> None:
        with self._immediate() as conn:
            conn.execute(
                """
                INSERT INTO limits (agent, window, limit_nanos, set_at) VALUES (?, 'daily', ?, ?)
                ON CONFLICT (agent, window) DO UPDATE SET
                    limit_nanos = excluded.limit_nanos, set_at = excluded.set_at
                """,
                (agent, limit_nanos, _utc_iso(datetime.now(UTC))),
            )

    def daily_limit_overrides(self) -> dict[str, int]:
        rows = self.db.conn.execute("SELECT agent, limit_nanos FROM limits WHERE window = 'daily'")
        return {agent: limit for agent, limit in rows}

    def agents_with_activity(self, day: str) -> list[str]:
        rows = self.db.conn.execute(
            "SELECT agent FROM day_totals WHERE day = ? ORDER BY agent", (day,)
        )
        return [agent for (agent,) in rows]

    def estimate_accuracy(self, since_day: str) -> list[EstimateAccuracy]:
        rows = self.db.conn.execute(
            """
            SELECT provider, forwarded_model, COUNT(*), SUM(held_nanos), SUM(actual_nanos),
                SUM(estimated_input_tokens), SUM(input_tokens),
                MAX(CAST(input_tokens AS REAL) / MAX(estimated_input_tokens, 1))
            FROM calls
            WHERE state = 'settled' AND outcome = 'ok' AND day >= ? AND estimated_input_tokens > 0
            GROUP BY provider, forwarded_model
            ORDER BY provider, forwarded_model
            """,
            (since_day,),
        )
        return [EstimateAccuracy(*row) for row in rows]

    def recover_orphaned_holds(self) -> int:
        with self._immediate() as conn:
            owners = [
                o for (o,) in conn.execute("SELECT DISTINCT owner FROM calls WHERE state = 'held'")
            ]
            dead = [o for o in owners if o != self.owner and not owner_is_alive(o)]
            return sum(self._settle_held_at_hold(conn, owner, "crashed") for owner in dead)

    def settle_own_holds(self, outcome: str) -> int:
        """At shutdown: whatever this process still holds is settled at its held amount."""
        with self._immediate() as conn:
            return self._settle_held_at_hold(conn, self.owner, outcome)

    def never_wait(self) -> None:
        """For a connection used on the event loop: fail at once with LedgerBusy instead of
        waiting for another process's lock, and never run a WAL checkpoint (4-9 ms) inline;
        ``checkpoint`` on another connection does that."""
        self.db.execute("PRAGMA busy_timeout=0")
        self.db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Move the WAL's pages into the database without waiting for readers or writers."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self.db.close()

    # -- helpers -------------------------------------------------------------------------------

    def _settle_held_at_hold(self, conn: sqlite3.Connection, owner: str, outcome: str) -> int:
        cursor = conn.execute(
            """
            UPDATE calls SET state = 'settled', actual_nanos = held_nanos, outcome = ?,
                reason = 'settled at its hold: the proxy ended before the call did',
                settled_at = ?
            WHERE state = 'held' AND owner = ?
            """,
            (outcome, _utc_iso(datetime.now(UTC)), owner),
        )
        return cursor.rowcount

    def _insert_call(
        self, conn: sqlite3.Connection, intent: CallIntent, held: int, state: str, reason: str
    ) -> int:
        cursor = conn.execute(
            """
            INSERT INTO calls (started_at, day, agent, session, provider, endpoint, requested_model,
                forwarded_model, stream, held_nanos, state, outcome, reason, owner,
                estimated_input_tokens, estimated_output_tokens)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                _utc_iso(intent.started_at),
                intent.day,
                intent.agent,
                intent.session,
                intent.provider,
                intent.endpoint,
                intent.requested_model,
                intent.forwarded_model,
                int(intent.stream),
                held,
                state,
                "refused" if state == "refused" else None,
                reason,
                self.owner,
                intent.estimated_input_tokens,
                intent.estimated_output_tokens,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def _totals(conn: sqlite3.Connection, agent: str, day: str, configured_limit: int) -> DayTotals:
        row = conn.execute(
            """
            SELECT t.spent_nanos, t.held_nanos, t.calls, t.blocked, t.budget_blocked,
                l.limit_nanos
            FROM (SELECT ? AS agent) AS a
            LEFT JOIN day_totals AS t ON t.agent = a.agent AND t.day = ?
            LEFT JOIN limits AS l ON l.agent = a.agent AND l.window = 'daily'
            """,
            (agent, day),
        ).fetchone()
        spent, held, calls, blocked, budget_blocked, override = row
        limit = override if override is not None else configured_limit
        return DayTotals(
            agent=agent,
            day=day,
            spent_nanos=spent or 0,
            held_nanos=held or 0,
            limit_nanos=limit,
            calls=calls or 0,
            blocked=blocked or 0,
            budget_blocked=budget_blocked or 0,
        )
