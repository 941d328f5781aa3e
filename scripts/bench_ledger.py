"""Benchmark: holds and settles per second on one SQLite ledger file (`scripts/bench ledger`).

1, 2 and 4 processes, each standing in for a proxy: its own ``SQLiteLedger`` on the shared file,
doing hold-then-settle pairs for one agent as fast as it can for N seconds, with the brakes a
proxy uses by default (loop and backoff: each hold looks up and records the request's
fingerprint) and a limit so high nothing is refused. Reported: pairs per second in total and per
process, and the time one pair takes (p50/p99/max), which is where waiting for the write lock
shows. Afterwards the file is checked: every pair one settled 'ok' row, nothing held, and every
total equal to the sum of its rows (tests/ledger_hammer.py's checks). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))  # ledger_hammer: the ledger tests' helpers and checks
from bench import finish, machine, machine_ticks  # noqa: E402
from bench_async import percentile  # noqa: E402

from ledger_hammer import (  # noqa: E402
    DAY,
    assert_totals_match_calls,
    assert_windows_match_calls,
    intent,
    query,
)
from spendbrake.brakes import Brakes  # noqa: E402
from spendbrake.ledger import HoldGranted, Settlement, TokenCounts  # noqa: E402
from spendbrake.sqlite_ledger import SQLiteLedger  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")
AGENT = "ledger-bench"
LIMIT = 10**18  # nothing is refused: the benchmark measures the write path, not refusals
HOLD = 2_000_000  # $0.002 held, $0.0015 settled: the money is checked afterwards
ACTUAL = 1_500_000
PROCESS_COUNTS = (1, 2, 4)


def worker(path: str, seconds: float, start: Barrier, pipe: Connection) -> None:
    """Hold+settle pairs until ``seconds`` have passed; send back the count and each pair's time."""
    ledger = SQLiteLedger(Path(path))
    brakes = Brakes()  # what a proxy applies when the config says nothing
    durations: list[float] = []
    errors: list[str] = []
    start.wait()
    cpu_before = time.process_time()
    began = time.perf_counter()
    deadline = began + seconds
    pid, n = os.getpid(), 0
    while time.perf_counter() < deadline:
        n += 1
        call = replace(
            intent(AGENT),
            fingerprint=f"{pid}-{n}",
            estimated_input_tokens=20,
            estimated_output_tokens=16,
        )
        started = time.perf_counter()
        try:
            result = ledger.hold(call, HOLD, LIMIT, brakes=brakes)
            if not isinstance(result, HoldGranted):
                raise RuntimeError(f"hold not granted: {result}")
            ledger.settle(
                result.call_id, Settlement(ACTUAL, TokenCounts(20, 0, 0, 0, 9), "ok"), LIMIT
            )
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            if len(errors) >= 5:
                break
            continue
        durations.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    ledger.close()
    pipe.send(
        {
            "pairs": len(durations),
            "durations": durations,
            "errors": errors,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
        }
    )
    pipe.close()


def one_run(processes: int, index: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    path = workdir / f"ledger-{processes}p-{index}.db"
    SQLiteLedger(path).close()  # created and migrated before the clock starts
    start = SPAWN.Barrier(processes + 1)
    children = []
    for _ in range(processes):
        ours, theirs = SPAWN.Pipe()
        child = SPAWN.Process(target=worker, args=(str(path), args.seconds, start, theirs))
        child.start()
        theirs.close()
        children.append((child, ours))
    hz = os.sysconf("SC_CLK_TCK")
    results: list[dict[str, Any]] = []
    try:
        start.wait(timeout=60)
        machine_before, began = machine_ticks(), time.perf_counter()
        for _, pipe in children:
            if pipe.poll(args.seconds + 60):
                results.append(pipe.recv())
        elapsed = time.perf_counter() - began
        machine_after = machine_ticks()
    finally:
        for child, pipe in children:
            pipe.close()
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()

    checks: list[str] = []
    pairs = sum(r["pairs"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    good = len(results) == processes and not errors and pairs > 0
    checks.append(
        f"workers: {len(results)} of {processes} reported, {pairs} pairs, {len(errors)} errors: "
        f"{'OK' if good else 'FAILED'}"
    )
    checks += [f"error: {e}" for e in errors[:5]]
    [(rows, settled, held, spent)] = query(
        path,
        "SELECT count(*), coalesce(sum(state = 'settled' AND outcome = 'ok'), 0), "
        "coalesce(sum(state = 'held'), 0), coalesce(sum(actual_nanos), 0) FROM calls",
    )
    rows_ok = rows == settled == pairs and held == 0 and spent == pairs * ACTUAL
    try:
        ledger = SQLiteLedger(path)
        try:
            totals = assert_totals_match_calls(ledger, path, AGENT, DAY, LIMIT)
            assert_windows_match_calls(path)
            totals_ok = totals.spent_nanos == pairs * ACTUAL and totals.held_nanos == 0
        finally:
            ledger.close()
    except AssertionError as e:
        totals_ok = False
        checks.append(f"totals: {e}")
    good &= rows_ok and totals_ok
    checks.append(
        f"ledger: {rows} rows, {settled} settled ok, {held} held, spent {spent} nanos "
        f"(= pairs x {ACTUAL}: {spent == pairs * ACTUAL}); totals match the rows: "
        f"{'OK' if rows_ok and totals_ok else 'MISMATCH'}"
    )

    durations = sorted(d * 1000 for r in results for d in r["durations"])
    window = max((r["elapsed_s"] for r in results), default=0.0) or args.seconds
    ours = sum(r["cpu_s"] for r in results)
    busy = (machine_after[0] - machine_before[0]) / hz
    return {
        "processes": processes,
        "run": index,
        "ok": good,
        "checks": checks,
        "pairs": pairs,
        "pairs_per_s": pairs / window,
        "per_process": [r["pairs"] / r["elapsed_s"] for r in results],
        "p50_ms": percentile(durations, 50),
        "p99_ms": percentile(durations, 99),
        "max_ms": durations[-1] if durations else float("nan"),
        "cpu_ms_per_pair": ours * 1000 / max(pairs, 1),
        "other_cpu_cores": max(busy - ours, 0.0) / elapsed,
    }


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    print()
    print(
        f"median of {args.repeat} run(s) each; {args.seconds:g} s of hold+settle pairs per "
        "process, one agent, one file"
    )
    print(
        f"{'processes':>9} {'pairs/s':>8} {'per process':>12} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'CPU ms/pair':>11} {'other load':>10}   pairs/s of each run"
    )
    medians = {}
    for processes in args.processes:
        mine = sorted(
            (r for r in runs if r["processes"] == processes), key=lambda r: r["pairs_per_s"]
        )
        run = mine[(len(mine) - 1) // 2]
        medians[processes] = run
        each = ", ".join(f"{r['pairs_per_s']:.0f}" for r in mine)
        per = run["pairs_per_s"] / processes
        print(
            f"{processes:>9} {run['pairs_per_s']:>8.0f} {per:>12.0f} {run['p50_ms']:>7.2f} "
            f"{run['p99_ms']:>7.2f} {run['max_ms']:>7.1f} {run['cpu_ms_per_pair']:>11.3f} "
            f"{run['other_cpu_cores']:>10.2f}   {each}"
        )
    return {"medians": {str(k): v for k, v in medians.items()}}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench ledger",
        description="Hold+settle pairs per second on one SQLite ledger file from 1, 2 and 4 "
        "processes (see docs/benchmarks.md).",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each process runs")
    parser.add_argument(
        "--processes",
        default=",".join(map(str, PROCESS_COUNTS)),
        help="comma-separated process counts to run",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per process count; median shown"
    )
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    try:
        args.processes = [int(p) for p in args.processes.split(",") if p.strip()]
    except ValueError:
        parser.error("--processes: comma-separated whole numbers, e.g. 1,2,4")
    if not args.processes or min(args.processes) < 1 or args.repeat < 1 or args.seconds <= 0:
        parser.error("--processes and --repeat must be >= 1, --seconds > 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = machine()
    print(
        f"machine: {info['nproc']} CPU(s) ({info['cpu']}); Python {info['python']}; "
        f"spendbrake checkout {info['git']}"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="spendbrake-bench-ledger-") as tmp:
        for index in range(1, args.repeat + 1):
            for processes in args.processes:  # interleaved, so drifting load hits all alike
                run = one_run(processes, index, args, Path(tmp))
                runs.append(run)
                print(
                    f"run {index} {processes} process(es) {run['pairs_per_s']:7.0f} pairs/s  p50 "
                    f"{run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  (other load "
                    f"{run['other_cpu_cores']:.2f} cores)"
                )
                for line in run["checks"]:
                    print(f"    {line}")
                sys.stdout.flush()
    result = report(args, runs)
    failed = [f"{r['processes']} processes run {r['run']}" for r in runs if not r["ok"]]
    document = {
        "command": "scripts/bench ledger " + " ".join(argv),
        "machine": info,
        "settings": {
            "seconds": args.seconds,
            "processes": args.processes,
            "repeat": args.repeat,
        },
        "runs": runs,
        **result,
        "failed_checks": failed,
    }
    return finish(args.json, document, failed)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("scripts/bench ledger: interrupted", file=sys.stderr)
        sys.exit(130)
