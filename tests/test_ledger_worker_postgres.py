"""The ledger worker on PostgreSQL: a database that goes away and comes back.

A server of the test's own (``pg_cluster.Cluster``), stopped and started on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pg_cluster
from ledger_hammer import DAY, LIMIT, granted, intent, query, wait_until
from spendbrake.ledger import Ledger, LedgerUnavailable, Settlement, TokenCounts
from spendbrake.ledger_url import PostgresUrl
from spendbrake.mitm import ledger_worker
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.postgres_ledger import PostgresLedger


@pytest.fixture
def cluster() -> Iterator[pg_cluster.Cluster]:
    try:
        cluster = pg_cluster.Cluster()
    except pg_cluster.NoPostgres as e:
        pytest.skip(str(e))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


async def test_a_settlement_refused_while_the_database_was_away_is_written_when_it_returns(
    cluster: pg_cluster.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_worker, "SWEEP_EVERY_S", 0.05)
    location = PostgresUrl(cluster.url)
    running = LedgerWorker(PostgresLedger(location), threads=2)
    try:
        call_id = granted(
            await running.run(lambda ledger: ledger.hold(intent(), 700, LIMIT))
        ).call_id

        def settle(ledger: Ledger) -> None:
            ledger.settle(call_id, Settlement(250, TokenCounts(output_tokens=3), "ok"), LIMIT)

        cluster.stop()
        with pytest.raises(LedgerUnavailable):
            await running.run(settle)
        running.retry_later(settle)
        cluster.start()

        # No call comes through this proxy: the worker tries again by itself.
        def written() -> tuple[object, ...] | None:
            [row] = query(
                location, "SELECT state, outcome, actual_nanos FROM calls WHERE id = ?", (call_id,)
            )
            return row if row[0] == "settled" else None

        assert wait_until(written, "the settlement") == ("settled", "ok", 250)
        assert running.pending_retries() == 0
        [(spent, held)] = query(
            location,
            "SELECT spent_nanos, held_nanos FROM day_totals WHERE agent = ? AND day = ?",
            ("research-bot", DAY),
        )
        assert (spent, held) == (250, 0)
    finally:
        running.close()
