"""The SQLite ledger: one file, WAL, shared safely by several proxy processes on one host.

Every hold is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before the window is
read, so two processes can never both see room for the same last cent. Daily totals are kept in
their own table, updated in the same transactions as the call rows, so a hold costs the same on
the millionth call of the day as on the first.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from spendbrake import sqlite_brakes
from spendbrake.brakes import NO_BRAKES, Brakes
from spendbrake.brakes import check as check_brakes
from spendbrake.leases import LEASE_RENEW_S, dead_owners, keep_lease
from spendbrake.ledger import (
    NO_MORE_LIMITS,
    TOKEN_WINDOWS,
    WINDOWS,
    CallIntent,
    DayTotals,
    EstimateAccuracy,
    Event,
    HoldBraked,
    HoldGranted,
    HoldRefused,
    LedgerBusy,
    LedgerUnavailable,
    Limits,
    Settlement,
    WindowUse,
)
from spendbrake.ledger_schema import migrations
from spendbrake.money import format_usd
from spendbrake.processes import current_owner
from spendbrake.window_plan import (
    first_without_room,
    plan_windows,
    run_time_limits,
    window_uses,
)

BUSY_TIMEOUT_MS = 2_000

# The refusal code a call is recorded with when a window has no room for it.
REFUSAL_OF_WINDOW = {
    "daily": "daily_budget_exceeded",
    "group_daily": "daily_budget_exceeded",
    "monthly": "monthly_budget_exceeded",
    "group_monthly": "monthly_budget_exceeded",
    "session_usd": "session_budget_exceeded",
    "session_tokens": "session_tokens_exceeded",
    "monthly_tokens": "monthly_tokens_exceeded",
    "group_monthly_tokens": "monthly_tokens_exceeded",
}


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


@dataclass(frozen=True)
class _Lease:
    keeper: SQLiteLedger  # the lease thread's own connection
    stop: threading.Event
    thread: threading.Thread


class SQLiteLedger:
    """``spendbrake.ledger.Ledger`` on one SQLite file. One instance per thread."""

    _lease: _Lease | None = None  # while keep_lease runs

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

    def write_transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """For modules that keep their own tables in this ledger (``access_book``)."""
        return self._immediate()

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
        brakes: Brakes = NO_BRAKES,
    ) -> HoldGranted | HoldRefused | HoldBraked:
        if amount_nanos < 0:
            raise ValueError("a hold cannot be negative")
        tokens = intent.estimated_input_tokens + intent.estimated_output_tokens
        with self._immediate() as conn:
            set_now = self._run_time_limits(conn, intent.agent, limits.group)
            brakes = sqlite_brakes.with_run_time_settings(brakes, set_now)
            seen = sqlite_brakes.activity(conn, intent, brakes)
            now = intent.started_at
            if brake := check_brakes(seen, brakes, tokens=tokens, nanos=amount_nanos, now=now):
                if brakes.throttle and brake.retry_after_s is not None and not brake.suspends:
                    return HoldBraked(call_id=None, brake=brake)  # it waits: not refused yet
                if brake.suspends:
                    sqlite_brakes.suspend(conn, intent.agent, brake, now)
                call_id = self._insert_call(
                    conn, intent, amount_nanos, "refused", brake.code, limits
                )
                return HoldBraked(call_id=call_id, brake=brake)
            totals = self._totals(conn, intent.agent, intent.day, configured_limit)
            others = self._other_windows(conn, intent, limits, set_now)
            if full := first_without_room(totals, others, amount_nanos, tokens):
                call_id = self._insert_call(
                    conn, intent, amount_nanos, "refused", REFUSAL_OF_WINDOW[full.window], limits
                )
                return HoldRefused(
                    call_id=call_id,
                    requested_nanos=amount_nanos,
                    totals=totals,
                    blocked_by=full,
                    requested_tokens=tokens,
                )
            call_id = self._insert_call(conn, intent, amount_nanos, "held", "", limits)
            after = replace(
                totals, held_nanos=totals.held_nanos + amount_nanos, calls=totals.calls + 1
            )
            return HoldGranted(call_id=call_id, held_nanos=amount_nanos, totals=after)

    @staticmethod
    def _run_time_limits(conn: sqlite3.Connection, agent: str, group: str) -> dict[str, int]:
        """What 'limit set' set for the agent, and for its group (windows named group_*)."""
        rows = conn.execute(
            "SELECT agent, window, limit_nanos FROM limits WHERE agent IN (?, ?)", (agent, group)
        ).fetchall()
        return run_time_limits(rows, agent, group)

    def _other_windows(
        self,
        conn: sqlite3.Connection,
        intent: CallIntent,
        limits: Limits,
        set_now: dict[str, int] | None = None,
    ) -> list[WindowUse]:
        """The windows besides the day that have a limit, configured or set at run time."""
        if set_now is None:
            set_now = self._run_time_limits(conn, intent.agent, limits.group)
        plan = plan_windows(intent, limits, set_now)
        if not plan.limited:
            return []
        keys = plan.keys()
        rows = conn.execute(
            f"""
            SELECT scope, name, period, spent_nanos, held_nanos, spent_tokens, held_tokens
            FROM windows_after_resets WHERE (scope, name, period) IN
                (VALUES {", ".join("(?, ?, ?)" for _ in keys)})
            """,
            [part for key in keys for part in key],
        )
        return window_uses(
            intent, plan, {(scope, name, period): rest for scope, name, period, *rest in rows}
        )

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

    def month_tokens(self, agent: str, month: str, group: str = "") -> int:
        scope, name = ("group_month", group) if group else ("agent_month", agent)
        row = self.db.conn.execute(
            """
            SELECT spent_tokens + held_tokens FROM windows_after_resets
            WHERE scope = ? AND name = ? AND period = ?
            """,
            (scope, name, month),
        ).fetchone()
        return row[0] if row else 0

    def token_bucket(self, agent: str, month: str, group: str = "") -> tuple[int, int | None]:
        window, name = ("group_monthly_tokens", group) if group else ("monthly_tokens", agent)
        row = self.db.conn.execute(
            "SELECT limit_nanos FROM limits WHERE agent = ? AND window = ?", (name, window)
        ).fetchone()
        return self.month_tokens(agent, month, group), row[0] if row else None

    def window_uses(self, intent: CallIntent, limits: Limits) -> list[WindowUse]:
        return self._other_windows(self.db.conn, intent, limits)

    def room_nanos(self, intent: CallIntent, configured_limit: int, limits: Limits) -> int:
        conn = self.db.conn
        totals = self._totals(conn, intent.agent, intent.day, configured_limit)
        others = self._other_windows(conn, intent, limits)
        money = [u.remaining for u in others if u.window not in TOKEN_WINDOWS]
        return min([totals.remaining_nanos, *money])

    def day_totals(self, agent: str, day: str, configured_limit: int) -> DayTotals:
        return self._totals(self.db.conn, agent, day, configured_limit)

    def set_daily_limit(self, agent: str, limit_nanos: int) -> None:
        self.set_limit("daily", agent, limit_nanos)

    def set_limit(self, window: str, name: str, limit: int) -> None:
        self.set_limits([(window, name, limit)])

    def set_limits(self, limits: list[tuple[str, str, int]]) -> None:
        for window, _, limit in limits:
            if window not in WINDOWS and window not in sqlite_brakes.BRAKE_SETTINGS:
                known = ", ".join([*WINDOWS, *sqlite_brakes.BRAKE_SETTINGS])
                raise ValueError(f"no window {window!r}; the windows are {known}")
            if limit < 0:
                raise ValueError("a limit cannot be negative")
        now = _utc_iso(datetime.now(UTC))
        with self._immediate() as conn:
            conn.executemany(
                """
                INSERT INTO limits (agent, window, limit_nanos, set_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (agent, window) DO UPDATE SET
                    limit_nanos = excluded.limit_nanos, set_at = excluded.set_at
                """,
                [(name, window, limit, now) for window, name, limit in limits],
            )

    def reset_window(
        self, agent: str, window: str, period: str, actor: str, session: str = ""
    ) -> int:
        """Zero what the agent spent in a window (``day`` "2026-11-22", ``month`` "2026-11", or
        ``session``) on purpose. The calls stay as they were; returns the nanos forgiven."""
        scope, name = {
            "day": ("agent_day", agent),
            "month": ("agent_month", agent),
            "session": ("session", f"{agent}/{session}"),
        }[window]
        period = "" if window == "session" else period
        now = datetime.now(UTC)
        with self._immediate() as conn:
            if window == "day":
                totals = self._totals(conn, agent, period, 0)
                spent, tokens, blocked = totals.spent_nanos, 0, totals.budget_blocked
            else:
                row = conn.execute(
                    """
                    SELECT spent_nanos, spent_tokens FROM windows_after_resets
                    WHERE (scope, name, period) = (?, ?, ?)
                    """,
                    (scope, name, period),
                ).fetchone()
                spent, tokens, blocked = (row[0], row[1], 0) if row else (0, 0, 0)
            conn.execute(
                """
                INSERT INTO window_resets (scope, name, period, forgiven_nanos, forgiven_tokens,
                    forgiven_budget_blocked, at, actor)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (scope, name, period, spent, tokens, blocked, sqlite_brakes.iso(now), actor),
            )
            what = f"session {session}" if window == "session" else f"{window} {period}"
            detail = f"{what}: forgave {format_usd(spent)} and {tokens:,} tokens"
            sqlite_brakes.record(conn, agent, "reset", detail, actor, now)
            return spent

    def resume(self, agent: str, actor: str) -> bool:
        with self._immediate() as conn:
            return sqlite_brakes.resume(conn, agent, actor, datetime.now(UTC))

    def suspended_agents(self) -> dict[str, str]:
        return sqlite_brakes.suspended_agents(self.db.conn)

    def record_event(self, agent: str, kind: str, detail: str, actor: str = "spendbrake") -> None:
        with self._immediate() as conn:
            sqlite_brakes.record(conn, agent, kind, detail, actor, datetime.now(UTC))

    def events(self, agent: str | None = None, limit: int = 100) -> list[Event]:
        return sqlite_brakes.events(self.db.conn, agent, limit)

    def daily_limit_overrides(self) -> dict[str, int]:
        rows = self.db.conn.execute("SELECT agent, limit_nanos FROM limits WHERE window = 'daily'")
        return {agent: limit for agent, limit in rows}

    def held_back(self, agent: str, day: str, since: datetime) -> tuple[bool, bool]:
        row = self.db.conn.execute(
            """
            SELECT
                EXISTS (SELECT 1 FROM calls WHERE agent = :agent AND day = :day
                    AND started_at >= :since AND reason IN ('rate_limited', 'backoff'))
                OR EXISTS (SELECT 1 FROM events WHERE agent = :agent AND kind = 'throttled'
                    AND at >= :since),
                EXISTS (SELECT 1 FROM calls WHERE agent = :agent AND day = :day
                    AND forwarded_model <> requested_model AND state <> 'refused')
            """,
            {"agent": agent, "day": day, "since": _utc_iso(since)},
        ).fetchone()
        return bool(row[0]), bool(row[1])

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

    def recover_orphaned_holds(self, lease_ttl_s: float | None = None) -> int:
        """Settle, at their held amount, the holds of owners that died: on this host, a process
        that no longer runs; with ``lease_ttl_s``, on any host, a proxy whose lease lapsed that
        long ago (only a steady lease keeper judges by leases: ``spendbrake.leases``)."""
        # Looked for without the write lock, so that a running proxy can look often: an owner
        # found dead stays dead (a new process is a new owner), so the answer cannot go stale.
        # None, NULL in SQL: no lease counts as lapsed.
        lapsed_before = (
            None
            if lease_ttl_s is None
            else _utc_iso(datetime.now(UTC) - timedelta(seconds=lease_ttl_s))
        )
        with self._lock_errors():
            held = self.db.conn.execute(
                """
                SELECT DISTINCT c.owner, COALESCE(l.renewed_at < ?, 0)
                FROM calls AS c LEFT JOIN proxy_leases AS l ON l.owner = c.owner
                WHERE c.state = 'held'
                """,
                (lapsed_before,),
            )
            owners = held.fetchall()
        dead = dead_owners(owners, self.owner)
        if not dead:
            return 0
        with self._immediate() as conn:
            settled = sum(self._settle_held_at_hold(conn, owner, "crashed") for owner in dead)
            conn.executemany("DELETE FROM proxy_leases WHERE owner = ?", [(o,) for o in dead])
            return settled

    def settle_own_holds(self, outcome: str) -> int:
        """At shutdown: whatever this process still holds is settled at its held amount, and
        its lease is given up (not renewed again)."""
        self._stop_lease()
        with self._immediate() as conn:
            settled = self._settle_held_at_hold(conn, self.owner, outcome)
            conn.execute("DELETE FROM proxy_leases WHERE owner = ?", (self.owner,))
            return settled

    def renew_lease(self) -> None:
        """Tell the other proxies this one still runs (its holds are not orphans)."""
        with self._immediate() as conn:
            conn.execute(
                """
                INSERT INTO proxy_leases (owner, renewed_at) VALUES (?, ?)
                ON CONFLICT (owner) DO UPDATE SET renewed_at = excluded.renewed_at
                """,
                (self.owner, _utc_iso(datetime.now(UTC))),
            )

    def keep_lease(self, every_s: float = LEASE_RENEW_S) -> None:
        """For a proxy: renew the lease on a thread of its own, and settle the holds of proxies
        whose lease lapsed, until ``close``. The thread has a connection of its own: this one
        belongs to the thread that made it."""
        keeper, stop = SQLiteLedger(self.path, owner=self.owner), threading.Event()
        self._lease = _Lease(keeper, stop, keep_lease(keeper, stop, every_s))

    def _stop_lease(self) -> None:
        if (lease := self._lease) is not None:
            self._lease = None
            lease.stop.set()
            lease.thread.join()
            lease.keeper.close()

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
        self._stop_lease()
        self.db.close()

    # -- helpers -------------------------------------------------------------------------------

    def _settle_held_at_hold(self, conn: sqlite3.Connection, owner: str, outcome: str) -> int:
        cursor = conn.execute(
            """
            UPDATE calls SET state = 'settled', actual_nanos = held_nanos, outcome = ?,
                -- the tokens too, at the estimate behind the hold: a token window must not
                -- find room it never had
                input_tokens = estimated_input_tokens, output_tokens = estimated_output_tokens,
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
                estimated_input_tokens, estimated_output_tokens, grp, fingerprint)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                intent.fingerprint,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def _totals(conn: sqlite3.Connection, agent: str, day: str, configured_limit: int) -> DayTotals:
        row = conn.execute(
            """
            SELECT t.spent_nanos - COALESCE(r.nanos, 0), t.held_nanos, t.calls, t.blocked,
                t.budget_blocked - COALESCE(r.budget_blocked, 0), l.limit_nanos
            FROM (SELECT ? AS agent, ? AS day) AS a
            LEFT JOIN day_totals AS t ON t.agent = a.agent AND t.day = a.day
            LEFT JOIN limits AS l ON l.agent = a.agent AND l.window = 'daily'
            LEFT JOIN (
                SELECT name, period, SUM(forgiven_nanos) AS nanos,
                    SUM(forgiven_budget_blocked) AS budget_blocked
                FROM window_resets WHERE scope = 'agent_day' GROUP BY name, period
            ) AS r ON r.name = a.agent AND r.period = a.day
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
