"""``AccessBook`` in the tables of a PostgreSQL ledger (migration m010), as ``access_book``'s
SQLite version keeps it: hashes only, and every change an event in the ledger's log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from spendbrake.access_book import AccessRecords, LedgerAccessBook
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_reads import PostgresReads, ReadConn
from spendbrake.postgres_ledger import PostgresLedger


class PostgresAccessBook(LedgerAccessBook):
    """In a PostgreSQL ledger: reads in one transaction (one moment of the three tables),
    writes in another."""

    lock_row = " FOR UPDATE"

    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger

    @contextmanager
    def _reading(self) -> Iterator[ReadConn]:
        with self.ledger.write_transaction() as conn:
            yield PostgresReads(conn)

    def _writing(self) -> AbstractContextManager[ReadConn]:
        return self._reading()


class PrefetchedAccessBook(PostgresAccessBook):
    """For the proxy: ``records`` answers from a copy a thread of its own reads every
    ``every_s``, so the event loop never waits on the network. Until the first read succeeds
    it raises, and the proxy trusts no claim (fail closed)."""

    def __init__(self, ledger: PostgresLedger, every_s: float = 2.0) -> None:
        super().__init__(ledger)
        self._copy: AccessRecords | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._refresh, args=(every_s,), name="spendbrake-access", daemon=True
        )
        self._thread.start()

    def _refresh(self, every_s: float) -> None:
        while True:
            try:
                self._copy = super().records()
            except Exception as e:  # the database away: keep the last copy
                self._error = e
            if self.ledger.closed.wait(every_s):
                return

    def records(self) -> AccessRecords:
        if self._copy is None:
            raise LedgerUnavailable(f"access records not read yet: {self._error}")
        return self._copy
