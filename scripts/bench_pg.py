"""Benchmark: holds + settles per second on one PostgreSQL ledger from 1, 4 and 16 processes.

Each process stands in for a proxy: it opens its own ``PostgresLedger`` (its own pool) and loops
hold → settle for ``--seconds``, half the processes on agents of their own (no contention) and
half on one shared agent with a tight limit (the overshoot test: every hold of that agent takes
the same advisory lock). Prints, per process count, the operations per second and whether the
shared agent's recorded spend stayed within its limit (it must, always).

Starts a throwaway PostgreSQL cluster (``tests/pg_cluster.py``) unless
``$SPENDBRAKE_TEST_POSTGRES`` names a server. Run it through ``scripts/bench-pg``; see
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pg_cluster  # noqa: E402
from spendbrake.ledger import CallIntent, HoldGranted, Settlement, TokenCounts  # noqa: E402
from spendbrake.ledger_url import PostgresUrl  # noqa: E402
from spendbrake.postgres_ledger import PostgresLedger  # noqa: E402

DAY = "2026-03-14"
SHARED = "shared-bot"
SHARED_LIMIT = 5_000_000  # nanos: 100 calls at most; fills in the first second, then refusals
ROOMY = 10**15
HOLD = 100_000


def intent(agent: str) -> CallIntent:
    return CallIntent(
        agent=agent,
        session="bench",
        provider="openai",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o-mini",
        forwarded_model="gpt-4o-mini",
        stream=False,
        day=DAY,
        started_at=datetime.now(UTC),
    )


def worker(url: str, agent: str, limit: int, seconds: float, ready: object, out: object) -> None:
    ledger = PostgresLedger(PostgresUrl(url), pool_size=1)
    ready.wait()  # type: ignore[attr-defined]  # every process has opened its ledger
    operations = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        result = ledger.hold(intent(agent), HOLD, limit)
        operations += 1
        if isinstance(result, HoldGranted):
            settled = Settlement(HOLD // 2, TokenCounts(input_tokens=10), "ok")
            ledger.settle(result.call_id, settled, limit)
            operations += 1
    ledger.close()
    out.put(operations)  # type: ignore[attr-defined]


def run(server: str, processes: int, seconds: float) -> dict[str, object]:
    schema = f"bench_{processes}_{int(time.time())}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = pg_cluster.schema_url(server, schema).url
    PostgresLedger(PostgresUrl(url)).close()  # migrated once, as the first proxy would
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ready = context.Barrier(processes)
    plan = [(SHARED, SHARED_LIMIT) if n % 2 else (f"own-bot-{n}", ROOMY) for n in range(processes)]
    if processes == 1:
        plan = [(SHARED, SHARED_LIMIT)]
    children = [
        context.Process(target=worker, args=(url, agent, limit, seconds, ready, out))
        for agent, limit in plan
    ]
    for child in children:
        child.start()
    total = sum(out.get(timeout=seconds + 120) for _ in children)
    for child in children:
        child.join()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(actual_nanos), 0), COUNT(*) FILTER (WHERE state = 'refused') "
            "FROM calls WHERE agent = %s",
            (SHARED,),
        ).fetchone()
    assert row is not None
    spent, refused = int(row[0]), int(row[1])
    return {
        "processes": processes,
        "operations_per_s": round(total / seconds),
        "shared_spent_nanos": spent,
        "shared_limit_nanos": SHARED_LIMIT,
        "shared_refused": refused,
        "within_limit": spent <= SHARED_LIMIT,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each run.")
    parser.add_argument(
        "--processes", default="1,4,16", help="Process counts to run, comma-separated."
    )
    parser.add_argument("--json", type=Path, help="Also write the results there as JSON.")
    args = parser.parse_args()
    results = []
    with pg_cluster.running_cluster() as server:
        for n in (int(p) for p in args.processes.split(",")):
            result = run(server, n, args.seconds)
            results.append(result)
            print(
                f"{n:>3} process(es): {result['operations_per_s']:>6} holds+settles/s; "
                f"shared agent spent {result['shared_spent_nanos']:,} of "
                f"{SHARED_LIMIT:,} nanos ({result['shared_refused']:,} refused): "
                f"{'within' if result['within_limit'] else 'OVER'} the limit",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not all(r["within_limit"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
