"""The PostgreSQL ledger: one database shared by many proxies on many hosts, one budget.

Every hold is one transaction that first takes PostgreSQL advisory locks on its agent and, if it
has one, its group (always in that order, so two holds never wait on each other in a circle).
Everything a hold checks belongs to its agent (day, month, sessions, brakes) or its group (the
group's day and month), so with those two locks no two proxies can both see room for the same
last cent, while holds of unrelated agents run side by side. The totals are kept by triggers
in the same statements as the calls, as in SQLite (``postgres_schema``).

Connections come from a pool (psycopg_pool) and are checked before use. While the database is
away every operation raises ``LedgerUnavailable`` within ``CONNECT_TIMEOUT_S``: the proxy
refuses calls (503 ``ledger_unavailable``) and the pool reconnects by itself when it returns.

A proxy renews a lease in the database while it runs (``keep_lease``); the holds of an owner
whose lease lapsed (a proxy that died on any host) are settled at their held amount by the
others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from spendbrake import postgres_brakes, postgres_schema, sqlite_brakes
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
    LedgerUnavailable,
    Limits,
    Settlement,
    WindowUse,
)
from spendbrake.ledger_url import PostgresUrl
from spendbrake.money import format_usd
from spendbrake.offline_allowance import REPLAYED, JournalEntry
from spendbrake.processes import current_owner
from spendbrake.sqlite_brakes import iso
from spendbrake.sqlite_ledger import REFUSAL_OF_WINDOW
from spendbrake.window_plan import (
    first_without_room,
    plan_windows,
    run_time_limits,
    window_uses,
)

log = logging.getLogger(__name__)

type Conn = psycopg.Connection[tuple[Any, ...]]

# How long an operation waits for a connection before the call is refused (fail closed).
CONNECT_TIMEOUT_S = 3.0
POOL_SIZE = 4
# The two namespaces of advisory locks (pg_advisory_xact_lock(int, int)): agents and groups.
AGENT_LOCKS, GROUP_LOCKS = 0x5342_0001, 0x5342_0002
# A transaction PostgreSQL chose to abort (deadlock, serialization) wrote nothing: run it again.
RETRIES = 3


class PostgresLedger:
    """``spendbrake.ledger.Ledger`` on a PostgreSQL database. Safe to share between threads."""

    def __init__(
        self,
        location: PostgresUrl,
        *,
        owner: str | None = None,
        pool_size: int = POOL_SIZE,
        migrate: bool = True,
    ) -> None:
        self.location = location
        self.path = location.redacted()  # what log lines and messages name
        self.owner = owner or current_owner()
        self.closed = threading.Event()  # set by close(): the threads of this ledger end
        self._lease_thread: threading.Thread | None = None
        self._lease_stop = threading.Event()
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            location.url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)},
            # A connection cut while the database was away is found and replaced before use.
            check=ConnectionPool.check_connection,
            name="spendbrake-ledger",
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            with self.pool.connection() as conn:
                if migrate:
                    postgres_schema.apply(conn)
                elif missing := postgres_schema.pending(conn):
                    if len(missing) == len(postgres_schema.MIGRATIONS):
                        raise LedgerUnavailable(
                            f"no ledger at {self.path}: start the proxy (spendbrake up) or "
                            "create it with spendbrake migrate"
                        )
                    raise LedgerUnavailable(
                        f"the ledger {self.path} was written by an older spendbrake; bring it up "
                        "to date with spendbrake migrate (the proxy does so when it starts)"
                    )
        except (psycopg.Error, PoolTimeout) as e:
            self.pool.close()
            raise LedgerUnavailable(f"cannot open the ledger {self.path}: {e}") from e
        except BaseException:
            self.pool.close()
            raise

    # -- connections and transactions ----------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Conn]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise LedgerUnavailable(f"ledger {self.path} is unreachable: {e}") from e
        except psycopg.Error as e:
            raise LedgerUnavailable(f"ledger {self.path} failed: {e}") from e

    def _write[T](self, work: Callable[[Conn], T]) -> T:
        """``work`` in one transaction, run again if PostgreSQL aborted it to break a deadlock
        (it then wrote nothing)."""
        for attempt in range(RETRIES):
            try:
                with self._connection() as conn, conn.transaction():
                    return work(conn)
            except LedgerUnavailable as e:
                retry = isinstance(
                    e.__cause__,
                    psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure,
                )
                if not retry or attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _read[T](self, work: Callable[[Conn], T]) -> T:
        with self._connection() as conn:
            return work(conn)

    def write_transaction(self) -> AbstractContextManager[Conn]:
        """For modules that keep their own tables in this ledger (``postgres_access_book``)."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Conn]:
        with self._connection() as conn, conn.transaction():
            yield conn

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
        return self._write(
            lambda conn: self._hold(conn, intent, amount_nanos, configured_limit, limits, brakes)
        )

    def _hold(
        self,
        conn: Conn,
        intent: CallIntent,
        amount_nanos: int,
        configured_limit: int,
        limits: Limits,
        brakes: Brakes,
    ) -> HoldGranted | HoldRefused | HoldBraked:
        tokens = intent.estimated_input_tokens + intent.estimated_output_tokens
        if limits.group:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s)), "
                "pg_advisory_xact_lock(%s, hashtext(%s))",
                (AGENT_LOCKS, intent.agent, GROUP_LOCKS, limits.group),
            )
        else:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (AGENT_LOCKS, intent.agent)
            )
        set_now = self._run_time_limits(conn, intent.agent, limits.group)
        brakes = sqlite_brakes.with_run_time_settings(brakes, set_now)
        seen = postgres_brakes.activity(conn, intent, brakes)
        now = intent.started_at
        if brake := check_brakes(seen, brakes, tokens=tokens, nanos=amount_nanos, now=now):
            if brakes.throttle and brake.retry_after_s is not None and not brake.suspends:
                return HoldBraked(call_id=None, brake=brake)  # it waits: not refused yet
            if brake.suspends:
                postgres_brakes.suspend(conn, intent.agent, brake, now)
            call_id = self._insert_call(conn, intent, amount_nanos, "refused", brake.code, limits)
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
        after = replace(totals, held_nanos=totals.held_nanos + amount_nanos, calls=totals.calls + 1)
        return HoldGranted(call_id=call_id, held_nanos=amount_nanos, totals=after)

    @staticmethod
    def _run_time_limits(conn: Conn, agent: str, group: str) -> dict[str, int]:
        rows = conn.execute(
            'SELECT agent, "window", limit_nanos FROM limits WHERE agent IN (%s, %s)',
            (agent, group),
        ).fetchall()
        return run_time_limits(rows, agent, group)

    def _other_windows(
        self,
        conn: Conn,
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
                (VALUES {", ".join("(%s, %s, %s)" for _ in keys)})
            """,
            [part for key in keys for part in key],
        ).fetchall()
        return window_uses(
            intent, plan, {(scope, name, period): rest for scope, name, period, *rest in rows}
        )

    def refuse(self, intent: CallIntent, reason: str) -> int:
        return self._write(
            lambda conn: self._insert_call(conn, intent, 0, "refused", reason, NO_MORE_LIMITS)
        )

    def settle(self, call_id: int, settlement: Settlement, configured_limit: int) -> DayTotals:
        if settlement.actual_nanos < 0:
            raise ValueError("an actual cost cannot be negative")
        settled = self._write(lambda conn: self._settle_row(conn, call_id, settlement))

        def totals(conn: Conn) -> DayTotals:
            rows = (
                settled
                or conn.execute("SELECT agent, day FROM calls WHERE id = %s", (call_id,)).fetchall()
            )
            if not rows:
                raise KeyError(f"no call {call_id} in the ledger")
            [(agent, day)] = rows
            return self._totals(conn, agent, day, configured_limit)

        return self._read(totals)

    @staticmethod
    def _settle_row(conn: Conn, call_id: int, settlement: Settlement) -> list[tuple[Any, ...]]:
        t = settlement.tokens
        return conn.execute(
            """
            UPDATE calls SET state = 'settled', actual_nanos = %s, outcome = %s, reason = %s,
                input_tokens = %s, cached_input_tokens = %s, cache_write_tokens = %s,
                cache_write_1h_tokens = %s, output_tokens = %s, reasoning_tokens = %s,
                settled_at = %s
            WHERE id = %s AND state = 'held'
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
                iso(datetime.now(UTC)),
                call_id,
            ),
        ).fetchall()

    def record_offline_call(self, entry: JournalEntry) -> bool:
        """A call a proxy held and settled on its offline allowance (``offline_allowance``),
        written as held then settled in one transaction, so its money counts in every window.
        Exactly once: False if the call's local id is in the ledger already."""
        intent, reason = entry.intent, f"{REPLAYED}{entry.local_id}"
        limits = replace(NO_MORE_LIMITS, group=entry.group)

        def work(conn: Conn) -> bool:
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (AGENT_LOCKS, intent.agent)
            )
            if conn.execute(
                "SELECT 1 FROM calls WHERE agent = %s AND day = %s AND reason LIKE %s",
                (intent.agent, intent.day, f"{reason}%"),
            ).fetchone():
                return False
            call_id = self._insert_call(conn, intent, entry.held_nanos, "held", "", limits)
            s = entry.settlement
            why = f"{reason}: {s.reason}" if s.reason else reason
            self._settle_row(conn, call_id, replace(s, reason=why))
            detail = (
                f"call {call_id} ({format_usd(s.actual_nanos)}) ran on the offline allowance of "
                f"{entry.owner} while the ledger was unreachable"
            )
            postgres_brakes.record(
                conn, intent.agent, "offline_allowance", detail, "spendbrake", datetime.now(UTC)
            )
            return True

        return self._write(work)

    def month_tokens(self, agent: str, month: str, group: str = "") -> int:
        return self._read(lambda conn: self._month_tokens(conn, agent, month, group))

    @staticmethod
    def _month_tokens(conn: Conn, agent: str, month: str, group: str) -> int:
        scope, name = ("group_month", group) if group else ("agent_month", agent)
        row = conn.execute(
            """
            SELECT spent_tokens + held_tokens FROM windows_after_resets
            WHERE scope = %s AND name = %s AND period = %s
            """,
            (scope, name, month),
        ).fetchone()
        return int(row[0]) if row else 0

    def token_bucket(self, agent: str, month: str, group: str = "") -> tuple[int, int | None]:
        window, name = ("group_monthly_tokens", group) if group else ("monthly_tokens", agent)

        def work(conn: Conn) -> tuple[int, int | None]:
            row = conn.execute(
                'SELECT limit_nanos FROM limits WHERE agent = %s AND "window" = %s',
                (name, window),
            ).fetchone()
            return self._month_tokens(conn, agent, month, group), row[0] if row else None

        return self._read(work)

    def window_uses(self, intent: CallIntent, limits: Limits) -> list[WindowUse]:
        return self._read(lambda conn: self._other_windows(conn, intent, limits))

    def room_nanos(self, intent: CallIntent, configured_limit: int, limits: Limits) -> int:
        def work(conn: Conn) -> int:
            totals = self._totals(conn, intent.agent, intent.day, configured_limit)
            others = self._other_windows(conn, intent, limits)
            money = [u.remaining for u in others if u.window not in TOKEN_WINDOWS]
            return min([totals.remaining_nanos, *money])

        return self._read(work)

    def day_totals(self, agent: str, day: str, configured_limit: int) -> DayTotals:
        return self._read(lambda conn: self._totals(conn, agent, day, configured_limit))

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
        now = iso(datetime.now(UTC))

        def work(conn: Conn) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    """
                    INSERT INTO limits (agent, "window", limit_nanos, set_at)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (agent, "window") DO UPDATE SET
                        limit_nanos = excluded.limit_nanos, set_at = excluded.set_at
                    """,
                    [(name, window, limit, now) for window, name, limit in limits],
                )

        self._write(work)

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

        def work(conn: Conn) -> int:
            # Under the agent's lock, so no hold of the agent sees the window half reset.
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (AGENT_LOCKS, agent))
            if window == "day":
                totals = self._totals(conn, agent, period, 0)
                spent, tokens, blocked = totals.spent_nanos, 0, totals.budget_blocked
            else:
                row = conn.execute(
                    """
                    SELECT spent_nanos, spent_tokens FROM windows_after_resets
                    WHERE (scope, name, period) = (%s, %s, %s)
                    """,
                    (scope, name, period),
                ).fetchone()
                spent, tokens, blocked = (int(row[0]), int(row[1]), 0) if row else (0, 0, 0)
            conn.execute(
                """
                INSERT INTO window_resets (scope, name, period, forgiven_nanos, forgiven_tokens,
                    forgiven_budget_blocked, at, actor)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (scope, name, period, spent, tokens, blocked, iso(now), actor),
            )
            what = f"session {session}" if window == "session" else f"{window} {period}"
            detail = f"{what}: forgave {format_usd(spent)} and {tokens:,} tokens"
            postgres_brakes.record(conn, agent, "reset", detail, actor, now)
            return spent

        return self._write(work)

    def resume(self, agent: str, actor: str) -> bool:
        return self._write(
            lambda conn: postgres_brakes.resume(conn, agent, actor, datetime.now(UTC))
        )

    def suspended_agents(self) -> dict[str, str]:
        return self._read(postgres_brakes.suspended_agents)

    def record_event(self, agent: str, kind: str, detail: str, actor: str = "spendbrake") -> None:
        self._write(
            lambda conn: postgres_brakes.record(conn, agent, kind, detail, actor, datetime.now(UTC))
        )

    def events(self, agent: str | None = None, limit: int = 100) -> list[Event]:
        return self._read(lambda conn: postgres_brakes.events(conn, agent, limit))

    def daily_limit_overrides(self) -> dict[str, int]:
        def work(conn: Conn) -> dict[str, int]:
            rows = conn.execute(
                """SELECT agent, limit_nanos FROM limits WHERE "window" = 'daily'"""
            ).fetchall()
            return {agent: limit for agent, limit in rows}

        return self._read(work)

    def held_back(self, agent: str, day: str, since: datetime) -> tuple[bool, bool]:
        def work(conn: Conn) -> tuple[bool, bool]:
            row = conn.execute(
                """
                SELECT
                    EXISTS (SELECT 1 FROM calls WHERE agent = %(agent)s AND day = %(day)s
                        AND started_at >= %(since)s AND reason IN ('rate_limited', 'backoff'))
                    OR EXISTS (SELECT 1 FROM events WHERE agent = %(agent)s
                        AND kind = 'throttled' AND at >= %(since)s),
                    EXISTS (SELECT 1 FROM calls WHERE agent = %(agent)s AND day = %(day)s
                        AND forwarded_model <> requested_model AND state <> 'refused')
                """,
                {"agent": agent, "day": day, "since": iso(since)},
            ).fetchone()
            assert row is not None
            return bool(row[0]), bool(row[1])

        return self._read(work)

    def agents_with_activity(self, day: str) -> list[str]:
        def work(conn: Conn) -> list[str]:
            rows = conn.execute(
                "SELECT agent FROM day_totals WHERE day = %s ORDER BY agent", (day,)
            ).fetchall()
            return [agent for (agent,) in rows]

        return self._read(work)

    def estimate_accuracy(self, since_day: str) -> list[EstimateAccuracy]:
        def work(conn: Conn) -> list[EstimateAccuracy]:
            rows = conn.execute(
                """
                SELECT provider, forwarded_model, COUNT(*), SUM(held_nanos)::bigint,
                    SUM(actual_nanos)::bigint, SUM(estimated_input_tokens)::bigint,
                    SUM(input_tokens)::bigint,
                    MAX(input_tokens::float8 / GREATEST(estimated_input_tokens, 1))
                FROM calls
                WHERE state = 'settled' AND outcome = 'ok' AND day >= %s
                    AND estimated_input_tokens > 0
                GROUP BY provider, forwarded_model
                ORDER BY provider, forwarded_model
                """,
                (since_day,),
            ).fetchall()
            return [EstimateAccuracy(*row) for row in rows]

        return self._read(work)

    # -- proxies that end ----------------------------------------------------------------------

    def recover_orphaned_holds(self, lease_ttl_s: float | None = None) -> int:
        """Settle, at their held amount, the holds of owners that died: on this host, a process
        that no longer runs; with ``lease_ttl_s``, on any host, a proxy whose lease lapsed that
        long ago (only a steady lease keeper judges by leases: ``spendbrake.leases``)."""

        def work(conn: Conn) -> int:
            owners = conn.execute(
                """
                SELECT DISTINCT c.owner,
                    COALESCE(l.renewed_at < now() - make_interval(secs => %s), false)
                FROM calls AS c LEFT JOIN proxy_leases AS l ON l.owner = c.owner
                WHERE c.state = 'held'
                """,
                (lease_ttl_s,),  # None, NULL in SQL: no lease counts as lapsed
            ).fetchall()
            dead = dead_owners(owners, self.owner)
            settled = sum(self._settle_held_at_hold(conn, owner, "crashed") for owner in dead)
            if dead:
                conn.execute("DELETE FROM proxy_leases WHERE owner = ANY(%s)", (dead,))
            return settled

        return self._write(work)

    def settle_own_holds(self, outcome: str) -> int:
        """At shutdown: whatever this process still holds is settled at its held amount, and
        its lease is given up (not renewed again)."""
        self._stop_lease()

        def work(conn: Conn) -> int:
            settled = self._settle_held_at_hold(conn, self.owner, outcome)
            conn.execute("DELETE FROM proxy_leases WHERE owner = %s", (self.owner,))
            return settled

        return self._write(work)

    def renew_lease(self) -> None:
        """Tell the other proxies this one still runs (its holds are not orphans)."""
        self._write(
            lambda conn: conn.execute(
                """
                INSERT INTO proxy_leases (owner, renewed_at) VALUES (%s, now())
                ON CONFLICT (owner) DO UPDATE SET renewed_at = now()
                """,
                (self.owner,),
            )
        )

    def keep_lease(self, every_s: float = LEASE_RENEW_S) -> None:
        """For a proxy: renew the lease on a thread of its own, and settle the holds of proxies
        whose lease lapsed, until ``close``."""
        self._lease_thread = keep_lease(self, self._lease_stop, every_s)

    def _stop_lease(self) -> None:
        self._lease_stop.set()
        if (thread := self._lease_thread) is not None:
            self._lease_thread = None
            thread.join()

    def close(self) -> None:
        self.closed.set()
        self._stop_lease()
        self.pool.close()

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _settle_held_at_hold(conn: Conn, owner: str, outcome: str) -> int:
        cursor = conn.execute(
            """
            UPDATE calls SET state = 'settled', actual_nanos = held_nanos, outcome = %s,
                input_tokens = estimated_input_tokens, output_tokens = estimated_output_tokens,
                reason = 'settled at its hold: the proxy ended before the call did',
                settled_at = %s
            WHERE state = 'held' AND owner = %s
            """,
            (outcome, iso(datetime.now(UTC)), owner),
        )
        return cursor.rowcount

    def _insert_call(
        self,
        conn: Conn,
        intent: CallIntent,
        held: int,
        state: str,
        reason: str,
        limits: Limits,
    ) -> int:
        row = conn.execute(
            """
            INSERT INTO calls (started_at, day, agent, session, provider, endpoint, requested_model,
                forwarded_model, stream, held_nanos, state, outcome, reason, owner,
                estimated_input_tokens, estimated_output_tokens, grp, fingerprint)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING id
            """,
            (
                iso(intent.started_at),
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
        ).fetchone()
        assert row is not None
        return int(row[0])

    @staticmethod
    def _totals(conn: Conn, agent: str, day: str, configured_limit: int) -> DayTotals:
        row = conn.execute(
            """
            SELECT t.spent_nanos - COALESCE(r.nanos, 0), t.held_nanos, t.calls, t.blocked,
                t.budget_blocked - COALESCE(r.budget_blocked, 0), l.limit_nanos
            FROM (SELECT %s::text AS agent, %s::text AS day) AS a
            LEFT JOIN day_totals AS t ON t.agent = a.agent AND t.day = a.day
            LEFT JOIN limits AS l ON l.agent = a.agent AND l."window" = 'daily'
            LEFT JOIN (
                SELECT name, period, SUM(forgiven_nanos)::bigint AS nanos,
                    SUM(forgiven_budget_blocked)::bigint AS budget_blocked
                FROM window_resets WHERE scope = 'agent_day' GROUP BY name, period
            ) AS r ON r.name = a.agent AND r.period = a.day
            """,
            (agent, day),
        ).fetchone()
        assert row is not None
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
