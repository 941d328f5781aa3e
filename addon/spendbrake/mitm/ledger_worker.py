"""Runs every ledger operation on one dedicated thread, off the event loop.

One loop serves every agent; a ledger write that waits for another process's lock, or a WAL
checkpoint, must stall only the call that needs it. One thread also means one connection,
used in order, so this process's own writes never contend with each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from spendbrake.ledger import Ledger


class LedgerWorker:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spendbrake-ledger")

    async def run[T](self, operation: Callable[[Ledger], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, operation, self.ledger)

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
