"""Shared helpers and workers for the ledger tests (test_sqlite_ledger, test_ledger_concurrency).

They live in an importable module (not a test file) because the ``spawn`` start method runs a
worker by importing it by name in a fresh interpreter. Each one stands in for a proxy process:
it opens its own ``SQLiteLedger`` on the shared file, so its owner is its own ``host:pid:ticks``.

Workers that die on purpose use ``os._exit`` (no ``finally``, no ``close``, no flushing), like a
proxy killed by SIGKILL. So that nothing they reported is lost with them, they report through
unbuffered ``os.write`` calls to an append-only file, or ``Connection.send`` on a pipe (which
writes before it returns), never through a ``multiprocessing.Queue`` (its feeder thread dies
with the process).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import psycopg

from spendbrake.ledger import (
    CallIntent,
    DayTotals,
    HoldBraked,
    HoldGranted,
    HoldRefused,
    LedgerUnavailable,
    Settlement,
    TokenCounts,
)
from spendbrake.ledger_url import LedgerLocation, PostgresUrl, open_ledger, parse_location
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

type AnyLedger = SQLiteLedger | PostgresLedger

SPAWN = multiprocessing.get_context("spawn")
DAY = "2026-03-14"
LIMIT = 1_000  # a configured daily limit of 1 µUSD keeps the arithmetic readable
CRASH_EXIT = 3  # exit code of a worker that "was killed" on purpose
ERROR_EXIT = 4  # exit code of a worker that hit an unexpected exception


def intent(agent: str = "research-bot", day: str = DAY, session: str = "s1") -> CallIntent:
    return CallIntent(
        agent=agent,
        session=session,
        provider="openai",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        forwarded_model="gpt-4o",
        stream=False,
        day=day,
        started_at=datetime.now(UTC),
    )


def granted(result: HoldGranted | HoldRefused | HoldBraked) -> HoldGranted:
    assert isinstance(result, HoldGranted), f"expected a grant, got {result}"
    return result


def refused(result: HoldGranted | HoldRefused | HoldBraked) -> HoldRefused:
    assert isinstance(result, HoldRefused), f"expected a refusal, got {result}"
    return result


def open_at(where: LedgerLocation | str, owner: str | None = None) -> AnyLedger:
    """The ledger at a file or PostgreSQL schema (``str``: as passed to a worker process)."""
    return open_ledger(parse_location(where) if isinstance(where, str) else where, owner=owner)


def where(location: LedgerLocation) -> str:
    """A location as a worker process gets it: a string it parses back."""
    return location.url if isinstance(location, PostgresUrl) else str(location)


def query(
    path: LedgerLocation, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    """Read the ledger through a connection of its own: only committed data is visible. The SQL
    is SQLite's (``?`` placeholders); on PostgreSQL, exact sums come back as ints too."""
    if isinstance(path, PostgresUrl):
        with psycopg.connect(path.url, autocommit=True) as pg:
            rows = pg.execute(sql.replace("?", "%s"), params).fetchall()
        return [tuple(int(v) if isinstance(v, Decimal) else v for v in row) for row in rows]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def totals_from_calls(path: LedgerLocation, agent: str, day: str) -> tuple[int, int, int, int, int]:
    """(spent, held, calls, blocked, budget_blocked) summed from the ``calls`` rows alone."""
    [row] = query(
        path,
        """
        SELECT
            COALESCE(SUM(CASE WHEN state = 'settled' THEN actual_nanos END), 0),
            COALESCE(SUM(CASE WHEN state = 'held' THEN held_nanos END), 0),
            COUNT(CASE WHEN state IN ('held', 'settled') THEN 1 END),
            COUNT(CASE WHEN state = 'refused' THEN 1 END),
            COUNT(CASE WHEN state = 'refused'
                AND reason IN ('daily_budget_exceeded', 'monthly_budget_exceeded') THEN 1 END)
        FROM calls WHERE agent = ? AND day = ?
        """,
        (agent, day),
    )
    spent, held, calls, blocked, budget_blocked = (int(str(v)) for v in row)
    return spent, held, calls, blocked, budget_blocked


def assert_totals_match_calls(
    ledger: AnyLedger, path: LedgerLocation, agent: str, day: str, limit: int = LIMIT
) -> DayTotals:
    """The window the ledger reports is exactly the sum of its call rows."""
    totals = ledger.day_totals(agent, day, limit)
    reported = (
        totals.spent_nanos,
        totals.held_nanos,
        totals.calls,
        totals.blocked,
        totals.budget_blocked,
    )
    assert reported == totals_from_calls(path, agent, day), (
        f"day_totals for {agent} on {day} drifted from the calls table"
    )
    assert totals.remaining_nanos == totals.limit_nanos - totals.spent_nanos - totals.held_nanos
    return totals


def assert_windows_match_calls(path: LedgerLocation) -> None:
    """Every month, group and session window is exactly the sum of its call rows."""
    recomputed = query(
        path,
        """
        WITH c AS (
            SELECT agent, session, day, grp,
                CASE state WHEN 'settled' THEN actual_nanos ELSE 0 END AS spent,
                CASE state WHEN 'held' THEN held_nanos ELSE 0 END AS held,
                CASE state WHEN 'settled' THEN input_tokens + output_tokens ELSE 0 END AS st,
                CASE state WHEN 'held'
                    THEN estimated_input_tokens + estimated_output_tokens ELSE 0 END AS ht
            FROM calls WHERE state <> 'refused'
        )
        SELECT 'agent_month', agent, substr(day, 1, 7), SUM(spent), SUM(held), SUM(st), SUM(ht)
            FROM c GROUP BY 2, 3
        UNION ALL SELECT 'session', agent || '/' || session, '', SUM(spent), SUM(held), SUM(st),
            SUM(ht) FROM c GROUP BY 2
        UNION ALL SELECT 'group_day', grp, day, SUM(spent), SUM(held), SUM(st), SUM(ht)
            FROM c WHERE grp <> '' GROUP BY 2, 3
        UNION ALL SELECT 'group_month', grp, substr(day, 1, 7), SUM(spent), SUM(held), SUM(st),
            SUM(ht) FROM c WHERE grp <> '' GROUP BY 2, 3
        ORDER BY 1, 2, 3
        """,
    )
    kept = query(
        path,
        """
        SELECT scope, name, period, spent_nanos, held_nanos, spent_tokens, held_tokens
        FROM window_totals ORDER BY 1, 2, 3
        """,
    )
    assert kept == recomputed, "window_totals drifted from the calls table"


def wait_until[T](check: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    """What ``check`` returns once it is not None (polled; fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def stop(process: BaseProcess, timeout: float = 10) -> None:
    """Give a child ``timeout`` seconds to end by itself, then kill it; never leave one behind."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()


@contextmanager
def child(target: Callable[..., None], *args: object) -> Iterator[tuple[Connection, BaseProcess]]:
    """Run ``target(*args, pipe)`` in a spawned process; yield our end of the pipe and the process.

    On the way out our end is closed (a child blocked in ``recv`` gets EOFError and ends) and
    the child is stopped, so a failing assertion never leaves a process for pytest to wait on.
    """
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        yield ours, process
    finally:
        ours.close()
        stop(process)


def tokens_for(call_id: int, actual: int) -> TokenCounts:
    """Token counts derived from the call, so the test can check they were stored."""
    return TokenCounts(input_tokens=call_id, output_tokens=actual % 1000)


def hold_then_die(path: str, agent: str, amount: int, limit: int, pipe: Connection) -> None:
    """Take one hold and die without settling or closing, like a proxy killed mid-call."""
    ledger = open_at(path)
    result = ledger.hold(intent(agent), amount, limit)
    pipe.send((type(result).__name__, result.call_id, ledger.owner))
    os._exit(CRASH_EXIT)


def hold_then_wait(path: str, agent: str, amount: int, limit: int, pipe: Connection) -> None:
    """Take one hold, stay alive until told what to settle, settle it, report the totals."""
    ledger = open_at(path)
    result = ledger.hold(intent(agent), amount, limit)
    pipe.send((type(result).__name__, result.call_id, ledger.owner))
    actual = pipe.recv()
    totals = ledger.settle(result.call_id, Settlement(actual, TokenCounts(), "ok"), limit)
    pipe.send(totals)
    ledger.close()


def die_holding_the_write_lock(path: str, agent: str, pipe: Connection) -> None:
    """Start a write transaction, write half of a hold, and die before COMMIT."""
    ledger = SQLiteLedger(Path(path))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE day_totals SET held_nanos = held_nanos + 999999 WHERE agent = ?", (agent,))
    pipe.send(ledger.owner)
    os._exit(CRASH_EXIT)


def open_fresh_ledgers(base: str, rounds: int, barrier: Barrier, pipe: Connection) -> None:
    """In each round, open the same brand-new ledger file at the same moment as the others."""
    errors: list[str] = []
    for i in range(rounds):
        barrier.wait()
        try:
            SQLiteLedger(Path(base) / f"ledger-{i}.db").close()
        except LedgerUnavailable as e:
            errors.append(str(e))
    pipe.send(errors)
    pipe.close()


def _report(fd: int, *fields: object) -> None:
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())


def hammer(
    path: str,
    report: str,
    *,
    agent: str,
    limit: int,
    seed: int,
    iterations: int,
    max_refusals: int,
    max_amount: int,
    crash_after: int | None = None,
    start: Barrier | None = None,
    pause_at: int | None = None,
    go: Event | None = None,
) -> None:
    """Loop hold(random) then settle(random actual at most the hold) like a busy proxy.

    Every outcome is appended to ``report`` as one line, written before the next step:
    ``granted ID AMOUNT SPENT HELD LIMIT`` (totals just after the grant), ``settled ID ACTUAL``,
    ``refused ID AMOUNT``, ``abandoned ID`` (the hold this worker dies with) and
    ``recovered COUNT`` (orphans it settled, as a restarting proxy does). With ``crash_after``,
    the first grant at or after that iteration is abandoned and the process exits at once.
    ``start`` lines the workers up once their ledgers are open, so they really overlap; with
    ``pause_at``, the worker waits for ``go`` before that iteration (the test sets it once the
    crashing workers are dead, so they die before the window can fill up).
    """
    rng = random.Random(seed)
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        ledger = open_at(path)
        if start is not None:
            start.wait()
        refusals = 0
        for i in range(iterations):
            if i == pause_at and go is not None and not go.wait(30):
                raise TimeoutError("the test never said go")
            if i % 8 == 0:
                _report(fd, "recovered", ledger.recover_orphaned_holds())
            amount = rng.randint(1, max_amount)
            result = ledger.hold(intent(agent), amount, limit)
            if isinstance(result, HoldRefused):
                _report(fd, "refused", result.call_id, amount)
                refusals += 1
                if refusals >= max_refusals:
                    break
                continue
            assert isinstance(result, HoldGranted)
            t = result.totals
            _report(
                fd, "granted", result.call_id, amount, t.spent_nanos, t.held_nanos, t.limit_nanos
            )
            if crash_after is not None and i >= crash_after:
                _report(fd, "abandoned", result.call_id)
                os._exit(CRASH_EXIT)
            actual = 0 if rng.random() < 0.2 else rng.randint(0, amount)
            ledger.settle(
                result.call_id,
                Settlement(actual, tokens_for(result.call_id, actual), "ok"),
                limit,
            )
            _report(fd, "settled", result.call_id, actual)
        ledger.close()
    except BaseException as e:
        _report(fd, "error", repr(e).replace("\n", " "))
        os._exit(ERROR_EXIT)
    finally:
        os.close(fd)
