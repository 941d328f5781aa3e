"""Benchmark: the CPU spendbrake's own hooks take per call, in-process (`scripts/bench hooks`).

The live benchmark (`scripts/bench`) measures spendbrake inside mitmproxy, where this VM's noise
(±20 % between runs minutes apart) is larger than most changes to the hooks. This one drives the
addon mitmproxy loads (`spendbrake.mitm.addon.Spendbrake`) directly: real flows, a real ledger
file, the embedded defaults (loop and backoff brakes on), and the same call as `scripts/bench`
(a short chat completion with a distinct prompt each time, and its JSON answer). It reports the
best and the median of several batches, per call and per hook, and the share of the two ledger
writes (hold and settle). The best batch filters out the moments another process had the CPU.

What it leaves out: mitmproxy's own work around the hooks (TLS, HTTP parsing, addon dispatch),
which `scripts/bench` measures. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import taddons, tflow

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench import finish  # noqa: E402

from spendbrake.mitm.addon import Spendbrake  # noqa: E402
from spendbrake.mitm.ledger_worker import LedgerWorker  # noqa: E402

CONFIG = "[agents.bench]\ndaily_usd = 1000000\n"  # nothing is refused
HOOKS = ("requestheaders", "request", "responseheaders", "response")
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()


def call(number: int) -> http.HTTPFlow:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Say hello to request {number}"}],
        "max_tokens": 16,
    }
    request = http.Request.make(
        "POST",
        "https://api.openai.com/v1/chat/completions",
        json.dumps(body).encode(),
        http.Headers(content_type="application/json", authorization="Bearer sk-bench"),
    )
    flow = tflow.tflow(req=request)
    flow.metadata["proxyauth"] = ("bench", "x")  # as mitmproxy's proxyauth leaves it
    return flow


class TimedWorker:
    """The ledger worker, with the CPU its operations take added up."""

    def __init__(self, worker: LedgerWorker) -> None:
        self.worker, self.cpu_s = worker, 0.0
        self._run = worker.run

    async def run(self, operation: Callable[[Any], Any]) -> Any:
        started = time.process_time()
        try:
            return await self._run(operation)
        finally:
            self.cpu_s += time.process_time() - started


async def one_call(addon: Spendbrake, flow: http.HTTPFlow, cpu: dict[str, float]) -> None:
    steps: list[tuple[str, Callable[[], Awaitable[None] | None]]] = [
        ("requestheaders", lambda: addon.requestheaders(flow)),
        ("request", lambda: addon.request(flow)),
        ("responseheaders", lambda: addon.responseheaders(flow)),
        ("response", lambda: addon.response(flow)),
    ]
    for hook, step in steps:
        if hook == "responseheaders":
            if flow.response is not None:
                raise SystemExit(f"bench hooks: the call was refused: {flow.response.text}")
            flow.response = http.Response.make(200, ANSWER, {"content-type": "application/json"})
        started = time.process_time()
        result = step()
        if result is not None:
            await result
        cpu[hook] += time.process_time() - started


async def measure(calls: int, batches: int, workdir: Path) -> dict[str, Any]:
    (workdir / "bench.toml").write_text(CONFIG)
    addon = Spendbrake()
    with taddons.context(addon) as tctx:  # type: ignore[no-untyped-call]
        tctx.configure(
            addon,
            spendbrake_config=str(workdir / "bench.toml"),
            spendbrake_ledger=str(workdir / "ledger.db"),
        )
        addon.enforcement._warm_up()  # the tokenizer and prices, as `running` loads them
        worker = addon.enforcement.worker
        assert worker is not None
        timed = TimedWorker(worker)
        worker.run = timed.run  # type: ignore[method-assign]
        results = []
        made = 0
        for _ in range(batches):
            flows = [call(made + i) for i in range(calls)]
            made += calls
            cpu = dict.fromkeys(HOOKS, 0.0)
            timed.cpu_s = 0.0
            for flow in flows:
                await one_call(addon, flow, cpu)
            total = sum(cpu.values())
            results.append(
                {
                    "total_us": total / calls * 1e6,
                    "ledger_us": timed.cpu_s / calls * 1e6,
                    **{f"{hook}_us": cpu[hook] / calls * 1e6 for hook in HOOKS},
                }
            )
        addon.done()
    best = min(results, key=lambda r: r["total_us"])
    median = {key: statistics.median(r[key] for r in results) for key in best}
    return {
        "calls_per_batch": calls,
        "batches": results,
        "best": best,
        "median": median,
        "ledger_check": ledger_check(workdir / "ledger.db", made),
    }


def ledger_check(path: Path, sent: int) -> str:
    """Empty when every call was held and settled 'ok' once; else what is wrong."""
    with closing(sqlite3.connect(path)) as db:
        settled, held = db.execute(
            "SELECT COUNT(*) FILTER (WHERE state = 'settled' AND outcome = 'ok'),"
            " COUNT(*) FILTER (WHERE state = 'held') FROM calls"
        ).fetchone()
    if (settled, held) == (sent, 0):
        return ""
    return f"{settled} calls settled ok and {held} held, for {sent} calls sent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=250, help="calls per batch")
    parser.add_argument("--batches", type=int, default=12, help="batches; the best one is shown")
    parser.add_argument("--json", type=Path, help="write every batch and the summary here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spendbrake-bench-hooks-") as workdir:
        result = asyncio.run(measure(args.calls, args.batches, Path(workdir)))
    print(f"spendbrake's hooks, CPU per call ({args.batches} batches of {args.calls} calls)")
    print(f"{'':10} {'total':>8} {'ledger':>8} " + " ".join(f"{h:>15}" for h in HOOKS))
    for name in ("best", "median"):
        row = result[name]
        cells = " ".join(f"{row[f'{h}_us']:>12.0f} us" for h in HOOKS)
        print(f"{name:10} {row['total_us']:>5.0f} us {row['ledger_us']:>5.0f} us {cells}")
    print("ledger = the hold and the settlement (SQLite and the Python around it), inside request")
    print("and response.")
    problem = result["ledger_check"]
    print(f"ledger: {problem or 'one settled ok row per call, nothing held: OK'}")
    sys.exit(finish(args.json, result, ["ledger"] if problem else []))


if __name__ == "__main__":
    main()
