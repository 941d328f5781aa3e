"""Runs ledger operations without ever stalling the event loop.

One loop serves every agent. A hold or settlement takes ~0.1 ms in SQLite, less than handing it
to a thread and back, so it runs inline on a connection that never waits: if another process
holds the write lock, that connection fails at once (nothing written) and the operation is
retried on a dedicated thread, which may wait. WAL checkpoints (several ms) also run on that
thread, never inline.

The thread also repairs what a fault left behind, once the ledger works again: settlements that
could not be written (a full disk, a read-only file, a lock held past the busy timeout) are
written then, and holds of a proxy that died beside this one on the same ledger are settled at
their held amount. A fault may clear while no call comes, so a repairer thread of the worker's
own looks every ``SWEEP_EVERY_S`` and, if a write is still owed, hands a sweep to that thread:
the settlement lands without waiting for traffic. The repairer itself never touches the ledger,
and with nothing owed it only reads this worker's own lists, so an idle proxy does no ledger work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from spendbrake.leases import say_recovered
from spendbrake.ledger import Ledger, LedgerBusy, LedgerUnavailable
from spendbrake.offline_allowance import OfflineJournal, OfflineLedger, replay
from spendbrake.sqlite_ledger import SQLiteLedger

log = logging.getLogger(__name__)

# Inline writes between checkpoints: SQLite's own automatic checkpoint is at ~1,000 pages, and a
# call writes a few pages.
CHECKPOINT_EVERY = 300
# How often, at most, a proxy with traffic looks for holds of a proxy that died beside it (they
# count against their windows all along, so this only decides how soon they show as settled),
# and how often the repairer retries writes a fault refused.
SWEEP_EVERY_S = 2.0


class LedgerWorker:
    def __init__(
        self,
        ledger: Ledger,
        inline: SQLiteLedger | None = None,
        threads: int = 1,
        journal: OfflineJournal | None = None,
    ) -> None:
        self.ledger = ledger
        self.inline = inline
        # Calls held on the offline allowance: written into the ledger once it answers again.
        self.journal = journal
        if inline is not None:
            inline.never_wait()
        # threads > 1 only for a ledger that is safe to share between them (PostgreSQL's pool).
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="spendbrake-ledger"
        )
        self._inline_runs = 0
        # Guards what the loop, the repairer and the thread share: the loop adds retries, the
        # thread takes them; whichever starts a sweep claims it here, so only one runs at a time.
        self._lock = threading.Lock()
        self._retries: list[Callable[[Ledger], object]] = []
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        self._sweeping = False
        # Operations ran since the last sweep began: one is owed, so that holds of a proxy that
        # died during the last seconds of traffic are settled even if no call follows.
        self._owed = False
        self._unwritable = False  # the last sweep found the ledger unwritable (said once)
        self._closed = threading.Event()
        self._repairer = threading.Thread(
            target=self._repair_while_open, name="spendbrake-ledger-repair", daemon=True
        )
        self._repairer.start()

    async def run[T](self, operation: Callable[[Ledger], T]) -> T:
        if self.inline is not None:
            try:
                result = operation(self.inline)
            except LedgerBusy:
                pass  # another process is writing: wait for it on the thread, not on the loop
            else:
                self._count_inline_run()
                self._sweep_if_due()
                return result
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, operation, self.ledger)
        self._sweep_if_due()
        return result

    def retry_later(self, operation: Callable[[Ledger], object]) -> None:
        """A write that failed: it is tried again once the ledger works, and at the latest when
        this worker closes (before the holds it leaves are settled at their held amount)."""
        with self._lock:
            self._retries.append(operation)

    def pending_retries(self) -> int:
        with self._lock:
            return len(self._retries)

    def _repair_while_open(self) -> None:
        """Between calls: the sweep is handed to the thread that owns the ledger (on SQLite the
        only one that may wait for it), never run here."""
        while not self._closed.wait(SWEEP_EVERY_S):
            waiting = self.journal is not None and bool(self.journal.settled_entries())
            if self._claim_sweep(waiting=waiting):
                try:
                    self._executor.submit(self._sweep, self.ledger)
                except RuntimeError:  # shut down meanwhile: close() writes what it can
                    return

    def _claim_sweep(self, *, waiting: bool = False, after_operation: bool = False) -> bool:
        """Whether a sweep starts now (the caller then submits it): a write is owed, or
        operations ran and the last sweep is ``SWEEP_EVERY_S`` old. Never two at once."""
        now = time.monotonic()
        with self._lock:
            self._owed = self._owed or after_operation
            due = bool(self._retries) or waiting or (self._owed and now >= self._next_sweep)
            if not due or self._sweeping:
                return False
            self._sweeping, self._owed, self._next_sweep = True, False, now + SWEEP_EVERY_S
            return True

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

    def _sweep_if_due(self) -> None:
        """After an operation that worked: the ledger works, so repairs can be tried."""
        if self._claim_sweep(after_operation=True):
            self._executor.submit(self._sweep, self.ledger)

    def _sweep(self, ledger: Ledger) -> None:
        try:
            self._retry(ledger)
            self._replay_journal(ledger)
            say_recovered(ledger.recover_orphaned_holds())
        except LedgerUnavailable as e:
            # Said once per fault: the repairer tries every few seconds for as long as it lasts.
            if not self._unwritable:
                log.warning("spendbrake: the ledger is not writable yet (%s); retried later", e)
            self._unwritable = True
        except Exception:
            log.exception("spendbrake: repairing the ledger failed; it is retried later")
        else:
            self._unwritable = False
        finally:
            with self._lock:
                self._sweeping = False

    def _retry(self, ledger: Ledger) -> None:
        with self._lock:
            retries, self._retries = self._retries, []
        for i, operation in enumerate(retries):
            try:
                operation(ledger)
            except LedgerUnavailable:
                with self._lock:  # still failing: keep it, and the ones not tried yet
                    self._retries[:0] = retries[i:]
                raise
            except Exception:
                # Not the ledger's state but a bug: retrying would fail forever. Its hold stays
                # and is settled at its amount when the proxy stops.
                log.exception("spendbrake: a settlement failed again; its hold stays")
        if retries:
            log.warning("spendbrake: wrote %d settlement(s) the ledger had refused", len(retries))

    def _replay_journal(self, ledger: Ledger) -> None:
        if self.journal is None:
            return
        if written := replay(self.journal, cast(OfflineLedger, ledger)):
            log.warning(
                "spendbrake: wrote %d call(s) held on the offline allowance into the ledger",
                written,
            )

    def run_blocking[T](self, operation: Callable[[Ledger], T]) -> T:
        return self._executor.submit(operation, self.ledger).result()

    def close(self, outcome: str = "proxy_stopped") -> None:
        """Write what failed before if it can be written now; settle what this process still
        holds (conservatively); then close the ledger."""

        def finish(ledger: Ledger) -> None:
            try:
                try:
                    self._retry(ledger)
                except LedgerUnavailable:
                    log.exception("spendbrake: settlements still not written; settled at the hold")
                if self.journal is not None:
                    self.journal.settle_holds_of_ended(outcome, own=True)
                    try:
                        self._replay_journal(ledger)
                    except LedgerUnavailable:
                        log.exception(
                            "spendbrake: the offline journal %s is written into the ledger at "
                            "the next start",
                            self.journal.path,
                        )
                ledger.settle_own_holds(outcome)
            finally:
                ledger.close()

        # The repairer stops first: nothing may be handed to the thread after ``finish``, which
        # settles this process's remaining holds at their held amount.
        self._closed.set()
        self._repairer.join()
        try:
            self.run_blocking(finish)
        finally:
            self._executor.shutdown(wait=True)
            if self.inline is not None:
                self.inline.close()
            if self.journal is not None:
                self.journal.close()
