"""Benchmark: attribution by source process under load (issue 5).

20 client processes open 10 new connections each (200 in all, every one a CONNECT, TLS and one
chat completion, with no credentials), while a steady client keeps calling on one keep-alive
connection with proxy-auth. The proxy's configuration has one process rule per client process
(a marker on its command line), so every new connection costs a peer-port → process lookup.

It checks that all 200 calls are counted as their process's agent (response header and ledger
rows), and measures whether the lookups stall other flows: the steady client's latency during
the storm against before it, and the same storm against a proxy without process rules.
Results go in docs/benchmarks.md. Run it through `scripts/bench-attribution`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # a sibling script, not a package
    BIN,
    HOST,
    PATH,
    free_port,
    probe_through_proxy,
    request_body,
    running,
    spawn,
    start_fake,
    wait_for,
)

PROCESSES = 20
CONNECTIONS_EACH = 10
MARKER = "attr-marker-{:02d}"
STEADY_AGENT = "steady-bot"
BASELINE_S = 3.0


def rules(count: int) -> str:
    return "".join(
        f'[[identify.processes]]\nagent = "proc-{i:02d}"\ncmdline = "*{MARKER.format(i)}*"\n\n'
        for i in range(count)
    )


# -- the clients ------------------------------------------------------------------------------


def tunnel(port: int, ca: str, credentials: str | None) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    headers = {}
    if credentials:
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    conn.set_tunnel(HOST, 443, headers=headers)
    return conn


def chat(conn: http.client.HTTPSConnection, number: int) -> tuple[int, str | None]:
    conn.request(
        "POST",
        PATH,
        request_body(number),
        {"Host": HOST, "Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("x-spendbrake-agent")


def worker(index: int, port: int, ca: str, marker: str) -> None:
    """One agent process: CONNECTIONS_EACH new connections, one call each; prints a report."""
    expected, seen, first_call_s = f"proc-{index:02d}", [], []
    for n in range(CONNECTIONS_EACH):
        conn = tunnel(port, ca, None)
        started = time.perf_counter()
        status, agent = chat(conn, index * 1000 + n)
        first_call_s.append(time.perf_counter() - started)
        conn.close()
        seen.append(agent if status == 200 else f"HTTP {status}")
    print(json.dumps({"expected": expected, "seen": seen, "latencies": first_call_s, "m": marker}))


class Steady(threading.Thread):
    """A keep-alive client calling as fast as it can; latencies stamped with their time."""

    def __init__(self, port: int, ca: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.ca = port, str(ca)
        self.samples: list[tuple[float, float]] = []  # (finished at, seconds)
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        conn = tunnel(self.port, self.ca, f"{STEADY_AGENT}:steady")
        number = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = chat(conn, 10_000_000 + number)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn = tunnel(self.port, self.ca, f"{STEADY_AGENT}:steady")
                continue
            if status != 200:
                self.errors += 1
            self.samples.append((time.perf_counter(), time.perf_counter() - started))
            number += 1
            time.sleep(0.002)  # a steady flow, not a saturating one

    def between(self, start: float, end: float) -> list[float]:
        return sorted(s for at, s in self.samples if start <= at <= end)


# -- one run ----------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


def worker_argv(index: int, port: int, ca: Path) -> list[str]:
    worker = ["--worker", str(index), "--port", str(port), "--ca", str(ca)]
    return [sys.executable, __file__, *worker, MARKER.format(index)]


def one_run(with_rules: bool, workdir: Path, fake_port: int, fake_ca: Path) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="rules-" if with_rules else "norules-", dir=workdir))
    config, ledger, certs = run_dir / "c.toml", run_dir / "ledger.db", run_dir / "certs"
    config.write_text(rules(PROCESSES) if with_rules else "")
    port = free_port()
    argv = [str(BIN / "spendbrake"), "up", "--listen", f"127.0.0.1:{port}"]
    argv += ["--config", str(config), "--ledger", str(ledger)]
    argv += ["--set", f"spendbrake_upstream=127.0.0.1:{fake_port}"]
    argv += ["--set", f"ssl_verify_upstream_trusted_ca={fake_ca}"]
    proxy = spawn("spendbrake", argv, run_dir, env={"SPENDBRAKE_CERTS": str(certs)})
    ca = certs / "mitmproxy-ca-cert.pem"
    with running(proxy):
        wait_for("proxy", proxy, lambda: ca.exists() and probe_through_proxy(port, ca))
        steady = Steady(port, ca)
        steady.start()
        time.sleep(BASELINE_S)
        storm_start = time.perf_counter()
        workers = [
            subprocess.Popen(worker_argv(i, port, ca), stdout=subprocess.PIPE, text=True)
            for i in range(PROCESSES)
        ]
        reports = [json.loads(w.communicate(timeout=300)[0].splitlines()[-1]) for w in workers]
        storm_end = time.perf_counter()
        time.sleep(0.5)
        steady.stop.set()
        steady.join()
    correct = sum(seen == r["expected"] for r in reports for seen in r["seen"])
    conn = sqlite3.connect(ledger)
    rows = dict(conn.execute("SELECT agent, COUNT(*) FROM calls GROUP BY agent"))
    conn.close()
    ledger_ok = all(rows.get(f"proc-{i:02d}") == CONNECTIONS_EACH for i in range(PROCESSES))
    first_calls = sorted(s for r in reports for s in r["latencies"])
    before = steady.between(storm_start - BASELINE_S, storm_start)
    during = steady.between(storm_start, storm_end)
    return {
        "process_rules": with_rules,
        "connections": PROCESSES * CONNECTIONS_EACH,
        "attributed_correctly": correct,
        "ledger_rows_per_agent_ok": ledger_ok if with_rules else None,
        "storm_s": round(storm_end - storm_start, 2),
        "new_connection_call_ms": {"p50": ms(first_calls, 0.5), "p99": ms(first_calls, 0.99)},
        "steady_before_ms": {
            "n": len(before), "p50": ms(before, 0.5), "p99": ms(before, 0.99),
            "max": 1000 * max(before, default=float("nan")),
        },
        "steady_during_ms": {
            "n": len(during), "p50": ms(during, 0.5), "p99": ms(during, 0.99),
            "max": 1000 * max(during, default=float("nan")),
        },
        "steady_errors": steady.errors,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("marker", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.port, args.ca, args.marker)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-attribution-") as tmp:
        workdir = Path(tmp)
        fake, fake_port, fake_ca = start_fake(workdir)
        with running(fake):
            runs = [
                one_run(with_rules, workdir, fake_port, fake_ca)
                for _ in range(args.repeat)
                for with_rules in (False, True)
            ]
    for run in runs:
        print(json.dumps(run))
    for with_rules in (False, True):
        mine = [r for r in runs if r["process_rules"] is with_rules]
        during = statistics.median(r["steady_during_ms"]["p50"] for r in mine)
        before = statistics.median(r["steady_before_ms"]["p50"] for r in mine)
        print(
            f"process rules {'on ' if with_rules else 'off'}: steady p50 {before:.2f} ms before, "
            f"{during:.2f} ms during the storm; attributed "
            f"{min(r['attributed_correctly'] for r in mine)}/{mine[0]['connections']}"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    wrong = [
        r for r in runs if r["process_rules"] and r["attributed_correctly"] != r["connections"]
    ]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
