"""Ledger operations run inline when they cannot wait, and on a thread when they must."""

import asyncio
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
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


async def eventually[T](check: Callable[[], T | None], what: str, timeout: float = 20) -> T:
    """Poll ``check`` (on the loop, which stays free) until it returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


def settled(path: Path, call_id: int) -> tuple[object, ...] | None:
    state = state_of(path, call_id)
    return state if state[0] == "settled" else None


async def a_settlement_locked_out(path: Path) -> tuple[LedgerWorker, int, sqlite3.Connection]:
    """A worker whose settlement of a held call was refused, because another connection (the
    one returned, in a transaction) keeps the write lock; the settlement is kept to retry."""
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
    except BaseException:
        other.close()
        running.close()
        raise
    running.retry_later(settle)
    return running, call_id, other


async def test_a_settlement_the_ledger_refused_is_written_once_it_works_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    running, call_id, other = await a_settlement_locked_out(path)
    try:
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


async def test_a_refused_settlement_is_written_by_itself_once_the_fault_clears_with_no_call_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ledger_worker, "SWEEP_EVERY_S", 0.05)
    path = tmp_path / "l.db"
    running, call_id, other = await a_settlement_locked_out(path)
    try:
        # The worker tries again by itself while the fault lasts, and says so once.
        def refused_again() -> list[str] | None:
            said = [r.getMessage() for r in caplog.records]
            said = [m for m in said if "the ledger is not writable yet" in m]
            return said or None

        await eventually(refused_again, "a retry refused while the lock is held")
        await asyncio.sleep(5 * ledger_worker.SWEEP_EVERY_S)  # more tries, all refused
        assert len(await eventually(refused_again, "the warning")) == 1
        assert state_of(path, call_id) == ("held", None, None)
        # Kept, between tries (a try in progress has taken it off the list).
        await eventually(lambda: running.pending_retries() == 1 or None, "the kept retry")

        other.execute("COMMIT")
        # No call comes through this proxy: the settlement is written all the same.
        assert await eventually(lambda: settled(path, call_id), "the settlement") == (
            "settled",
            "ok",
            250,
        )
        assert running.pending_retries() == 0
        [(spent, held)] = query(
            path,
            "SELECT spent_nanos, held_nanos FROM day_totals WHERE agent = ? AND day = ?",
            ("research-bot", DAY),
        )
        assert (spent, held) == (250, 0)
    finally:
        other.close()
        running.close()


async def test_an_idle_worker_sweeps_once_after_its_last_call_and_then_leaves_the_ledger_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_worker, "SWEEP_EVERY_S", 0.05)
    sweeps: list[int] = []
    original = SQLiteLedger.recover_orphaned_holds

    def recording(self: SQLiteLedger) -> int:
        sweeps.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(SQLiteLedger, "recover_orphaned_holds", recording)
    path = tmp_path / "l.db"
    dead = SQLiteLedger(path, owner=f"{socket.gethostname()}:{os.getpid()}:0")
    orphan = granted(dead.hold(intent(), 700, LIMIT)).call_id
    dead.close()
    running = worker(path)
    try:
        own = granted(await running.run(lambda ledger: ledger.hold(intent(), 300, LIMIT))).call_id
        # The last call is followed by a sweep even though no call comes after it ...
        assert await eventually(lambda: settled(path, orphan), "the orphan's settlement") == (
            "settled",
            "crashed",
            700,
        )
        # ... and then, with nothing to retry, the idle worker does no ledger work at all.
        await asyncio.sleep(10 * ledger_worker.SWEEP_EVERY_S)
        assert len(sweeps) == 1
        assert sweeps[0] != threading.get_ident()  # on the ledger's thread, not the loop
        assert state_of(path, own) == ("held", None, None)
    finally:
        running.close()
