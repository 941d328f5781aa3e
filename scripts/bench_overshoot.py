"""Benchmark: overshoot under concurrency (`scripts/bench overshoot`).

500 calls from 50 agents, 10 each, all sent at the same moment through a real `spendbrake up`
(or several sharing one ledger file, --proxies), against tight daily limits: each agent's limit
is 3.5 times the worst case spendbrake holds for one call, so at most 3 of its 10 calls can be
paid for and the rest must be refused. The fake bills each answered call at its worst case
(x-fake-usage-completion = max_tokens), the hardest case for a limit.

Every repeat checks, from the ledger after the proxies stopped: each agent's recorded spend is
at most its limit, nothing is left held, every answered call is one settled row and every
refusal a 402 daily_budget_exceeded; and that some calls were refused (else the test was not
tight). Reported: calls answered and refused, and the largest spend ÷ limit of any agent.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import ssl
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # a sibling script, not a package
    PATH,
    Proxy,
    fake_call,
    finish,
    machine,
    running,
    start_fake,
    start_proxy,
)
from bench import run_client as bench_run_client
from bench_async import FAKE_BACKLOG, LLM_HOST, Connection

AGENTS = 50
CALLS_EACH = 10
LIMIT_IN_CALLS = Decimal("3.5")
MODEL = "gpt-4o"
MAX_TOKENS = 1000
HANDSHAKES_AT_ONCE = 16
RUN_TIMEOUT_S = 600.0
CALIBRATION_AGENT = "calibrate"


def agent_name(index: int) -> str:
    return f"agent-{index:02d}"


def call_body(agent: int, call: int, model: str = MODEL) -> bytes:
    # Distinct prompts of one length: no loop brake, and the same worst case for every call.
    content = f"Summarise the quarterly report. (agent {agent:02d}, call {call:03d})"
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": MAX_TOKENS,
        }
    ).encode()


# -- the client (its own process) -------------------------------------------------------------


async def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Open one connection per call, then send every call at once.

    spec: "targets" [[port, ca or null], ...] (call n of an agent goes to target n % len),
    "tunnel" (CONNECT with proxy-auth agent:session, as through spendbrake) or not (straight to
    a gateway), "headers", "agents", "calls_each", "model" or "model_prefix" (each agent its
    own model alias + NN), optional "keys" (each agent its own bearer key).
    """
    targets = [
        (port, ssl.create_default_context(cafile=ca) if ca else None)
        for port, ca in spec["targets"]
    ]
    tunnel: bool = spec["tunnel"]
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    start, everyone_connected = asyncio.Event(), asyncio.Event()
    connected = 0

    def one_connected() -> None:
        nonlocal connected
        connected += 1
        if connected == total:
            everyone_connected.set()

    async def connect(agent: int, n: int) -> Connection:
        port, context = targets[n % len(targets)]
        async with gate:
            return await Connection.open(
                port, context, tunnel_auth=f"{agent_name(agent)}:s1" if tunnel else None
            )

    async def call(agent: int, n: int) -> dict[str, Any]:
        outcome: dict[str, Any] = {"agent": agent_name(agent), "call": n}
        try:
            conn = await connect(agent, n)
        except Exception as e:
            return {**outcome, "status": None, "error": f"connect: {type(e).__name__}: {e}"}
        finally:
            one_connected()
        await start.wait()
        prefix, keys = spec.get("model_prefix"), spec.get("keys")
        model = spec["model"] if prefix is None else f"{prefix}{agent:02d}"
        headers = spec["headers"]
        if keys:
            headers = {**headers, "Authorization": f"Bearer {keys[agent_name(agent)]}"}
        try:
            response = await conn.post(PATH, call_body(agent, n, model), headers)
        except Exception as e:
            return {**outcome, "status": None, "error": f"{type(e).__name__}: {e}"}
        finally:
            conn.close()
        headers = response.headers
        return {
            **outcome,
            "status": response.status,
            "reason": headers.get("x-spendbrake-reason"),
            "cost_usd": headers.get("x-spendbrake-cost-usd")
            or headers.get("x-litellm-response-cost"),
            "body": None
            if response.status == 200
            else response.body[:300].decode(errors="replace"),
        }

    total = spec["calls_each"] * spec["agents"]
    tasks = [
        asyncio.ensure_future(call(a, n))
        for n in range(spec["calls_each"])
        for a in range(spec["agents"])
    ]
    await everyone_connected.wait()  # every call is connected before any is sent
    start.set()
    return {"calls": await asyncio.gather(*tasks)}


def run_client(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    return bench_run_client(
        spec, run_dir, script=__file__, name="overshoot client", timeout=RUN_TIMEOUT_S
    )


# -- spendbrake -------------------------------------------------------------------------------


def config(limit_nanos: int) -> str:
    return f'[defaults]\ndaily_usd = "{Decimal(limit_nanos) / 10**9}"\n'


def calibrate(workdir: Path, fake_port: int, fake_ca: Path) -> tuple[int, int]:
    """(held, actual) nanos of one call as the benchmark makes them, read from a ledger."""
    run_dir = workdir / "calibration"
    run_dir.mkdir()
    proxy = start_proxy("spendbrake", run_dir, fake_port, fake_ca)
    with running(proxy.process):
        spec = {
            "targets": [[proxy.port, str(proxy.ca)]],
            "tunnel": True,
            "model": MODEL,
            "headers": headers(),
            "agents": 1,
            "calls_each": 1,
        }
        [outcome] = asyncio.run(client_main(spec))["calls"]
        if outcome["status"] != 200:
            raise RuntimeError(f"calibration call failed: {outcome}\n{proxy.process.output()}")
    assert proxy.ledger is not None
    conn = sqlite3.connect(f"file:{proxy.ledger}?mode=ro", uri=True)
    try:
        [(held, actual)] = conn.execute("SELECT held_nanos, actual_nanos FROM calls").fetchall()
    finally:
        conn.close()
    return int(held), int(actual)


def headers() -> dict[str, str]:
    return {
        "Host": LLM_HOST,
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-bench-not-a-key",
        # The fake bills every call at its worst case: all of max_tokens.
        "x-fake-usage-completion": str(MAX_TOKENS),
    }


def check_spend(
    ledger: Path, limit_nanos: int, outcomes: list[dict[str, Any]]
) -> tuple[bool, list[str], dict[str, Any]]:
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        per_agent = conn.execute(
            "SELECT agent, coalesce(sum(CASE WHEN state = 'settled' THEN actual_nanos END), 0), "
            "coalesce(sum(state = 'settled' AND outcome = 'ok'), 0), "
            "coalesce(sum(state = 'held'), 0), coalesce(sum(state = 'refused'), 0) "
            "FROM calls GROUP BY agent"
        ).fetchall()
        [(totals_held,)] = conn.execute("SELECT coalesce(sum(held_nanos), 0) FROM day_totals")
    finally:
        conn.close()
    answered = {a: 0 for a, *_ in per_agent}
    refused = {a: 0 for a, *_ in per_agent}
    for o in outcomes:
        if o["status"] == 200:
            answered[o["agent"]] = answered.get(o["agent"], 0) + 1
        elif o["status"] == 402 and o["reason"] == "daily_budget_exceeded":
            refused[o["agent"]] = refused.get(o["agent"], 0) + 1
    checks, ok = [], True
    over = [(a, spent) for a, spent, *_ in per_agent if spent > limit_nanos]
    held = sum(h for *_, h, _ in per_agent)
    mismatched = [
        a
        for a, _, settled, _, refusals in per_agent
        if settled != answered[a] or refusals != refused[a]
    ]
    ok &= not over and held == 0 and totals_held == 0 and not mismatched
    ratio = max((spent / limit_nanos for _, spent, *_ in per_agent), default=0.0)
    checks.append(
        f"ledger: {len(per_agent)} agents, largest spend/limit {ratio:.3f}, {len(over)} over their "
        f"limit, {held} calls and {totals_held} nanos still held, {len(mismatched)} agents whose "
        f"rows differ from what the client saw: {'OK' if ok else 'FAILED'}"
    )
    checks += [f"over the limit: {a} spent {s} of {limit_nanos} nanos" for a, s in over[:5]]
    checks += [f"rows differ from the client for {a}" for a in mismatched[:5]]
    return ok, checks, {"max_spend_ratio": ratio, "over_limit": len(over)}


def one_run(
    index: int, args: argparse.Namespace, workdir: Path, fake: tuple[Any, int, Path], held: int
) -> dict[str, Any]:
    _, fake_port, fake_ca = fake
    run_dir = workdir / f"run-{index}"
    run_dir.mkdir()
    fake_call(fake_port, fake_ca, "POST", "/_fake/reset")
    limit = int(held * LIMIT_IN_CALLS)
    ledger = run_dir / "ledger.db"
    proxies: list[Proxy] = []
    try:
        for number in range(args.proxies):
            proxy_dir = run_dir / f"proxy-{number}"
            proxy_dir.mkdir()
            proxies.append(
                start_proxy(
                    "spendbrake", proxy_dir, fake_port, fake_ca, config=config(limit), ledger=ledger
                )
            )
        spec = {
            "targets": [[p.port, str(p.ca)] for p in proxies],
            "tunnel": True,
            "model": MODEL,
            "headers": headers(),
            "agents": args.agents,
            "calls_each": args.calls,
        }
        result = run_client(spec, run_dir)
        for p in proxies:
            p.process.check_alive()
    finally:
        for p in proxies:
            p.process.stop()
    outcomes = result["calls"]
    statuses: dict[str, int] = {}
    for o in outcomes:
        key = str(o["status"]) if o["status"] != 402 else f"402 {o['reason']}"
        statuses[key] = statuses.get(key, 0) + 1
    answered = statuses.get("200", 0)
    refused = statuses.get("402 daily_budget_exceeded", 0)
    received = len(fake_call(fake_port, fake_ca, "GET", "/_fake/requests"))
    total = args.agents * args.calls
    client_ok = answered + refused == total and received == answered and refused > 0
    checks = [
        f"client: {total} calls: "
        + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        + f"; fake received {received}: {'OK' if client_ok else 'FAILED'}"
        + ("" if refused else " (nothing refused: the limits were not tight)")
    ]
    checks += [
        f"error: {o.get('error') or o.get('body')}"
        for o in outcomes
        if o["status"] not in (200, 402)
    ][:5]
    ledger_ok, ledger_checks, spend = check_spend(ledger, limit, outcomes)
    return {
        "run": index,
        "ok": client_ok and ledger_ok,
        "checks": checks + ledger_checks,
        "limit_nanos": limit,
        "answered": answered,
        "refused": refused,
        "statuses": statuses,
        **spend,
    }


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench overshoot",
        description="500 concurrent calls from 50 agents against tight daily limits: no agent's "
        "recorded spend may pass its limit (see docs/benchmarks.md).",
    )
    parser.add_argument("--agents", type=int, default=AGENTS, help="agents")
    parser.add_argument(
        "--calls", type=int, default=CALLS_EACH, help="calls per agent, all at once"
    )
    parser.add_argument(
        "--proxies", type=int, default=1, help="spendbrake processes sharing one ledger file"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repeats; every one must pass")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    if min(args.agents, args.calls, args.proxies, args.repeat) < 1:
        parser.error("--agents, --calls, --proxies and --repeat must be >= 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = machine()
    print(
        f"machine: {info['nproc']} CPU(s) ({info['cpu']}); Python {info['python']}, mitmproxy "
        f"{info['mitmproxy']}; spendbrake checkout {info['git']}"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="spendbrake-bench-overshoot-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir, backlog=FAKE_BACKLOG)
        with running(fake[0]):
            held, actual = calibrate(workdir, fake[1], fake[2])
            limit = int(held * LIMIT_IN_CALLS)
            print(
                f"one call: held ${Decimal(held) / 10**9} (worst case), billed "
                f"${Decimal(actual) / 10**9}; each agent's daily limit "
                f"${Decimal(limit) / 10**9} ({LIMIT_IN_CALLS} holds)"
            )
            for index in range(1, args.repeat + 1):
                run = one_run(index, args, workdir, fake, held)
                runs.append(run)
                print(
                    f"run {index}: {run['answered']} answered, {run['refused']} refused, largest "
                    f"spend/limit {run['max_spend_ratio']:.3f}"
                )
                for line in run["checks"]:
                    print(f"    {line}")
                sys.stdout.flush()
    print()
    print(
        f"{args.agents} agents x {args.calls} calls at once through {args.proxies} spendbrake "
        f"process(es); limit {LIMIT_IN_CALLS} worst-case calls per agent"
    )
    print(f"{'run':>3} {'answered':>8} {'refused':>7} {'max spend/limit':>15} {'agents over':>11}")
    for run in runs:
        print(
            f"{run['run']:>3} {run['answered']:>8} {run['refused']:>7} "
            f"{run['max_spend_ratio']:>15.3f} {run['over_limit']:>11}"
        )
    failed = [f"run {r['run']}" for r in runs if not r["ok"]]
    document = {
        "command": "scripts/bench overshoot " + " ".join(argv),
        "machine": info,
        "settings": {
            "agents": args.agents,
            "calls_each": args.calls,
            "proxies": args.proxies,
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "held_nanos": held,
            "billed_nanos": actual,
            "limit_in_calls": str(LIMIT_IN_CALLS),
        },
        "runs": runs,
        "failed_checks": failed,
    }
    return finish(args.json, document, failed)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client-worker":
        print(json.dumps(asyncio.run(client_main(json.loads(sys.argv[2])))))
        sys.exit(0)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("scripts/bench overshoot: interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
