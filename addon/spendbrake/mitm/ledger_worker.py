"""Runs ledger operations without ever stalling the event loop.

One loop serves every agent. A hold or settlement takes ~0.1 ms in SQLite, less than handing it
to a thread and back, so it runs inline on a connection that never waits: if another process
holds the write lock, that connection fails at once (nothing written) and the operation is
retried on a dedicated thread, which may wait. WAL checkpoints (several ms) also run on that
thread, never inline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from spendbrake.ledger import Ledger, LedgerBusy
from spendbrake.sqlite_ledger import SQLiteLedger

log = logging.getLogger(__name__)

# Inline writes between checkpoints: SQLite's own automatic checkpoint is at ~1,000 pages, and a
# call writes a few pages.
CHECKPOINT_EVERY = 300


class LedgerWorker:
    def __init__(
        self, ledger: Ledger, inline: SQLiteLedger | None = None, threads: int = 1
    ) -> None:
        self.ledger = ledger
        self.inline = inline
        if inline is not None:
            inline.never_wait()
        # threads > 1 only for a ledger that is safe to share between them (PostgreSQL's pool).
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="spendbrake-ledger"
        )
        self._inline_runs = 0

    async def run[T](self, operation: Callable[[Ledger], T]) -> T:
        if self.inline is not None:
            try:
                result = operation(self.inline)
            except LedgerBusy:
                pass  # another process is writing: wait for it on the thread, not on the loop
            else:
                self._count_inline_run()
                return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, operation, self.ledger)

    def _count_inline_run(self) -> None:
        self._inline_runs += 1
        if self._inline_runs % CHECKPOINT_EVERY == 0 and isinstance(self.ledger, SQLiteLedger):
            self._executor.submit(self._checkpoint, self.ledger)

    @staticmethod
    def _checkpoint(ledger: SQLiteLedger) -> None:
        try:
            ledger.checkpoint()
        except Exception:
            log.exception("spendbrake: WAL checkpoint failed; it is retried later")

    def run_blocking[T](self, operation: Callable[[Ledger], T]) -> T:
        return self._executor.submit(operation, self.ledger).result()

    def close(self, outcome: str = "proxy_stopped") -> None:
        """Settle what this process still holds (conservatively), then close the ledger."""

        def finish(ledger: Ledger) -> None:
            try:
                ledger.settle_own_holds(outcome)
            finally:
                ledger.close()

        try:
            self.run_blocking(finish)
        finally:
            self._executor.shutdown(wait=True)
            if self.inline is not None:
                self.inline.close()
