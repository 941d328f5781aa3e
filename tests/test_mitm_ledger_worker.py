"""Ledger operations run inline when they cannot wait, and on a thread when they must."""

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from spendbrake.ledger import Ledger
from spendbrake.mitm import ledger_worker
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.sqlite_ledger import SQLiteLedger


def worker(path: Path) -> LedgerWorker:
    return LedgerWorker(SQLiteLedger(path), inline=SQLiteLedger(path))


def thread_of(ledger: Ledger) -> int:
    ledger.daily_limit_overrides()
    return threading.get_ident()


async def test_an_uncontended_operation_runs_inline_on_the_loop(tmp_path: Path) -> None:
    running = worker(tmp_path / "l.db")
    try:
        assert await running.run(thread_of) == threading.get_ident()
    finally:
        running.close()


async def test_a_locked_ledger_is_waited_for_on_the_thread_not_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    running = worker(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:

        def set_limit(ledger: Ledger) -> int:
            ledger.set_daily_limit("bot", 5)
            return threading.get_ident()

        pending = asyncio.ensure_future(running.run(set_limit))
        await asyncio.sleep(0.2)
        assert not pending.done()  # waiting, on the thread: this loop still runs
        other.execute("COMMIT")
        assert await pending != threading.get_ident()
        assert running.ledger.daily_limit_overrides() == {"bot": 5}
    finally:
        other.close()
        running.close()


async def test_checkpoints_run_on_the_thread_every_so_many_inline_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = worker(tmp_path / "l.db")
    checkpoints: list[int] = []
    original = SQLiteLedger.checkpoint

    def recording(self: SQLiteLedger) -> None:
        checkpoints.append(threading.get_ident())
        original(self)

    monkeypatch.setattr(SQLiteLedger, "checkpoint", recording)
    try:
        for n in range(ledger_worker.CHECKPOINT_EVERY):
            await running.run(lambda ledger, n=n: ledger.set_daily_limit("bot", n))
        running.run_blocking(lambda ledger: None)  # the checkpoint was queued before this
        assert len(checkpoints) == 1
        assert checkpoints[0] != threading.get_ident()
    finally:
        running.close()
