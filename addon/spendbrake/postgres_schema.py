"""The PostgreSQL ledger's schema: the SQLite ledger's migrations (``ledger_schema``), by the
same names, in PostgreSQL's dialect.

The tables and columns are the same, in the same order, so exports and reports read alike on
both. Times stay ISO-8601 text in UTC, as in SQLite, so they compare and export the same; every
text column collates bytewise ("C"), as SQLite does, whatever the database's locale.
Triggers keep ``day_totals`` and ``window_totals`` in the same statements as the calls, and
guard a call's money as final. Applied under an advisory lock, so proxies starting together on
several hosts agree on one schema; ``spendbrake_migrations`` records them like sqlite-utils'
``_sqlite_migrations``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import psycopg

MIGRATION_SET = "spendbrake"
MIGRATIONS_LOCK = 0x5350454E  # the advisory lock every migrating proxy waits for

# The totals of a call's windows move in one fixed order (day, then the agent's month, the
# session, the group's day and month), so two transactions never lock them in opposite orders.
_MOVE_WINDOWS = """
CREATE OR REPLACE FUNCTION spendbrake_move_window(
    w_scope TEXT, w_name TEXT, w_period TEXT,
    d_spent BIGINT, d_held BIGINT, d_spent_tokens BIGINT, d_held_tokens BIGINT
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO window_totals AS t (scope, name, period, spent_nanos, held_nanos, spent_tokens,
        held_tokens)
    VALUES (w_scope, w_name, w_period, d_spent, d_held, d_spent_tokens, d_held_tokens)
    ON CONFLICT (scope, name, period) DO UPDATE SET
        spent_nanos = t.spent_nanos + excluded.spent_nanos,
        held_nanos = t.held_nanos + excluded.held_nanos,
        spent_tokens = t.spent_tokens + excluded.spent_tokens,
        held_tokens = t.held_tokens + excluded.held_tokens
$$;

CREATE OR REPLACE FUNCTION spendbrake_move_windows(
    c calls, d_spent BIGINT, d_held BIGINT, d_spent_tokens BIGINT, d_held_tokens BIGINT
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM spendbrake_move_window('agent_month', c.agent, substr(c.day, 1, 7),
        d_spent, d_held, d_spent_tokens, d_held_tokens);
    PERFORM spendbrake_move_window('session', c.agent || '/' || c.session, '',
        d_spent, d_held, d_spent_tokens, d_held_tokens);
    IF c.grp <> '' THEN
        PERFORM spendbrake_move_window('group_day', c.grp, c.day,
            d_spent, d_held, d_spent_tokens, d_held_tokens);
        PERFORM spendbrake_move_window('group_month', c.grp, substr(c.day, 1, 7),
            d_spent, d_held, d_spent_tokens, d_held_tokens);
    END IF;
END $$;
"""

_INSERT_TRIGGER = """
CREATE OR REPLACE FUNCTION spendbrake_call_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO day_totals AS t (agent, day, spent_nanos, held_nanos, calls, blocked,
        budget_blocked)
    VALUES (
        NEW.agent,
        NEW.day,
        CASE NEW.state WHEN 'settled' THEN NEW.actual_nanos ELSE 0 END,
        CASE NEW.state WHEN 'held' THEN NEW.held_nanos ELSE 0 END,
        (NEW.state <> 'refused')::int,
        (NEW.state = 'refused')::int,
        (NEW.state = 'refused' AND NEW.reason IN ({budget_reasons}))::int
    )
    ON CONFLICT (agent, day) DO UPDATE SET
        spent_nanos = t.spent_nanos + excluded.spent_nanos,
        held_nanos = t.held_nanos + excluded.held_nanos,
        calls = t.calls + excluded.calls,
        blocked = t.blocked + excluded.blocked,
        budget_blocked = t.budget_blocked + excluded.budget_blocked;
    {windows}
    RETURN NULL;
END $$;
"""

_WINDOWS_ON_INSERT = """
    IF NEW.state <> 'refused' THEN
        PERFORM spendbrake_move_windows(NEW,
            CASE NEW.state WHEN 'settled' THEN NEW.actual_nanos ELSE 0 END,
            CASE NEW.state WHEN 'held' THEN NEW.held_nanos ELSE 0 END,
            CASE NEW.state WHEN 'settled' THEN NEW.input_tokens + NEW.output_tokens ELSE 0 END,
            CASE NEW.state WHEN 'held'
                THEN NEW.estimated_input_tokens + NEW.estimated_output_tokens ELSE 0 END);
    END IF;
"""

_SETTLE_TRIGGER = """
CREATE OR REPLACE FUNCTION spendbrake_call_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE day_totals SET
        held_nanos = held_nanos - OLD.held_nanos,
        spent_nanos = spent_nanos + NEW.actual_nanos
    WHERE agent = NEW.agent AND day = NEW.day;
    {windows}
    {failures}
    RETURN NULL;
END $$;
"""

_WINDOWS_ON_SETTLE = """
    PERFORM spendbrake_move_windows(NEW, NEW.actual_nanos, -OLD.held_nanos,
        NEW.input_tokens + NEW.output_tokens,
        -(OLD.estimated_input_tokens + OLD.estimated_output_tokens));
"""

_FAILURES_ON_SETTLE = """
    IF NEW.outcome IN ('ok', 'upstream_error', 'upstream_unreachable') THEN
        INSERT INTO agent_state AS s (agent, consecutive_failures, last_failure_at)
        VALUES (
            NEW.agent,
            (NEW.outcome <> 'ok')::int,
            CASE WHEN NEW.outcome <> 'ok' THEN NEW.settled_at END
        )
        ON CONFLICT (agent) DO UPDATE SET
            consecutive_failures = CASE WHEN NEW.outcome = 'ok' THEN 0
                ELSE s.consecutive_failures + 1 END,
            last_failure_at = COALESCE(excluded.last_failure_at, s.last_failure_at);
    END IF;
"""


def _settle_trigger(windows: bool, failures: bool) -> str:
    return _SETTLE_TRIGGER.format(
        windows=_WINDOWS_ON_SETTLE if windows else "",
        failures=_FAILURES_ON_SETTLE if failures else "",
    )


def _insert_trigger(windows: bool, budget_reasons: str) -> str:
    return _INSERT_TRIGGER.format(
        windows=_WINDOWS_ON_INSERT if windows else "", budget_reasons=budget_reasons
    )


_FINAL = "a call is held once and settled once; its money is then final"

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "m001_calls_and_totals",
        [
            """
            CREATE TABLE calls (
                id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                started_at TEXT COLLATE "C" NOT NULL,
                day TEXT COLLATE "C" NOT NULL,
                agent TEXT COLLATE "C" NOT NULL,
                session TEXT COLLATE "C" NOT NULL,
                provider TEXT COLLATE "C" NOT NULL,
                endpoint TEXT COLLATE "C" NOT NULL,
                requested_model TEXT COLLATE "C" NOT NULL,
                forwarded_model TEXT COLLATE "C" NOT NULL,
                stream INTEGER NOT NULL,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                cached_input_tokens BIGINT NOT NULL DEFAULT 0,
                cache_write_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                reasoning_tokens BIGINT NOT NULL DEFAULT 0,
                held_nanos BIGINT NOT NULL,
                actual_nanos BIGINT,
                state TEXT COLLATE "C" NOT NULL CHECK (state IN ('held', 'settled', 'refused')),
                outcome TEXT COLLATE "C",
                reason TEXT COLLATE "C" NOT NULL DEFAULT '',
                owner TEXT COLLATE "C" NOT NULL,
                settled_at TEXT COLLATE "C"
            )
            """,
            "CREATE INDEX calls_agent_day ON calls (agent, day)",
            "CREATE INDEX calls_held ON calls (state) WHERE state = 'held'",
            """
            CREATE TABLE day_totals (
                agent TEXT COLLATE "C" NOT NULL,
                day TEXT COLLATE "C" NOT NULL,
                spent_nanos BIGINT NOT NULL DEFAULT 0,
                held_nanos BIGINT NOT NULL DEFAULT 0,
                calls BIGINT NOT NULL DEFAULT 0,
                blocked BIGINT NOT NULL DEFAULT 0,
                budget_blocked BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (agent, day)
            )
            """,
            """
            CREATE TABLE limits (
                agent TEXT COLLATE "C" NOT NULL,
                "window" TEXT COLLATE "C" NOT NULL,
                limit_nanos BIGINT NOT NULL,
                set_at TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (agent, "window")
            )
            """,
        ],
    ),
    (
        "m002_one_hour_cache_writes",
        ["ALTER TABLE calls ADD COLUMN cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0"],
    ),
    (
        "m003_estimates_beside_actuals",
        [
            "ALTER TABLE calls ADD COLUMN estimated_input_tokens BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE calls ADD COLUMN estimated_output_tokens BIGINT NOT NULL DEFAULT 0",
        ],
    ),
    (
        "m004_day_totals_kept_by_triggers",
        [
            _insert_trigger(windows=False, budget_reasons="'daily_budget_exceeded'"),
            _settle_trigger(windows=False, failures=False),
            """
            CREATE TRIGGER calls_insert_moves_day_totals AFTER INSERT ON calls
            FOR EACH ROW EXECUTE FUNCTION spendbrake_call_inserted()
            """,
            """
            CREATE TRIGGER calls_settle_moves_day_totals AFTER UPDATE OF state ON calls
            FOR EACH ROW WHEN (OLD.state = 'held' AND NEW.state = 'settled')
            EXECUTE FUNCTION spendbrake_call_settled()
            """,
            f"""
            CREATE FUNCTION spendbrake_money_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{_FINAL}' USING ERRCODE = 'integrity_constraint_violation';
            END $$
            """,
            """
            CREATE TRIGGER calls_money_is_final BEFORE UPDATE OF state, held_nanos, actual_nanos,
                agent, day ON calls
            FOR EACH ROW WHEN (NOT (OLD.state = 'held' AND NEW.state = 'settled')
                OR NEW.held_nanos IS DISTINCT FROM OLD.held_nanos
                OR NEW.agent IS DISTINCT FROM OLD.agent
                OR NEW.day IS DISTINCT FROM OLD.day
                OR NEW.actual_nanos IS NULL)
            EXECUTE FUNCTION spendbrake_money_is_final()
            """,
        ],
    ),
    (
        "m005_monthly_group_and_session_windows",
        [
            """ALTER TABLE calls ADD COLUMN grp TEXT COLLATE "C" NOT NULL DEFAULT ''""",
            """
            CREATE TABLE window_totals (
                scope TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                period TEXT COLLATE "C" NOT NULL,
                spent_nanos BIGINT NOT NULL DEFAULT 0,
                held_nanos BIGINT NOT NULL DEFAULT 0,
                spent_tokens BIGINT NOT NULL DEFAULT 0,
                held_tokens BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (scope, name, period)
            )
            """,
            _MOVE_WINDOWS,
            _insert_trigger(
                windows=True, budget_reasons="'daily_budget_exceeded', 'monthly_budget_exceeded'"
            ),
            _settle_trigger(windows=True, failures=False),
            """
            CREATE TRIGGER calls_windows_are_final BEFORE UPDATE OF grp, session,
                estimated_input_tokens, estimated_output_tokens ON calls
            FOR EACH ROW WHEN (NEW.grp IS DISTINCT FROM OLD.grp
                OR NEW.session IS DISTINCT FROM OLD.session
                OR NEW.estimated_input_tokens IS DISTINCT FROM OLD.estimated_input_tokens
                OR NEW.estimated_output_tokens IS DISTINCT FROM OLD.estimated_output_tokens)
            EXECUTE FUNCTION spendbrake_money_is_final()
            """,
        ],
    ),
    (
        "m006_brakes",
        [
            """ALTER TABLE calls ADD COLUMN fingerprint TEXT COLLATE "C" NOT NULL DEFAULT ''""",
            "CREATE INDEX calls_agent_fingerprint ON calls (agent, fingerprint, started_at)",
            "CREATE INDEX calls_agent_started ON calls (agent, started_at)",
            """
            CREATE TABLE agent_state (
                agent TEXT COLLATE "C" PRIMARY KEY,
                consecutive_failures BIGINT NOT NULL DEFAULT 0,
                last_failure_at TEXT COLLATE "C",
                resumed_at TEXT COLLATE "C" NOT NULL DEFAULT ''
            )
            """,
            """
            CREATE TABLE suspensions (
                agent TEXT COLLATE "C" PRIMARY KEY,
                reason TEXT COLLATE "C" NOT NULL,
                detail TEXT COLLATE "C" NOT NULL,
                since TEXT COLLATE "C" NOT NULL
            )
            """,
            """
            CREATE TABLE events (
                id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                at TEXT COLLATE "C" NOT NULL,
                agent TEXT COLLATE "C" NOT NULL,
                kind TEXT COLLATE "C" NOT NULL,
                detail TEXT COLLATE "C" NOT NULL,
                actor TEXT COLLATE "C" NOT NULL
            )
            """,
            _settle_trigger(windows=True, failures=True),
        ],
    ),
    (
        "m007_window_resets",
        [
            """
            CREATE TABLE window_resets (
                id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                scope TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                period TEXT COLLATE "C" NOT NULL,
                forgiven_nanos BIGINT NOT NULL,
                forgiven_tokens BIGINT NOT NULL,
                forgiven_budget_blocked BIGINT NOT NULL DEFAULT 0,
                at TEXT COLLATE "C" NOT NULL,
                actor TEXT COLLATE "C" NOT NULL
            )
            """,
            "CREATE INDEX window_resets_key ON window_resets (scope, name, period)",
        ],
    ),
    ("m008_no_index_on_start_times", ["DROP INDEX calls_agent_started"]),
    (
        "m009_windows_after_resets",
        [
            """
            CREATE VIEW windows_after_resets AS
            SELECT scope, name, period,
                spent_nanos - COALESCE((SELECT SUM(forgiven_nanos) FROM window_resets AS r
                    WHERE (r.scope, r.name, r.period) = (w.scope, w.name, w.period)), 0)::bigint
                    AS spent_nanos,
                held_nanos,
                spent_tokens - COALESCE((SELECT SUM(forgiven_tokens) FROM window_resets AS r
                    WHERE (r.scope, r.name, r.period) = (w.scope, w.name, w.period)), 0)::bigint
                    AS spent_tokens,
                held_tokens
            FROM window_totals AS w
            """
        ],
    ),
    (
        "m010_access",
        [
            """
            CREATE TABLE agent_secrets (
                agent TEXT COLLATE "C" PRIMARY KEY,
                secret_sha256 TEXT COLLATE "C" NOT NULL,
                set_at TEXT COLLATE "C" NOT NULL,
                actor TEXT COLLATE "C" NOT NULL
            )
            """,
            """
            CREATE TABLE api_keys (
                key_hmac TEXT COLLATE "C" PRIMARY KEY,
                agent TEXT COLLATE "C" NOT NULL,
                hint TEXT COLLATE "C" NOT NULL,
                added_at TEXT COLLATE "C" NOT NULL,
                actor TEXT COLLATE "C" NOT NULL
            )
            """,
            """CREATE TABLE settings (name TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL)""",
            # The key is made here, not by the server: pgcrypto may not be installed.
            "INSERT INTO settings (name, value) VALUES ('api_key_hash_key', %(hash_key)s)",
        ],
    ),
    (
        "pg001_proxy_leases",
        [
            # Only in PostgreSQL: proxies on other hosts cannot be asked whether they run, so
            # each one renews a lease; holds of an owner whose lease lapsed are settled by the
            # others (see PostgresLedger.recover_orphaned_holds).
            """
            CREATE TABLE proxy_leases (
                owner TEXT COLLATE "C" PRIMARY KEY,
                renewed_at TIMESTAMPTZ NOT NULL
            )
            """
        ],
    ),
]


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    """The migrations recorded in this database (none if it was never migrated)."""
    exists = conn.execute("SELECT to_regclass('spendbrake_migrations')").fetchone()
    if not exists or exists[0] is None:
        return set()
    rows = conn.execute(
        "SELECT name FROM spendbrake_migrations WHERE migration_set = %s", (MIGRATION_SET,)
    )
    return {str(name) for (name,) in rows}


def pending(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    done = applied(conn)
    return [name for name, _ in MIGRATIONS if name not in done]


def apply(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Bring the schema forward, in one transaction; returns the migrations applied."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS spendbrake_migrations (
                migration_set TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                applied_at TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (migration_set, name)
            )
            """
        )
        done = applied(conn)
        ran = []
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                if "%(hash_key)s" in statement:
                    conn.execute(statement, {"hash_key": secrets.token_hex(32)})
                else:
                    conn.execute(statement)  # no parameters: a % is not a placeholder
            conn.execute(
                "INSERT INTO spendbrake_migrations (migration_set, name, applied_at) "
                "VALUES (%s, %s, %s)",
                (MIGRATION_SET, name, datetime.now(UTC).isoformat()),
            )
            ran.append(name)
        return ran
