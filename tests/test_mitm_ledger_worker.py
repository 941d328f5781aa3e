"""Ledger operations run inline when they cannot wait, and on a thread when they must."""

import asyncio
import os
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from ledger_hammer import DAY, LIMIT, granted, intent, query
from spendbrake.ledger import Ledger, LedgerUnavailable, Settlement, TokenCounts
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


def state_of(path: Path, call_id: int) -> tuple[object, ...]:
    [row] = query(path, "SELECT state, outcome, actual_nanos FROM calls WHERE id = ?", (call_id,))
    return row


async def test_a_settlement_the_ledger_refused_is_written_once_it_works_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    running = worker(path)
    running.ledger.db.execute("PRAGMA busy_timeout=50")  # give up at once, not after 2 s
    call_id = granted(running.ledger.hold(intent(), 700, LIMIT)).call_id

    def settle(ledger: Ledger) -> None:
        ledger.settle(call_id, Settlement(250, TokenCounts(output_tokens=3), "ok"), LIMIT)

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process keeps the write lock
    try:
        with pytest.raises(LedgerUnavailable):
            await running.run(settle)
        running.retry_later(settle)
        await running.run(lambda ledger: ledger.day_totals("research-bot", DAY, LIMIT))
        running.run_blocking(lambda ledger: None)  # the retry it set off has run, and failed
        assert state_of(path, call_id) == ("held", None, None)

        other.execute("COMMIT")
        await running.run(lambda ledger: ledger.day_totals("research-bot", DAY, LIMIT))
        running.run_blocking(lambda ledger: None)
        assert state_of(path, call_id) == ("settled", "ok", 250)
    finally:
        other.close()
        running.close()


def test_a_settlement_still_refused_at_close_is_tried_before_the_hold_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    running = worker(path)
    call_id = granted(running.ledger.hold(intent(), 700, LIMIT)).call_id
    running.retry_later(
        lambda ledger: ledger.settle(call_id, Settlement(250, TokenCounts(), "ok"), LIMIT)
    )
    running.close()
    assert state_of(path, call_id) == ("settled", "ok", 250)


async def test_a_retried_settlement_that_fails_for_another_reason_does_not_block_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    running = worker(path)
    call_id = granted(running.ledger.hold(intent(), 700, LIMIT)).call_id
    running.retry_later(lambda ledger: ledger.settle(10**9, Settlement(1, TokenCounts(), "ok"), 0))
    running.retry_later(
        lambda ledger: ledger.settle(call_id, Settlement(250, TokenCounts(), "ok"), LIMIT)
    )
    try:
        await running.run(lambda ledger: ledger.day_totals("research-bot", DAY, LIMIT))
        running.run_blocking(lambda ledger: None)
        assert state_of(path, call_id) == ("settled", "ok", 250)
    finally:
        running.close()


async def test_holds_of_a_proxy_that_died_beside_this_one_are_settled_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "l.db"
    monkeypatch.setattr(ledger_worker, "SWEEP_EVERY_S", 0.0)
    running = worker(path)
    # This pid with another start time: the owner is a process that has ended.
    dead = SQLiteLedger(path, owner=f"{socket.gethostname()}:{os.getpid()}:0")
    orphan = granted(dead.hold(intent(), 700, LIMIT)).call_id
    dead.close()
    own = granted(await running.run(lambda ledger: ledger.hold(intent(), 300, LIMIT))).call_id
    running.run_blocking(lambda ledger: None)  # the sweep the hold set off has run
    try:
        assert state_of(path, orphan) == ("settled", "crashed", 700)
        assert state_of(path, own) == ("held", None, None)  # its own live hold: left alone
    finally:
        running.close()
