"""Several proxy processes share one ledger (a SQLite file, or a PostgreSQL database as proxies
on several hosts do): together they never record spend above a limit.

Real OS processes (``spawn``), one ledger each, on one file or database, hammering the same daily
window. Some of them are "killed" (``os._exit``) while they hold money; the survivors or a
restarted proxy must settle those holds at their held amount, and nothing a worker was granted
may be lost, invented or counted twice.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import ledger_hammer
from ledger_hammer import (
    CRASH_EXIT,
    DAY,
    SPAWN,
    AnyLedger,
    assert_totals_match_calls,
    child,
    open_at,
    query,
    stop,
    where,
)
from spendbrake.ledger import DayTotals
from spendbrake.ledger_url import LedgerLocation

BOTH_BACKENDS = True  # each test runs on SQLite and on PostgreSQL (conftest)

TIGHT = 2_000_000  # nanos: about 200 calls' worth, so the window fills and refusals pile up
ROOMY = 10**15  # never reached
MAX_HOLD = TIGHT // 40  # each call holds 1..MAX_HOLD and costs 0..its hold
WORKERS = 6
WARMUP = 6  # calls each surviving worker makes before the crashing ones are known dead
assert WORKERS * WARMUP * MAX_HOLD < TIGHT  # so the window cannot fill up before then


@dataclass
class Report:
    """What one worker says happened, parsed from its append-only report file."""

    granted: dict[int, int] = field(default_factory=dict)  # call id -> held
    settled: dict[int, int] = field(default_factory=dict)  # call id -> actual
    refused: set[int] = field(default_factory=set)
    abandoned: set[int] = field(default_factory=set)
    recovered: int = 0
    errors: list[str] = field(default_factory=list)
    grant_totals: list[tuple[int, int, int]] = field(default_factory=list)  # spent, held, limit


def read_report(path: Path) -> Report:
    report = Report()
    for line in path.read_text().splitlines():
        kind, *rest = line.split(" ")
        if kind == "error":
            report.errors.append(" ".join(rest))
            continue
        values = [int(v) for v in rest]
        if kind == "granted":
            call_id, amount, spent, held, limit = values
            assert call_id not in report.granted, f"call {call_id} was granted twice"
            report.granted[call_id] = amount
            report.grant_totals.append((spent, held, limit))
        elif kind == "settled":
            report.settled[values[0]] = values[1]
        elif kind == "refused":
            report.refused.add(values[0])
        elif kind == "abandoned":
            report.abandoned.add(values[0])
        elif kind == "recovered":
            report.recovered += values[0]
    return report


@dataclass
class Worker:
    process: BaseProcess
    report_path: Path
    agent: str
    crashes: bool


@dataclass
class Crew:
    """Hammering workers on one ledger file, each with its report file."""

    workers: list[Worker]
    start: Barrier  # kept here: the children unpickle it after crew() has returned
    go: Event

    def run(self) -> None:
        """Start all; once every crashing worker has died and been reaped, let the rest go on.

        Until ``go`` a surviving worker makes at most WARMUP calls, which cannot fill the window
        (see the module constants), so a crashing worker always has a granted hold to die with.
        After ``go`` the survivors' periodic ``recover_orphaned_holds`` finds those owners dead.
        """
        for w in self.workers:
            w.process.start()
        try:
            for w in self.workers:
                if w.crashes:
                    w.process.join(60)
            self.go.set()
            for w in self.workers:
                w.process.join(60)
        finally:
            for w in self.workers:
                stop(w.process, 0)

    def reports(self, agent: str) -> list[Report]:
        for w in self.workers:
            log = w.report_path.read_text()
            assert w.process.exitcode == (CRASH_EXIT if w.crashes else 0), log[-3000:]
        reports = [read_report(w.report_path) for w in self.workers if w.agent == agent]
        assert not [e for r in reports for e in r.errors]
        return reports


def crew(ledger: LedgerLocation, tmp_path: Path, plan: list[tuple[str, int, bool]]) -> Crew:
    """One hammer per (agent, limit, crashes) in ``plan``, all on the ``ledger`` file."""
    start: Barrier = SPAWN.Barrier(len(plan), timeout=30)
    go = SPAWN.Event()
    workers = []
    for seed, (agent, limit, crashes) in enumerate(plan):
        report_path = tmp_path / f"{agent}-{seed}.log"
        process = SPAWN.Process(
            daemon=True,
            target=ledger_hammer.hammer,
            args=(where(ledger), str(report_path)),
            kwargs={
                "agent": agent,
                "limit": limit,
                "seed": seed,
                "iterations": 200,
                "max_refusals": 40,
                "max_amount": MAX_HOLD,
                "crash_after": seed % 2 if crashes else None,
                "start": start,
                "pause_at": None if crashes else WARMUP,
                "go": go,
            },
        )
        workers.append(Worker(process, report_path, agent, crashes))
    return Crew(workers, start, go)


def check_agent(
    ledger: AnyLedger, path: LedgerLocation, agent: str, limit: int, reports: list[Report]
) -> DayTotals:
    """Every invariant that must hold for one agent's window once all workers are gone."""
    granted = {cid: held for r in reports for cid, held in r.granted.items()}
    settled = {cid: actual for r in reports for cid, actual in r.settled.items()}
    abandoned = set().union(*(r.abandoned for r in reports))
    refused = set().union(*(r.refused for r in reports))
    assert sum(len(r.granted) for r in reports) == len(granted), "a call id was granted twice"
    assert set(settled) | abandoned == set(granted)

    for spent, held, seen_limit in (t for r in reports for t in r.grant_totals):
        assert seen_limit == limit
        assert spent + held <= limit, "a grant left the window over its limit"

    rows = {
        int(str(cid)): (str(state), actual, held, outcome)
        for cid, state, actual, held, outcome in query(
            path,
            "SELECT id, state, actual_nanos, held_nanos, outcome FROM calls "
            "WHERE agent = ? AND day = ?",
            (agent, DAY),
        )
    }
    # No hold lost, none invented: the ledger's forwarded calls are exactly the reported grants.
    assert {cid for cid, row in rows.items() if row[0] != "refused"} == set(granted)
    assert {cid for cid, row in rows.items() if row[0] == "refused"} == refused
    for cid, actual in settled.items():
        assert rows[cid] == ("settled", actual, granted[cid], "ok"), f"call {cid}"
    for cid in abandoned:
        assert rows[cid] == ("settled", granted[cid], granted[cid], "crashed"), f"call {cid}"

    totals = assert_totals_match_calls(ledger, path, agent, DAY, limit)
    assert totals.held_nanos == 0
    assert totals.spent_nanos <= limit
    assert (totals.calls, totals.blocked, totals.budget_blocked) == (
        len(granted),
        len(refused),
        len(refused),
    )
    return totals


def test_processes_sharing_one_ledger_never_spend_past_the_limit(
    path: LedgerLocation, tmp_path: Path
) -> None:
    open_at(path).close()  # created once, as `spendbrake up` would before its workers
    hammers = crew(path, tmp_path, [("research-bot", TIGHT, n < 2) for n in range(WORKERS)])

    hammers.run()

    reports = hammers.reports("research-bot")
    abandoned = sum(len(r.abandoned) for r in reports)
    assert abandoned == 2
    # The survivors, still running, settled the dead workers' holds: once, and only those.
    assert sum(r.recovered for r in reports) == abandoned
    restarted = open_at(path)
    assert restarted.recover_orphaned_holds() == 0
    assert query(path, "SELECT COUNT(*) FROM calls WHERE state = 'held'") == [(0,)]
    [(spent,)] = query(path, "SELECT SUM(actual_nanos) FROM calls WHERE state = 'settled'")
    assert isinstance(spent, int)
    assert spent <= TIGHT

    totals = check_agent(restarted, path, "research-bot", TIGHT, reports)
    # The test did what it set out to: the window filled up, and many holds were refused.
    assert totals.spent_nanos > TIGHT - MAX_HOLD
    assert totals.budget_blocked >= 100
    assert all(r.refused for r in reports if not r.abandoned)  # every survivor was refused
    restarted.close()


def test_two_agents_in_parallel_keep_their_own_windows(
    path: LedgerLocation, tmp_path: Path
) -> None:
    open_at(path).close()
    plan = [
        ("research-bot", TIGHT, True),
        ("triage-bot", ROOMY, True),
        *[("research-bot", TIGHT, False)] * 2,
        *[("triage-bot", ROOMY, False)] * 2,
    ]
    hammers = crew(path, tmp_path, plan)

    hammers.run()

    tight_reports = hammers.reports("research-bot")
    roomy_reports = hammers.reports("triage-bot")
    restarted = open_at(path)
    restarted.recover_orphaned_holds()
    assert query(path, "SELECT COUNT(*) FROM calls WHERE state = 'held'") == [(0,)]
    tight_totals = check_agent(restarted, path, "research-bot", TIGHT, tight_reports)
    roomy_totals = check_agent(restarted, path, "triage-bot", ROOMY, roomy_reports)
    assert tight_totals.budget_blocked > 0  # the tight window was exhausted...
    assert roomy_totals.blocked == 0  # ...and that never refused a call of the other agent
    assert roomy_totals.calls > 2 * 200  # both roomy survivors made all their calls
    assert restarted.agents_with_activity(DAY) == ["research-bot", "triage-bot"]
    restarted.close()


def test_processes_opening_a_new_ledger_at_the_same_time_all_succeed(tmp_path: Path) -> None:
    rounds, n = 10, 4
    barrier = SPAWN.Barrier(n, timeout=30)
    errors: list[str] = []
    with ExitStack() as stack:
        children = [
            stack.enter_context(
                child(ledger_hammer.open_fresh_ledgers, str(tmp_path), rounds, barrier)
            )
            for _ in range(n)
        ]
        for pipe, _ in children:
            assert pipe.poll(60), "a worker never reported"
            errors += pipe.recv()
        processes = [p for _, p in children]
        for p in processes:
            stop(p)
    assert [p.exitcode for p in processes] == [0] * n
    assert errors == [], f"{len(errors)} of {rounds * n} opens failed, e.g. {errors[0]}"
    for i in range(rounds):
        applied = query(tmp_path / f"ledger-{i}.db", "SELECT name FROM _sqlite_migrations")
        assert applied == [
            ("m001_calls_and_totals",),
            ("m002_one_hour_cache_writes",),
            ("m003_estimates_beside_actuals",),
            ("m004_day_totals_kept_by_triggers",),
            ("m005_monthly_group_and_session_windows",),
            ("m006_brakes",),
            ("m007_window_resets",),
            ("m008_no_index_on_start_times",),
            ("m009_windows_after_resets",),
            ("m010_access",),
            ("m011_alerts",),
            ("m012_proxy_leases",),
        ]
