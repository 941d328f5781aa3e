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
    NO_MORE_LIMITS,
    WINDOWS,
    CallIntent,
    DayTotals,
    EstimateAccuracy,
    HoldGranted,
    HoldRefused,
    LedgerBusy,
    LedgerUnavailable,
    Limits,
    Settlement,
    WindowUse,
)
from spendbrake.processes import current_owner, owner_is_alive

BUSY_TIMEOUT_MS = 2_000

# The refusal code a call is recorded with when a window has no room for it.
REFUSAL_OF_WINDOW = {
    "daily": "daily_budget_exceeded",
    "group_daily": "daily_budget_exceeded",
    "monthly": "monthly_budget_exceeded",
    "group_monthly": "monthly_budget_exceeded",
    "session_usd": "session_budget_exceeded",
    "session_tokens": "session_tokens_exceeded",
}

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


@migrations()
def m005_monthly_group_and_session_windows(db: sqlite_utils.Database) -> None:
    """The windows besides the agent's day: the agent's month, its group's day and month, and
    its session (money and tokens), kept like day_totals by triggers on calls."""
    db.execute("ALTER TABLE calls ADD COLUMN grp TEXT NOT NULL DEFAULT ''")
    db.execute(
        """
        CREATE TABLE window_totals (
            scope TEXT NOT NULL,  -- agent_month, group_day, group_month or session
            name TEXT NOT NULL,  -- the agent, the group, or "AGENT/SESSION"
            period TEXT NOT NULL,  -- "2026-11-22", "2026-11", or "" (a session has no end)
            spent_nanos INTEGER NOT NULL DEFAULT 0,
            held_nanos INTEGER NOT NULL DEFAULT 0,
            spent_tokens INTEGER NOT NULL DEFAULT 0,
            held_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, name, period)
        )
        """
    )
    windows_of_new = """
        SELECT 'agent_month' AS scope, NEW.agent AS name, substr(NEW.day, 1, 7) AS period
        UNION ALL SELECT 'session', NEW.agent || '/' || NEW.session, ''
        UNION ALL SELECT 'group_day', NEW.grp, NEW.day WHERE NEW.grp <> ''
        UNION ALL SELECT 'group_month', NEW.grp, substr(NEW.day, 1, 7) WHERE NEW.grp <> ''
    """
    db.execute(
        f"""
        CREATE TRIGGER calls_insert_moves_windows AFTER INSERT ON calls
        WHEN NEW.state <> 'refused'
        BEGIN
            INSERT INTO window_totals (scope, name, period, spent_nanos, held_nanos,
                spent_tokens, held_tokens)
            SELECT w.scope, w.name, w.period,
                CASE NEW.state WHEN 'settled' THEN NEW.actual_nanos ELSE 0 END,
                CASE NEW.state WHEN 'held' THEN NEW.held_nanos ELSE 0 END,
                CASE NEW.state WHEN 'settled' THEN NEW.input_tokens + NEW.output_tokens ELSE 0 END,
                CASE NEW.state WHEN 'held'
                    THEN NEW.estimated_input_tokens + NEW.estimated_output_tokens ELSE 0 END
            FROM ({windows_of_new}) AS w WHERE true
            ON CONFLICT (scope, name, period) DO UPDATE SET
                spent_nanos = spent_nanos + excluded.spent_nanos,
                held_nanos = held_nanos + excluded.held_nanos,
                spent_tokens = spent_tokens + excluded.spent_tokens,
                held_tokens = held_tokens + excluded.held_tokens;
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER calls_settle_moves_windows AFTER UPDATE OF state ON calls
        WHEN OLD.state = 'held' AND NEW.state = 'settled'
        BEGIN
            UPDATE window_totals SET
                held_nanos = held_nanos - OLD.held_nanos,
                spent_nanos = spent_nanos + NEW.actual_nanos,
                held_tokens = held_tokens
                    - OLD.estimated_input_tokens - OLD.estimated_output_tokens,
                spent_tokens = spent_tokens + NEW.input_tokens + NEW.output_tokens
            WHERE (scope = 'agent_month' AND name = NEW.agent AND period = substr(NEW.day, 1, 7))
                OR (scope = 'session' AND name = NEW.agent || '/' || NEW.session AND period = '')
                OR (NEW.grp <> '' AND scope = 'group_day' AND name = NEW.grp
                    AND period = NEW.day)
                OR (NEW.grp <> '' AND scope = 'group_month' AND name = NEW.grp
                    AND period = substr(NEW.day, 1, 7));
        END
        """
    )
    # The group and the estimates decide which windows a hold moved: they are final too.
    db.execute(
        """
        CREATE TRIGGER calls_windows_are_final BEFORE UPDATE OF grp, session,
            estimated_input_tokens, estimated_output_tokens ON calls
        WHEN NEW.grp IS NOT OLD.grp OR NEW.session IS NOT OLD.session
            OR NEW.estimated_input_tokens IS NOT OLD.estimated_input_tokens
            OR NEW.estimated_output_tokens IS NOT OLD.estimated_output_tokens
        BEGIN
            SELECT RAISE(ABORT, 'a call is held once and settled once; its money is then final');
        END
        """
    )
    # A refusal by the agent's or its group's month makes the agent as exhausted as its day does.
    db.execute("DROP TRIGGER calls_insert_moves_day_totals")
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
                NEW.state = 'refused'
                    AND NEW.reason IN ('daily_budget_exceeded', 'monthly_budget_exceeded')
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
    # Calls already in the ledger count in the windows they belong to.
    db.execute(
        """
        INSERT INTO window_totals (scope, name, period, spent_nanos, held_nanos, spent_tokens,
            held_tokens)
        SELECT scope, name, period, SUM(spent), SUM(held), SUM(spent_tokens), SUM(held_tokens)
        FROM (
            SELECT 'agent_month' AS scope, agent AS name, substr(day, 1, 7) AS period,
                COALESCE(actual_nanos, 0) AS spent,
                CASE state WHEN 'held' THEN held_nanos ELSE 0 END AS held,
                CASE state WHEN 'settled' THEN input_tokens + output_tokens ELSE 0 END
                    AS spent_tokens,
                CASE state WHEN 'held'
                    THEN estimated_input_tokens + estimated_output_tokens ELSE 0 END AS held_tokens
            FROM calls WHERE state <> 'refused'
            UNION ALL
            SELECT 'session', agent || '/' || session, '',
                COALESCE(actual_nanos, 0),
                CASE state WHEN 'held' THEN held_nanos ELSE 0 END,
                CASE state WHEN 'settled' THEN input_tokens + output_tokens ELSE 0 END,
                CASE state WHEN 'held'
                    THEN estimated_input_tokens + estimated_output_tokens ELSE 0 END
            FROM calls WHERE state <> 'refused'
        )
        GROUP BY scope, name, period
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
        self,
        intent: CallIntent,
        amount_nanos: int,
        configured_limit: int,
        limits: Limits = NO_MORE_LIMITS,
    ) -> HoldGranted | HoldRefused:
        if amount_nanos < 0:
            raise ValueError("a hold cannot be negative")
        tokens = intent.estimated_input_tokens + intent.estimated_output_tokens
        with self._immediate() as conn:
            totals = self._totals(conn, intent.agent, intent.day, configured_limit)
            day = WindowUse(
                "daily", intent.agent, totals.spent_nanos, totals.held_nanos, totals.limit_nanos
            )
            uses = [day, *self._other_windows(conn, intent, limits)]
            for use in uses:
                asked = tokens if use.window == "session_tokens" else amount_nanos
                if asked > use.remaining:
                    call_id = self._insert_call(
                        conn, intent, amount_nanos, "refused", REFUSAL_OF_WINDOW[use.window], limits
                    )
                    return HoldRefused(
                        call_id=call_id,
                        requested_nanos=amount_nanos,
                        totals=totals,
                        blocked_by=use,
                        requested_tokens=tokens,
                    )
            call_id = self._insert_call(conn, intent, amount_nanos, "held", "", limits)
            after = replace(
                totals, held_nanos=totals.held_nanos + amount_nanos, calls=totals.calls + 1
            )
            return HoldGranted(call_id=call_id, held_nanos=amount_nanos, totals=after)

    def _other_windows(
        self, conn: sqlite3.Connection, intent: CallIntent, limits: Limits
    ) -> list[WindowUse]:
        """The windows besides the day that have a limit, configured or set at run time."""
        month, session = intent.day[:7], f"{intent.agent}/{intent.session}"
        places = {
            "monthly": ("agent_month", intent.agent, month, limits.monthly_nanos),
            "group_daily": ("group_day", limits.group, intent.day, limits.group_daily_nanos),
            "group_monthly": ("group_month", limits.group, month, limits.group_monthly_nanos),
            "session_usd": ("session", session, "", limits.session_nanos),
            "session_tokens": ("session", session, "", limits.session_tokens),
        }
        if not limits.group:
            del places["group_daily"], places["group_monthly"]
        wanted = {w: place[3] for w, place in places.items()}
        for window, limit in conn.execute(
            """
            SELECT window, limit_nanos FROM limits
            WHERE (agent = ? AND window IN ('monthly', 'session_usd', 'session_tokens'))
                OR (agent = ? AND window IN ('group_daily', 'group_monthly'))
            """,
            (intent.agent, limits.group),
        ):
            if window in wanted:
                wanted[window] = limit
        limited = {w: limit for w, limit in wanted.items() if limit is not None}
        if not limited:
            return []
        keys = {places[w][:3] for w in limited}
        use: dict[tuple[str, str, str], tuple[int, int, int, int]] = {
            (scope, name, period): (spent, held, spent_tokens, held_tokens)
            for scope, name, period, spent, held, spent_tokens, held_tokens in conn.execute(
                f"""
                SELECT scope, name, period, spent_nanos, held_nanos, spent_tokens, held_tokens
                FROM window_totals WHERE (scope, name, period) IN
                    (VALUES {", ".join("(?, ?, ?)" for _ in keys)})
                """,
                [part for key in keys for part in key],
            )
        }
        uses = []
        for window in WINDOWS[1:]:
            if window not in limited:
                continue
            scope, name, period, _ = places[window]
            spent, held, spent_tokens, held_tokens = use.get((scope, name, period), (0, 0, 0, 0))
            shown = intent.session if scope == "session" else name
            if window == "session_tokens":
                uses.append(WindowUse(window, shown, spent_tokens, held_tokens, limited[window]))
            else:
                uses.append(WindowUse(window, shown, spent, held, limited[window]))
        return uses

    def refuse(self, intent: CallIntent, reason: str) -> int:
        with self._immediate() as conn:
            return self._insert_call(conn, intent, 0, "refused", reason, NO_MORE_LIMITS)

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
        self.set_limit("daily", agent, limit_nanos)

    def set_limit(self, window: str, name: str, limit: int) -> None:
        if window not in WINDOWS:
            raise ValueError(f"no window {window!r}; the windows are {', '.join(WINDOWS)}")
        if limit < 0:
            raise ValueError("a limit cannot be negative")
        with self._immediate() as conn:
            conn.execute(
                """
                INSERT INTO limits (agent, window, limit_nanos, set_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (agent, window) DO UPDATE SET
                    limit_nanos = excluded.limit_nanos, set_at = excluded.set_at
                """,
                (name, window, limit, _utc_iso(datetime.now(UTC))),
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
        self,
        conn: sqlite3.Connection,
        intent: CallIntent,
        held: int,
        state: str,
        reason: str,
        limits: Limits,
    ) -> int:
        cursor = conn.execute(
            """
            INSERT INTO calls (started_at, day, agent, session, provider, endpoint, requested_model,
                forwarded_model, stream, held_nanos, state, outcome, reason, owner,
                estimated_input_tokens, estimated_output_tokens, grp)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                limits.group,
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
