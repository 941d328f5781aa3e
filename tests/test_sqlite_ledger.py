"""The ledger on both back ends (a real SQLite file, a real PostgreSQL schema): holds, refusals,
settlement, windows, limits, recovery, faults. Tests about SQLite itself are ``sqlite_only``.

Every amount is integer nanos (1e-9 USD). ``assert_totals_match_calls`` (in ``ledger_hammer``)
checks the ledger's central invariant, used throughout: the running totals in ``day_totals``
always equal what the ``calls`` rows add up to.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlite_utils
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from psycopg.rows import dict_row

import ledger_hammer
import spendbrake.processes
import spendbrake.sqlite_ledger
from ledger_hammer import (
    DAY,
    LIMIT,
    AnyLedger,
    assert_totals_match_calls,
    child,
    granted,
    intent,
    open_at,
    query,
    refused,
    stop,
    wait_until,
    where,
)
from spendbrake import postgres_schema
from spendbrake.ledger import (
    DayTotals,
    HoldGranted,
    HoldRefused,
    LedgerBusy,
    LedgerUnavailable,
    Settlement,
    TokenCounts,
)
from spendbrake.ledger_url import LedgerLocation, PostgresUrl
from spendbrake.sqlite_ledger import SQLiteLedger

BOTH_BACKENDS = True  # each test runs on SQLite and on PostgreSQL (conftest)
NEXT_DAY = "2026-03-15"


# -- helpers -------------------------------------------------------------------------------------


def call_row(path: LedgerLocation, call_id: int) -> dict[str, object]:
    if isinstance(path, PostgresUrl):
        with psycopg.connect(path.url, row_factory=dict_row) as pg:
            found = pg.execute("SELECT * FROM calls WHERE id = %s", (call_id,)).fetchone()
        assert found is not None, f"call {call_id} is not in the ledger"
        return found
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"call {call_id} is not in the ledger"
    return dict(row)


def update_is_refused_as_final(path: LedgerLocation, sql: str, call_id: int) -> None:
    """The database itself (a trigger) refuses the update, whoever sends it."""
    if isinstance(path, PostgresUrl):
        with (
            psycopg.connect(path.url) as pg,
            pytest.raises(psycopg.errors.IntegrityError, match="final"),
        ):
            pg.execute(sql.replace("?", "%s"), (call_id,))
        return
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="final"):
        db.execute(sql, (call_id,))


def ok(actual: int, tokens: TokenCounts | None = None) -> Settlement:
    return Settlement(actual_nanos=actual, tokens=tokens or TokenCounts(), outcome="ok")


# -- schema --------------------------------------------------------------------------------------


def test_a_new_ledger_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "ledger.db"  # the directory is created too
    ledger = open_at(path)
    ledger.hold(intent(), 1, LIMIT)  # the WAL and shared-memory files now exist as well
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        mode = stat.S_IMODE((path.parent / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}; the ledger says who spent what"
    assert query(path, "PRAGMA journal_mode") == [("wal",)]  # persistent, seen by any reader
    ledger.close()


def migrations_table(path: LedgerLocation) -> str:
    return "spendbrake_migrations" if isinstance(path, PostgresUrl) else "_sqlite_migrations"


def test_migrations_are_recorded_and_never_applied_twice(path: LedgerLocation) -> None:
    first = open_at(path)
    call_id = granted(first.hold(intent(), 400, LIMIT)).call_id
    first.close()
    table = migrations_table(path)
    applied = query(path, f"SELECT migration_set, name, applied_at FROM {table} ORDER BY name")
    both = [
        ("spendbrake", "m001_calls_and_totals"),
        ("spendbrake", "m002_one_hour_cache_writes"),
        ("spendbrake", "m003_estimates_beside_actuals"),
        ("spendbrake", "m004_day_totals_kept_by_triggers"),
        ("spendbrake", "m005_monthly_group_and_session_windows"),
        ("spendbrake", "m006_brakes"),
        ("spendbrake", "m007_window_resets"),
        ("spendbrake", "m008_no_index_on_start_times"),
        ("spendbrake", "m009_windows_after_resets"),
        ("spendbrake", "m010_access"),
    ]
    # Each has its own leases, which tell a live proxy on another host from a dead one.
    # SQLite's own: alerts (not yet kept in a PostgreSQL ledger).
    own = (
        [("spendbrake", "pg001_proxy_leases")]
        if isinstance(path, PostgresUrl)
        else [("spendbrake", "m011_alerts"), ("spendbrake", "m012_proxy_leases")]
    )
    assert [(s, n) for s, n, _ in applied] == both + own

    for _ in range(2):
        open_at(path).close()

    assert query(path, f"SELECT migration_set, name, applied_at FROM {table} ORDER BY name") == (
        applied
    )
    if isinstance(path, PostgresUrl):
        with psycopg.connect(path.url) as pg:
            assert postgres_schema.pending(pg) == []
    else:
        reopened = SQLiteLedger(path)
        assert spendbrake.sqlite_ledger.migrations.pending(reopened.db) == []
        reopened.close()
    assert call_row(path, call_id)["held_nanos"] == 400  # reopening kept the data


@pytest.mark.sqlite_only
def test_a_ledger_written_before_the_triggers_keeps_exact_totals_after_upgrade(
    path: Path,
) -> None:
    # A ledger as the proxy left it before m004: its code kept day_totals itself.
    db = sqlite_utils.Database(path)
    spendbrake.sqlite_ledger.migrations.apply(db, stop_before="m004_day_totals_kept_by_triggers")
    db.execute(
        """
        INSERT INTO calls (started_at, day, agent, session, provider, endpoint, requested_model,
            forwarded_model, stream, held_nanos, state, owner)
        VALUES ('2026-11-22T00:00:00+00:00', ?, 'research-bot', 's1', 'openai',
            '/v1/chat/completions', 'gpt-4o', 'gpt-4o', 0, 300, 'held', 'other-host:1:1')
        """,
        (DAY,),
    )
    db.execute(
        "INSERT INTO day_totals (agent, day, held_nanos, calls) VALUES ('research-bot', ?, 300, 1)",
        (DAY,),
    )
    db.conn.commit()
    db.close()

    ledger = open_at(path)
    [(old_call,)] = query(path, "SELECT id FROM calls")
    ledger.settle(old_call, ok(120), LIMIT)
    granted(ledger.hold(intent(), 50, LIMIT))
    totals = assert_totals_match_calls(ledger, path, "research-bot", DAY)
    assert (totals.spent_nanos, totals.held_nanos, totals.calls) == (120, 50, 2)
    ledger.close()


@pytest.mark.parametrize(
    "change",
    [
        "actual_nanos = 1",  # settled: final
        "state = 'held'",  # back from settled
        "held_nanos = held_nanos + 1",
        "day = '2000-01-01'",
        "agent = 'someone-else'",
    ],
)
def test_a_settled_calls_money_cannot_be_rewritten(
    ledger: AnyLedger, path: LedgerLocation, change: str
) -> None:
    call_id = granted(ledger.hold(intent(), 100, LIMIT)).call_id
    ledger.settle(call_id, ok(80), LIMIT)
    update_is_refused_as_final(path, f"UPDATE calls SET {change} WHERE id = ?", call_id)
    assert call_row(path, call_id)["actual_nanos"] == 80
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


@pytest.mark.parametrize(
    "change",
    [
        "state = 'refused'",
        "held_nanos = 1",
        "state = 'settled'",  # without an actual cost
        "state = 'settled', actual_nanos = 5, day = '2000-01-01'",
    ],
)
def test_a_hold_moves_only_to_settled_with_its_actual_cost(
    ledger: AnyLedger, path: LedgerLocation, change: str
) -> None:
    call_id = granted(ledger.hold(intent(), 100, LIMIT)).call_id
    update_is_refused_as_final(path, f"UPDATE calls SET {change} WHERE id = ?", call_id)
    assert call_row(path, call_id)["state"] == "held"
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


CALL_COLUMNS = {
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
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "held_nanos",
    "cache_write_1h_tokens",
    "actual_nanos",
    "state",
    "outcome",
    "reason",
    "owner",
    "settled_at",
    "estimated_input_tokens",
    "estimated_output_tokens",
    "grp",
    "fingerprint",
}


def table_names(path: LedgerLocation) -> set[str]:
    if isinstance(path, PostgresUrl):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return {str(t) for (t,) in query(path, sql)}
    return {str(t) for (t,) in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}


def test_the_schema_holds_call_metadata_only(ledger: AnyLedger, path: LedgerLocation) -> None:
    def columns(table: str) -> set[str]:
        if isinstance(path, PostgresUrl):
            sql = """
                SELECT column_name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = ?
            """
            return {str(name) for (name,) in query(path, sql, (table,))}
        return {str(name) for _, name, *_ in query(path, f"PRAGMA table_info({table})")}

    tables = table_names(path)
    bookkeeping = (
        {"spendbrake_migrations", "proxy_leases"}
        if isinstance(path, PostgresUrl)
        # Alerts are kept in SQLite ledgers only, for now.
        else {"_sqlite_migrations", "alerts", "alert_deliveries", "proxy_leases"}
    )
    assert tables == bookkeeping | {
        "calls",
        "day_totals",
        "window_totals",
        "limits",
        "agent_state",
        "suspensions",
        "events",
        "window_resets",
        "agent_secrets",
        "api_keys",
        "settings",
    }
    assert columns("calls") == CALL_COLUMNS
    assert columns("day_totals") == {
        "agent",
        "day",
        "spent_nanos",
        "held_nanos",
        "calls",
        "blocked",
        "budget_blocked",
    }
    assert columns("limits") == {"agent", "window", "limit_nanos", "set_at"}
    assert columns("window_totals") == {
        "scope",
        "name",
        "period",
        "spent_nanos",
        "held_nanos",
        "spent_tokens",
        "held_tokens",
    }
    # Who may claim an agent is kept as hashes only (agent_keys makes and checks them).
    assert columns("agent_secrets") == {"agent", "secret_sha256", "set_at", "actor"}
    assert columns("api_keys") == {"key_hmac", "agent", "hint", "added_at", "actor"}
    hashes = {"secret_sha256", "key_hmac"}
    everything = set().union(*(columns(t) for t in tables)) - hashes
    for word in ("prompt", "key", "secret", "auth", "completion", "message", "content", "body"):
        assert not [c for c in everything if word in c], f"a column looks like it stores {word}"


def test_opening_a_file_that_is_not_a_ledger_fails_closed(tmp_path: Path) -> None:
    garbage = tmp_path / "ledger.db"
    garbage.write_bytes(b"this is not an SQLite database, whatever its name says" * 100)
    with pytest.raises(LedgerUnavailable, match="cannot open the ledger"):
        SQLiteLedger(garbage)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(LedgerUnavailable, match="cannot open the ledger"):
        SQLiteLedger(tmp_path / "a-file" / "ledger.db")


# -- hold ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier_holds", "amount", "grants"),
    [
        ([], LIMIT, True),  # exactly the limit
        ([], LIMIT + 1, False),  # one nano over
        ([400], 600, True),
        ([400], 601, False),  # an open hold counts like spend
        ([400, 600], 0, True),  # a free call still fits a full window
        ([400, 600], 1, False),
    ],
)
def test_a_hold_is_granted_only_while_spent_plus_held_stays_within_the_limit(
    ledger: AnyLedger, path: LedgerLocation, earlier_holds: list[int], amount: int, grants: bool
) -> None:
    for earlier in earlier_holds:
        granted(ledger.hold(intent(), earlier, LIMIT))
    result = ledger.hold(intent(), amount, LIMIT)
    assert isinstance(result, HoldGranted) is grants
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_granted_totals_count_the_new_hold_against_what_remains(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    first = granted(ledger.hold(intent(), 300, LIMIT))
    ledger.settle(first.call_id, ok(120), LIMIT)
    second = granted(ledger.hold(intent(), 250, LIMIT))
    assert second.held_nanos == 250
    assert second.totals == DayTotals(
        agent="research-bot",
        day=DAY,
        spent_nanos=120,
        held_nanos=250,
        limit_nanos=LIMIT,
        calls=2,
        blocked=0,
    )
    assert second.totals.remaining_nanos == LIMIT - 120 - 250
    assert call_row(path, second.call_id)["state"] == "held"
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_a_refusal_is_recorded_as_a_row_and_never_held(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    granted(ledger.hold(intent(), 700, LIMIT))
    refusal = refused(ledger.hold(intent(), 301, LIMIT))

    assert refusal.requested_nanos == 301
    # The totals the refusal carries are the window it did not fit in: before this refusal.
    assert (refusal.totals.held_nanos, refusal.totals.blocked) == (700, 0)
    row = call_row(path, refusal.call_id)
    assert (row["state"], row["reason"], row["outcome"]) == (
        "refused",
        "daily_budget_exceeded",
        "refused",
    )
    assert row["actual_nanos"] is None
    totals = assert_totals_match_calls(ledger, path, "research-bot", DAY)
    assert (totals.held_nanos, totals.calls) == (700, 1)
    assert (totals.blocked, totals.budget_blocked) == (1, 1)


def test_a_refusal_before_any_hold_counts_as_blocked_but_not_budget_blocked(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    call_id = ledger.refuse(intent(), "unknown_model")
    row = call_row(path, call_id)
    assert (row["state"], row["reason"]) == ("refused", "unknown_model")
    totals = assert_totals_match_calls(ledger, path, "research-bot", DAY)
    assert (totals.calls, totals.blocked, totals.budget_blocked, totals.held_nanos) == (0, 1, 0, 0)


def test_negative_amounts_are_rejected_and_write_nothing(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    with pytest.raises(ValueError, match="negative"):
        ledger.hold(intent(), -1, LIMIT)
    assert query(path, "SELECT COUNT(*) FROM calls") == [(0,)]
    call_id = granted(ledger.hold(intent(), 10, LIMIT)).call_id
    with pytest.raises(ValueError, match="negative"):
        ledger.settle(call_id, ok(-1), LIMIT)
    assert call_row(path, call_id)["state"] == "held"
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


# -- settle --------------------------------------------------------------------------------------


def test_settle_replaces_the_hold_by_the_actual_cost(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    before = datetime.now(UTC)
    call_id = granted(ledger.hold(intent(), 600, LIMIT)).call_id
    tokens = TokenCounts(
        input_tokens=1200,
        cached_input_tokens=1000,
        cache_write_tokens=7,
        cache_write_1h_tokens=5,
        output_tokens=80,
        reasoning_tokens=64,
    )
    totals = ledger.settle(call_id, Settlement(455, tokens, "ok", reason="usage from body"), LIMIT)

    assert (totals.spent_nanos, totals.held_nanos, totals.remaining_nanos) == (455, 0, LIMIT - 455)
    row = call_row(path, call_id)
    assert (row["state"], row["actual_nanos"], row["held_nanos"]) == ("settled", 455, 600)
    assert (row["outcome"], row["reason"]) == ("ok", "usage from body")
    assert (
        row["input_tokens"],
        row["cached_input_tokens"],
        row["cache_write_tokens"],
        row["cache_write_1h_tokens"],
        row["output_tokens"],
        row["reasoning_tokens"],
    ) == (1200, 1000, 7, 5, 80, 64)
    settled_at = datetime.fromisoformat(str(row["settled_at"]))
    assert settled_at.utcoffset() is not None
    assert before <= settled_at <= datetime.now(UTC)
    assert totals == assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_settling_below_the_hold_gives_the_difference_back(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    call_id = granted(ledger.hold(intent(), LIMIT, LIMIT)).call_id
    refused(ledger.hold(intent(), 1, LIMIT))
    ledger.settle(call_id, ok(0), LIMIT)  # e.g. an upstream error that cost nothing
    granted(ledger.hold(intent(), LIMIT, LIMIT))
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_settling_twice_changes_nothing(ledger: AnyLedger, path: LedgerLocation) -> None:
    call_id = granted(ledger.hold(intent(), 600, LIMIT)).call_id
    first = ledger.settle(call_id, ok(400, TokenCounts(input_tokens=10)), LIMIT)
    row = call_row(path, call_id)

    again = ledger.settle(call_id, Settlement(599, TokenCounts(input_tokens=99), "crashed"), LIMIT)

    assert again == first
    assert call_row(path, call_id) == row
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_settling_a_refused_call_changes_nothing(ledger: AnyLedger, path: LedgerLocation) -> None:
    call_id = refused(ledger.hold(intent(), LIMIT + 1, LIMIT)).call_id
    row = call_row(path, call_id)
    totals = ledger.settle(call_id, ok(500), LIMIT)
    assert (totals.spent_nanos, totals.held_nanos) == (0, 0)
    assert call_row(path, call_id) == row
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_settling_an_unknown_call_raises_key_error_and_leaves_the_ledger_usable(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    with pytest.raises(KeyError, match="no call 404"):
        ledger.settle(404, ok(1), LIMIT)
    if isinstance(ledger, SQLiteLedger):
        assert not ledger.db.conn.in_transaction
    granted(ledger.hold(intent(), 1, LIMIT))
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


# -- windows -------------------------------------------------------------------------------------


def test_days_do_not_share_a_window(ledger: AnyLedger, path: LedgerLocation) -> None:
    today = granted(ledger.hold(intent(day=DAY), LIMIT, LIMIT)).call_id
    ledger.settle(today, ok(LIMIT), LIMIT)
    refused(ledger.hold(intent(day=DAY), 1, LIMIT))

    tomorrow = granted(ledger.hold(intent(day=NEXT_DAY), LIMIT, LIMIT))

    assert (tomorrow.totals.spent_nanos, tomorrow.totals.held_nanos) == (0, LIMIT)
    assert assert_totals_match_calls(ledger, path, "research-bot", DAY).spent_nanos == LIMIT
    assert assert_totals_match_calls(ledger, path, "research-bot", NEXT_DAY).spent_nanos == 0


def test_agents_do_not_share_a_window(ledger: AnyLedger, path: LedgerLocation) -> None:
    granted(ledger.hold(intent("research-bot"), LIMIT, LIMIT))
    refused(ledger.hold(intent("research-bot"), 1, LIMIT))

    other = granted(ledger.hold(intent("triage-bot"), LIMIT, LIMIT))

    assert (other.totals.held_nanos, other.totals.blocked) == (LIMIT, 0)
    assert assert_totals_match_calls(ledger, path, "research-bot", DAY).budget_blocked == 1
    assert assert_totals_match_calls(ledger, path, "triage-bot", DAY).budget_blocked == 0
    ledger.hold(intent("night-bot", day=NEXT_DAY), 1, LIMIT)
    assert ledger.agents_with_activity(DAY) == ["research-bot", "triage-bot"]
    assert ledger.agents_with_activity(NEXT_DAY) == ["night-bot"]


# -- limits --------------------------------------------------------------------------------------


def test_a_run_time_limit_wins_over_the_configured_one(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    ledger.set_daily_limit("research-bot", 500)

    refused(ledger.hold(intent(), 501, LIMIT))
    granted(ledger.hold(intent(), 500, LIMIT))
    assert ledger.day_totals("research-bot", DAY, LIMIT).limit_nanos == 500
    assert ledger.day_totals("triage-bot", DAY, LIMIT).limit_nanos == LIMIT  # others unaffected
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


def test_a_limit_set_by_one_process_binds_another_at_once(path: LedgerLocation) -> None:
    proxy, cli = open_at(path), open_at(path)
    granted(proxy.hold(intent(), 400, LIMIT))

    cli.set_daily_limit("research-bot", 400)  # `spendbrake limit` while the proxy runs
    refused(proxy.hold(intent(), 1, LIMIT))

    cli.set_daily_limit("research-bot", 2 * LIMIT)  # raised again: no restart needed either
    assert granted(proxy.hold(intent(), LIMIT, LIMIT)).totals.limit_nanos == 2 * LIMIT

    cli.set_daily_limit("triage-bot", 0)
    assert proxy.daily_limit_overrides() == {"research-bot": 2 * LIMIT, "triage-bot": 0}
    assert cli.daily_limit_overrides() == proxy.daily_limit_overrides()
    assert_totals_match_calls(proxy, path, "research-bot", DAY, 2 * LIMIT)
    proxy.close()
    cli.close()


def test_no_overrides_on_a_new_ledger(ledger: AnyLedger) -> None:
    assert ledger.daily_limit_overrides() == {}
    assert ledger.agents_with_activity(DAY) == []
    assert ledger.day_totals("research-bot", DAY, LIMIT) == DayTotals(
        "research-bot", DAY, spent_nanos=0, held_nanos=0, limit_nanos=LIMIT, calls=0, blocked=0
    )


# -- crash recovery ------------------------------------------------------------------------------


def run_hold_then_die(path: LedgerLocation, amount: int) -> tuple[int, str]:
    """A child process takes a hold and dies without settling. Returns (call id, its owner)."""
    with child(ledger_hammer.hold_then_die, where(path), "research-bot", amount, LIMIT) as (
        pipe,
        p,
    ):
        assert pipe.poll(30), "the child never reported its hold"
        kind, call_id, owner = pipe.recv()
        stop(p)
    assert kind == "HoldGranted"
    assert p.exitcode == ledger_hammer.CRASH_EXIT
    return call_id, owner


def test_holds_of_a_dead_process_are_settled_at_their_held_amount(path: LedgerLocation) -> None:
    open_at(path).close()
    call_id, owner = run_hold_then_die(path, 700)
    assert call_row(path, call_id)["state"] == "held"

    restarted = open_at(path)
    assert restarted.owner != owner
    assert restarted.recover_orphaned_holds() == 1

    row = call_row(path, call_id)
    assert (row["state"], row["outcome"], row["actual_nanos"]) == ("settled", "crashed", 700)
    assert row["settled_at"] is not None
    totals = assert_totals_match_calls(restarted, path, "research-bot", DAY)
    assert (totals.spent_nanos, totals.held_nanos) == (700, 0)
    assert restarted.recover_orphaned_holds() == 0  # nothing is settled twice
    assert assert_totals_match_calls(restarted, path, "research-bot", DAY) == totals
    restarted.close()


def test_holds_of_a_live_process_are_left_alone(path: LedgerLocation) -> None:
    open_at(path).close()
    other = open_at(path)  # a second proxy, started while the first one is mid-call
    with child(ledger_hammer.hold_then_wait, where(path), "research-bot", 700, LIMIT) as (pipe, p):
        assert pipe.poll(30), "the child never reported its hold"
        kind, call_id, _owner = pipe.recv()
        assert kind == "HoldGranted"

        assert other.recover_orphaned_holds() == 0
        assert call_row(path, call_id)["state"] == "held"
        assert assert_totals_match_calls(other, path, "research-bot", DAY).held_nanos == 700

        pipe.send(250)  # the live process finishes its call and settles it itself
        assert pipe.poll(30), "the child never settled"
        assert pipe.recv().spent_nanos == 250
        stop(p)
    assert p.exitcode == 0
    row = call_row(path, call_id)
    assert (row["state"], row["outcome"], row["actual_nanos"]) == ("settled", "ok", 250)
    assert_totals_match_calls(other, path, "research-bot", DAY)
    other.close()


def test_holds_of_another_host_are_left_alone(path: LedgerLocation) -> None:
    # The pid surely does not exist here; it does not matter, because it is not our host's pid.
    elsewhere = open_at(path, owner="proxy-2.example:4194303:1")
    call_id = granted(elsewhere.hold(intent(), 700, LIMIT)).call_id

    local = open_at(path)
    assert local.recover_orphaned_holds() == 0
    assert call_row(path, call_id)["state"] == "held"
    assert_totals_match_calls(local, path, "research-bot", DAY)
    local.close()
    elsewhere.close()


def lease_of(path: LedgerLocation, owner: str) -> object | None:
    rows = query(path, "SELECT renewed_at FROM proxy_leases WHERE owner = ?", (owner,))
    return rows[0][0] if rows else None


def renewed_lease(path: LedgerLocation, owner: str, after: object | None) -> object:
    """The owner's lease once it differs from ``after`` (renewed by the lease thread)."""

    def renewed() -> object | None:
        lease = lease_of(path, owner)
        return lease if lease != after else None

    return wait_until(renewed, f"the lease of {owner} to be renewed", timeout=10)


def test_holds_of_a_proxy_whose_lease_lapsed_are_settled_wherever_it_ran(
    path: LedgerLocation,
) -> None:
    """Another host, or a container with a host name of its own sharing the ledger file: its
    process table is out of sight, so its lease is what says whether it still runs."""
    elsewhere = open_at(path, owner="proxy-2.example:4194303:1")
    elsewhere.renew_lease()
    call_id = granted(elsewhere.hold(intent(), 700, LIMIT)).call_id
    local = open_at(path)

    assert local.recover_orphaned_holds() == 0  # renewed just now: it runs
    assert call_row(path, call_id)["state"] == "held"
    time.sleep(0.05)
    assert local.recover_orphaned_holds(lease_ttl_s=0.01) == 1  # it stopped renewing

    row = call_row(path, call_id)
    assert (row["state"], row["outcome"], row["actual_nanos"]) == ("settled", "crashed", 700)
    assert lease_of(path, elsewhere.owner) is None  # its lease went with it
    totals = assert_totals_match_calls(local, path, "research-bot", DAY)
    assert (totals.spent_nanos, totals.held_nanos) == (700, 0)
    local.close()
    elsewhere.close()


def test_a_kept_lease_is_renewed_until_the_ledger_closes(path: LedgerLocation) -> None:
    proxy = open_at(path, owner="proxy-2.example:4194303:1")
    proxy.keep_lease(every_s=0.02)
    first = renewed_lease(path, proxy.owner, after=None)  # before any hold
    call_id = granted(proxy.hold(intent(), 700, LIMIT)).call_id
    renewed_lease(path, proxy.owner, after=first)

    other = open_at(path)
    assert other.recover_orphaned_holds(lease_ttl_s=1) == 0  # kept: not an orphan
    assert call_row(path, call_id)["state"] == "held"
    proxy.close()
    last = lease_of(path, proxy.owner)
    time.sleep(0.1)  # five renewals' time: none comes
    assert lease_of(path, proxy.owner) == last
    other.close()


def test_a_proxy_that_stops_cleanly_gives_up_its_lease(path: LedgerLocation) -> None:
    proxy = open_at(path)
    proxy.keep_lease(every_s=0.01)
    renewed_lease(path, proxy.owner, after=None)
    granted(proxy.hold(intent(), 700, LIMIT))

    assert proxy.settle_own_holds("shutdown") == 1
    assert lease_of(path, proxy.owner) is None
    time.sleep(0.05)  # several renewals' time: none comes back
    assert lease_of(path, proxy.owner) is None
    proxy.close()


def test_a_recycled_pid_does_not_keep_a_dead_owner_alive(path: LedgerLocation) -> None:
    """The pid of the recovering process itself is alive, but it started at another time."""
    local = open_at(path)
    host, pid, ticks = local.owner.rsplit(":", 2)
    dead = open_at(path, owner=f"{host}:{pid}:{int(ticks) - 1}")
    call_id = granted(dead.hold(intent(), 300, LIMIT)).call_id
    dead.close()
    own = granted(local.hold(intent(), 200, LIMIT)).call_id

    assert local.recover_orphaned_holds() == 1
    assert call_row(path, call_id)["outcome"] == "crashed"
    assert call_row(path, own)["state"] == "held"  # its own holds are not orphans
    assert_totals_match_calls(local, path, "research-bot", DAY)
    local.close()


def test_settle_own_holds_settles_only_this_processs_holds(path: LedgerLocation) -> None:
    this = open_at(path)
    sibling = open_at(path, owner=f"{socket.gethostname()}:1:1")  # pid 1: alive
    mine = [granted(this.hold(intent(), amount, LIMIT)).call_id for amount in (100, 200)]
    theirs = granted(sibling.hold(intent(), 300, LIMIT)).call_id
    done = granted(this.hold(intent(), 50, LIMIT)).call_id
    this.settle(done, ok(10), LIMIT)

    assert this.settle_own_holds("shutdown") == 2

    for call_id, amount in zip(mine, (100, 200), strict=True):
        row = call_row(path, call_id)
        assert (row["state"], row["outcome"]) == ("settled", "shutdown")
        assert row["actual_nanos"] == amount
    assert call_row(path, theirs)["state"] == "held"
    assert call_row(path, done)["actual_nanos"] == 10  # already settled: untouched
    totals = assert_totals_match_calls(this, path, "research-bot", DAY)
    assert (totals.spent_nanos, totals.held_nanos) == (310, 300)
    assert this.settle_own_holds("shutdown") == 0
    this.close()
    sibling.close()


def test_an_owner_that_is_not_host_pid_ticks_is_not_judged(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    foreign = open_at(path, owner="ci-runner")
    call_id = granted(foreign.hold(intent(), 300, LIMIT)).call_id
    foreign.close()
    assert ledger.recover_orphaned_holds() == 0
    assert call_row(path, call_id)["state"] == "held"


@pytest.mark.sqlite_only
def test_a_process_killed_inside_a_write_does_not_wedge_the_ledger(path: Path) -> None:
    ledger = open_at(path)
    granted(ledger.hold(intent(), 100, LIMIT))
    with child(ledger_hammer.die_holding_the_write_lock, str(path), "research-bot") as (pipe, p):
        assert pipe.poll(30), "the child never took the write lock"
        stop(p)
    assert p.exitcode == ledger_hammer.CRASH_EXIT

    started = time.monotonic()
    after = granted(ledger.hold(intent(), 100, LIMIT)).totals
    assert time.monotonic() - started < 1, "the dead writer's lock was waited out, not released"
    assert after.held_nanos == 200  # its uncommitted half-write is gone
    assert_totals_match_calls(ledger, path, "research-bot", DAY)
    ledger.close()


# -- faults --------------------------------------------------------------------------------------


def lock_exclusively(path: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


@pytest.mark.sqlite_only
def test_a_hold_fails_closed_while_another_writer_keeps_the_lock(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    granted(ledger.hold(intent(), 100, LIMIT))
    blocker = lock_exclusively(path)
    try:
        started = time.monotonic()
        with pytest.raises(LedgerBusy, match="locked by another writer") as raised:
            ledger.hold(intent(), 100, LIMIT)
        waited = time.monotonic() - started
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        # It waited out the busy timeout before giving up, and no longer than it has to.
        busy_s = spendbrake.sqlite_ledger.BUSY_TIMEOUT_MS / 1000
        assert busy_s * 0.9 <= waited < busy_s + 3
        # Readers are never blocked in WAL mode: status can still be shown.
        assert ledger.day_totals("research-bot", DAY, LIMIT).held_nanos == 100
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert not ledger.db.conn.in_transaction
    assert granted(ledger.hold(intent(), 100, LIMIT)).totals.held_nanos == 200
    assert query(path, "SELECT COUNT(*) FROM calls") == [(2,)]  # the failed hold left no row
    assert_totals_match_calls(ledger, path, "research-bot", DAY)


@pytest.mark.sqlite_only
def test_every_write_fails_closed_under_a_held_lock(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spendbrake.sqlite_ledger, "BUSY_TIMEOUT_MS", 50)  # keep the test fast
    ledger = open_at(path)
    call_id = granted(ledger.hold(intent(), 100, LIMIT)).call_id
    blocker = lock_exclusively(path)
    try:
        with pytest.raises(LedgerUnavailable):
            ledger.settle(call_id, ok(80), LIMIT)
        with pytest.raises(LedgerUnavailable):
            ledger.refuse(intent(), "unknown_model")
        with pytest.raises(LedgerUnavailable):
            ledger.set_daily_limit("research-bot", 5)
        assert ledger.recover_orphaned_holds() == 0  # no orphan: a read alone, no lock needed
        with pytest.raises(LedgerUnavailable):
            ledger.settle_own_holds("shutdown")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    ledger.settle(call_id, ok(80), LIMIT)  # the settle that failed can simply be retried
    assert call_row(path, call_id)["actual_nanos"] == 80
    assert ledger.daily_limit_overrides() == {}
    assert_totals_match_calls(ledger, path, "research-bot", DAY)
    ledger.close()


# -- properties ----------------------------------------------------------------------------------

AGENTS = ("research-bot", "triage-bot")
DAYS = (DAY, NEXT_DAY)


class LedgerMachine(RuleBasedStateMachine):
    """Random holds, settlements, refusals, limit changes and restarts against a simple model."""

    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.path = self.dir / "ledger.db"
        self.ledger = SQLiteLedger(self.path)
        self.spent = dict.fromkeys(((a, d) for a in AGENTS for d in DAYS), 0)
        self.holding = dict.fromkeys(self.spent, 0)
        self.overrides: dict[str, int] = {}
        self.open_holds: dict[int, tuple[str, str, int]] = {}  # id -> (agent, day, amount)

    def limit(self, agent: str) -> int:
        return self.overrides.get(agent, LIMIT)

    @initialize()
    def nothing_yet(self) -> None:
        assert self.ledger.agents_with_activity(DAY) == []

    @rule(
        target=held,
        agent=st.sampled_from(AGENTS),
        day=st.sampled_from(DAYS),
        amount=st.integers(0, LIMIT + 200),
    )
    def hold(self, agent: str, day: str, amount: int) -> object:
        key = (agent, day)
        fits = self.spent[key] + self.holding[key] + amount <= self.limit(agent)
        result = self.ledger.hold(intent(agent, day), amount, LIMIT)
        assert isinstance(result, HoldGranted) is fits
        if isinstance(result, HoldRefused):
            return multiple()
        assert result.totals.spent_nanos + result.totals.held_nanos <= result.totals.limit_nanos
        self.holding[key] += amount
        self.open_holds[result.call_id] = (agent, day, amount)
        return result.call_id

    @rule(call_id=held, data=st.data())
    def settle(self, call_id: int, data: st.DataObject) -> None:
        if call_id in self.open_holds:
            agent, day, amount = self.open_holds.pop(call_id)
            actual = data.draw(st.integers(0, amount), label="actual")
            self.holding[(agent, day)] -= amount
            self.spent[(agent, day)] += actual
        else:  # settled already (maybe at shutdown): a second settle is a no-op
            actual = data.draw(st.integers(0, LIMIT), label="actual")
        self.ledger.settle(call_id, ok(actual), LIMIT)

    @rule(agent=st.sampled_from(AGENTS), day=st.sampled_from(DAYS))
    def refuse(self, agent: str, day: str) -> None:
        self.ledger.refuse(intent(agent, day), "unknown_model")

    @rule(agent=st.sampled_from(AGENTS), limit=st.integers(0, 2 * LIMIT))
    def set_limit(self, agent: str, limit: int) -> None:
        self.ledger.set_daily_limit(agent, limit)
        self.overrides[agent] = limit

    @rule()
    def restart(self) -> None:
        self.ledger.close()
        self.ledger = SQLiteLedger(self.path)
        assert self.ledger.recover_orphaned_holds() == 0  # our own holds are not orphans

    @precondition(lambda self: bool(self.open_holds))
    @rule()
    def shut_down(self) -> None:
        assert self.ledger.settle_own_holds("shutdown") == len(self.open_holds)
        for agent, day, amount in self.open_holds.values():
            self.holding[(agent, day)] -= amount
            self.spent[(agent, day)] += amount
        self.open_holds.clear()

    @invariant()
    def totals_equal_the_model_and_the_calls(self) -> None:
        for agent, day in self.spent:
            totals = assert_totals_match_calls(self.ledger, self.path, agent, day, LIMIT)
            assert (totals.spent_nanos, totals.held_nanos) == (
                self.spent[(agent, day)],
                self.holding[(agent, day)],
            )
            assert totals.limit_nanos == self.limit(agent)

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase


def test_a_dead_process_not_yet_reaped_by_its_parent_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        owner = f"{socket.gethostname()}:{child.pid}:?"
        while spendbrake.processes.owner_is_alive(owner) and time.monotonic() < deadline:
            time.sleep(0.01)  # it exits at once; its zombie stays until wait() below
        assert not spendbrake.processes.owner_is_alive(owner)
    finally:
        child.wait()


def test_estimates_are_kept_beside_actuals_and_compared_per_model(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    from dataclasses import replace

    for estimated, actual in ((100, 90), (100, 120)):
        call = replace(intent(), estimated_input_tokens=estimated, estimated_output_tokens=10)
        call_id = granted(ledger.hold(call, 500, LIMIT)).call_id
        ledger.settle(call_id, Settlement(200, TokenCounts(input_tokens=actual), "ok"), LIMIT)
    refused = replace(intent(), estimated_input_tokens=5)
    ledger.refuse(refused, "unknown_model")  # refusals are no evidence either way
    [accuracy] = ledger.estimate_accuracy(DAY)
    assert (accuracy.calls, accuracy.held_nanos, accuracy.actual_nanos) == (2, 1000, 400)
    assert (accuracy.estimated_input_tokens, accuracy.actual_input_tokens) == (200, 210)
    assert accuracy.max_input_ratio == 1.2
    assert ledger.estimate_accuracy("2999-01-01") == []
