"""The SQLite ledger's schema, as the migrations that build it, in order.

Applied by ``SQLiteLedger`` on open, under the write lock, so processes that start together
agree on one schema. Migrations are append-only: a ledger written by an older spendbrake is
brought forward, never rebuilt.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

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


@migrations()
def m006_brakes(db: sqlite_utils.Database) -> None:
    """What the brakes read: each call's request fingerprint (loops), each agent's run of
    upstream failures (backoff), suspensions until a person resumes, and an event log."""
    db.execute("ALTER TABLE calls ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX calls_agent_fingerprint ON calls (agent, fingerprint, started_at)")
    db.execute("CREATE INDEX calls_agent_started ON calls (agent, started_at)")
    db.execute(
        """
        CREATE TABLE agent_state (
            agent TEXT PRIMARY KEY,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            last_failure_at TEXT,
            resumed_at TEXT NOT NULL DEFAULT ''  -- loops and burn count calls after this only
        )
        """
    )
    db.execute(
        """
        CREATE TABLE suspensions (
            agent TEXT PRIMARY KEY,
            reason TEXT NOT NULL,  -- the refusal code of the brake that suspended the agent
            detail TEXT NOT NULL,
            since TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,  -- suspended, resumed, limit_set...
            detail TEXT NOT NULL,
            actor TEXT NOT NULL  -- "spendbrake" for a brake, else the person who acted
        )
        """
    )
    # An upstream failure extends the agent's run of failures; a success ends it.
    db.execute(
        """
        CREATE TRIGGER calls_settle_counts_failures AFTER UPDATE OF state ON calls
        WHEN OLD.state = 'held' AND NEW.state = 'settled'
            AND (NEW.outcome = 'ok' OR NEW.outcome IN ('upstream_error', 'upstream_unreachable'))
        BEGIN
            INSERT INTO agent_state (agent, consecutive_failures, last_failure_at)
            VALUES (
                NEW.agent,
                NEW.outcome <> 'ok',
                CASE WHEN NEW.outcome <> 'ok' THEN NEW.settled_at END
            )
            ON CONFLICT (agent) DO UPDATE SET
                consecutive_failures = CASE WHEN NEW.outcome = 'ok' THEN 0
                    ELSE consecutive_failures + 1 END,
                last_failure_at = COALESCE(excluded.last_failure_at, last_failure_at);
        END
        """
    )


@migrations()
def m007_window_resets(db: sqlite_utils.Database) -> None:
    """A window zeroed on purpose (``spendbrake reset``): what was spent stays in the calls and
    totals as it happened; the amount forgiven is kept here and taken off when limits are checked.
    Keyed like window_totals; the agent's day is scope agent_day."""
    db.execute(
        """
        CREATE TABLE window_resets (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,  -- agent_day, agent_month or session
            name TEXT NOT NULL,
            period TEXT NOT NULL,
            forgiven_nanos INTEGER NOT NULL,
            forgiven_tokens INTEGER NOT NULL,
            forgiven_budget_blocked INTEGER NOT NULL DEFAULT 0,
            at TEXT NOT NULL,
            actor TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX window_resets_key ON window_resets (scope, name, period)")


@migrations()
def m008_no_index_on_start_times(db: sqlite_utils.Database) -> None:
    """Every call's insert paid for an index only the optional rate brakes read; they find
    their minute through the (agent, day) index instead."""
    db.execute("DROP INDEX calls_agent_started")


@migrations()
def m009_windows_after_resets(db: sqlite_utils.Database) -> None:
    """Every window as its limits see it: window_totals less what resets forgave. One
    definition for every read that checks or reports a window."""
    db.execute(
        """
        CREATE VIEW windows_after_resets AS
        SELECT scope, name, period,
            spent_nanos - COALESCE((SELECT SUM(forgiven_nanos) FROM window_resets AS r
                WHERE (r.scope, r.name, r.period) = (w.scope, w.name, w.period)), 0)
                AS spent_nanos,
            held_nanos,
            spent_tokens - COALESCE((SELECT SUM(forgiven_tokens) FROM window_resets AS r
                WHERE (r.scope, r.name, r.period) = (w.scope, w.name, w.period)), 0)
                AS spent_tokens,
            held_tokens
        FROM window_totals AS w
        """
    )


@migrations()
def m010_access(db: sqlite_utils.Database) -> None:
    """Who may claim which agent: agents' proxy secrets and API-key fingerprints (hashes only),
    and the proxy's own settings: the key API keys are hashed with, and the admin token's hash."""
    db.execute(
        """
        CREATE TABLE agent_secrets (
            agent TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            set_at TEXT NOT NULL,
            actor TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE api_keys (
            key_hmac TEXT PRIMARY KEY,  -- HMAC-SHA256 of the key with settings.api_key_hash_key
            agent TEXT NOT NULL,
            hint TEXT NOT NULL,  -- the key's last 4 characters, as providers show them
            added_at TEXT NOT NULL,
            actor TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "INSERT INTO settings (name, value) VALUES ('api_key_hash_key', lower(hex(randomblob(32))))"
    )


@migrations()
def m011_alerts(db: sqlite_utils.Database) -> None:
    """Alerts fired, one row each: the unique key decides which proxy fires (the others, and a
    restarted one, find it taken), and their webhook deliveries with what became of them."""
    db.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            fired_at TEXT NOT NULL,
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,  -- threshold, suspended, loop_detected, burn_rate, downgraded...
            window TEXT NOT NULL,  -- daily, monthly, monthly_tokens, or '' for none
            period TEXT NOT NULL,  -- the window's day or month, or the episode's start
            threshold TEXT NOT NULL,  -- '80%' for a threshold, else ''
            summary TEXT NOT NULL,  -- the alert in words, as the log and the webhooks got it
            owner TEXT NOT NULL,  -- the proxy process that fired it
            UNIQUE (agent, kind, window, period, threshold)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE alert_deliveries (
            alert_id INTEGER NOT NULL REFERENCES alerts (id),
            webhook INTEGER NOT NULL,  -- its place in [alerts] webhooks
            target TEXT NOT NULL,  -- scheme and host only: a Slack URL's path is its token
            format TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL,
            PRIMARY KEY (alert_id, webhook)
        )
        """
    )


@migrations()
def m012_proxy_leases(db: sqlite_utils.Database) -> None:
    """Each running proxy's lease (``spendbrake.leases``): a proxy on another host, or in a
    container with a host name of its own, that stopped renewing has died, and its holds are
    orphans."""
    db.execute(
        """
        CREATE TABLE proxy_leases (
            owner TEXT PRIMARY KEY,  -- as calls.owner: host:pid:start
            renewed_at TEXT NOT NULL  -- UTC, ISO 8601 with microseconds
        )
        """
    )
