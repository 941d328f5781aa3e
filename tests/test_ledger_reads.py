"""The readers behind report, top, export and the status pages: one set of SQL for both back
ends, read-only on both, and one moment of the ledger per snapshot."""

import pytest

import fixed_ledger
from spendbrake.ledger_reads import open_reader, pg_sql, read_only_url, spend_by
from spendbrake.ledger_url import LedgerLocation, PostgresUrl
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.mitm.local_api import LocalApi
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

BOTH_BACKENDS = True  # each ledger test on a SQLite file and on a PostgreSQL schema (conftest)


def test_sql_written_for_sqlite_takes_psycopg_placeholders() -> None:
    assert pg_sql("SELECT a FROM t WHERE b = ? AND c >= ?") == (
        "SELECT a FROM t WHERE b = %s AND c >= %s"
    )
    # A literal % is not a placeholder, and a ? inside a string is a question mark.
    assert pg_sql("SELECT 'why?', a % 2 FROM t WHERE b LIKE 'x%' AND c = ?") == (
        "SELECT 'why?', a %% 2 FROM t WHERE b LIKE 'x%%' AND c = %s"
    )
    assert pg_sql("SELECT 'it''s ?' WHERE a = ?") == "SELECT 'it''s ?' WHERE a = %s"


def test_a_postgresql_reader_connects_with_read_only_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert read_only_url(PostgresUrl("postgresql://db.internal/spendbrake")).url == (
        "postgresql://db.internal/spendbrake?options=-cdefault_transaction_read_only%3Don"
    )
    # A search path in the URL (a team's schema) is kept, and so is the rest of the query.
    team = PostgresUrl("postgresql://u@db/s?sslmode=require&options=-csearch_path%3Dteam_a")
    assert read_only_url(team).url == (
        "postgresql://u@db/s?sslmode=require"
        "&options=-csearch_path%3Dteam_a%20-cdefault_transaction_read_only%3Don"
    )
    # Without options in the URL, libpq would have used PGOPTIONS: the reader keeps it too.
    monkeypatch.setenv("PGOPTIONS", "-cstatement_timeout=5s")
    assert read_only_url(PostgresUrl("postgresql:///s")).url == (
        "postgresql:///s?options=-cstatement_timeout%3D5s%20-cdefault_transaction_read_only%3Don"
    )


def test_a_snapshot_sees_one_moment_whatever_the_proxies_write_meanwhile(
    path: LedgerLocation, ledger: SQLiteLedger | PostgresLedger
) -> None:
    fixed_ledger.write(path)
    late = fixed_ledger._call("research-bot", "11:59:59")
    reader = open_reader(path)
    try:
        with reader.snapshot() as conn:
            before = spend_by(conn, "agent", "2026-03-14")
            ledger.refuse(late, "loop_detected")  # a proxy writes while the snapshot reads
            assert spend_by(conn, "agent", "2026-03-14") == before
            # The ledger's own reads inside the snapshot see the same moment too.
            assert reader.day_totals("research-bot", "2026-03-14", 0).blocked == 1
        assert reader.day_totals("research-bot", "2026-03-14", 0).blocked == 2
    finally:
        reader.close()


def test_the_status_pages_of_a_proxy_read_the_ledger_it_writes(
    path: LedgerLocation, ledger: SQLiteLedger | PostgresLedger
) -> None:
    api = LocalApi()
    worker = LedgerWorker(ledger)
    try:
        api.use(fixed_ledger.config(), worker, AccessCache())
        assert api.app.reader.location == path  # a file, or the PostgreSQL URL itself
    finally:
        api.done()
        worker.close()
