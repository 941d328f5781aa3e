"""Benchmark: the LiteLLM proxy beside bare mitmdump and spendbrake (`scripts/bench litellm`).

LiteLLM is a base-URL gateway, not a forward proxy: clients talk to it directly over plain HTTP
(`base_url=http://host:4000`), and it calls the provider itself. So its client load is the same
threads, requests and keep-alive connections as scripts/bench's, without the CONNECT tunnel and
the TLS between client and proxy that bare mitmdump and spendbrake carry. All three call the
same local fake upstream over HTTPS.

LiteLLM is installed into a virtualenv of its own (never the project's .venv), by pip from the
package registry, the first time (--litellm-venv, default ~/.cache/spendbrake-bench/). Parts:

- throughput: requests/s and latency of bare mitmdump, spendbrake and LiteLLM, interleaved;
- overshoot: the overshoot test of scripts/bench overshoot (50 agents x 10 calls at once, each
  agent's limit 3.5 calls' worth) against LiteLLM's in-memory deployment budgets
  (litellm_params max_budget/budget_duration, one model alias per agent), the one budget feature
  that runs without its database;
- database: LiteLLM's per-key budgets need its database (PostgreSQL through Prisma). This starts
  a throwaway PostgreSQL and LiteLLM with DATABASE_URL, and reports what happens; if LiteLLM
  comes up, it runs the overshoot test with one budgeted virtual key per agent.

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # a sibling script, not a package
from bench import Process, fake_call, free_port, running, spawn, start_fake, wait_for
from bench_async import FAKE_BACKLOG
from bench_overshoot import AGENTS, CALLS_EACH, LIMIT_IN_CALLS, agent_name, call_body
from bench_overshoot import run_client as run_overshoot_client

DEFAULT_VERSION = "1.108.5"
DEFAULT_VENVS = Path.home() / ".cache" / "spendbrake-bench"
PARTS = ("throughput", "overshoot", "database")
THROUGHPUT_TARGETS = ("bare", "spendbrake", "litellm")
OVERSHOOT_MODEL = "gpt-4o"
START_TIMEOUT_S = 240.0  # LiteLLM imports for 10-20 s on an idle 2-vCPU machine
# Installed into the LiteLLM venv for the database part: what litellm[extra_proxy] adds for it.
DATABASE_PACKAGES = ("prisma>=0.11.0,<1.0", "psycopg[binary]>=3.2,<4.0")
# uvicorn's per-request access log off: bare mitmdump logs nothing per request either.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}},
}


# -- installing LiteLLM -----------------------------------------------------------------------


def pip(venv: Path, *arguments: str, log: Path) -> bool:
    with log.open("ab") as out:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return done.returncode == 0


def proxy_requirements(wheel: Path, version: str) -> list[str]:
    """litellm[proxy]'s requirements from the wheel's metadata, certifi's lower bound dropped."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    metadata = zipfile.ZipFile(wheel).read(f"litellm-{version}.dist-info/METADATA").decode()
    requirements = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = Requirement(line.removeprefix("Requires-Dist: "))
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": "proxy"}):
            continue
        if requirement.name == "certifi":
            requirement.specifier = SpecifierSet()
        requirement.marker = None
        requirements.append(str(requirement))
    return requirements


def ensure_litellm(venv: Path, version: str) -> list[str]:
    """Install litellm[proxy]==version into ``venv`` unless it is there; return notes."""
    litellm = venv / "bin" / "litellm"
    stamp = venv / "spendbrake-bench-installed"
    if litellm.exists() and stamp.exists() and stamp.read_text().strip() == version:
        return [f"LiteLLM {version} already installed in {venv}"]
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"install-litellm-{version}.log"
    log.write_text("")
    print(f"installing litellm[proxy]=={version} into {venv} (pip output in {log})...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip(venv, "install", "--upgrade", "pip", log=log)
    notes = []
    if pip(venv, "install", f"litellm[proxy]=={version}", log=log):
        notes.append(f"installed litellm[proxy]=={version} from the registry")
    else:
        # Every litellm release since late 2026 requires certifi >= 2026.10.19, which the
        # registry here does not have (certifi is only a CA bundle; the bound is freshness).
        wheels = venv / "wheels"
        wheels.mkdir(exist_ok=True)
        if not pip(
            venv, "download", "--no-deps", "-d", str(wheels), f"litellm=={version}", log=log
        ):
            raise RuntimeError(f"cannot download litellm=={version}; see {log}")
        [wheel] = wheels.glob(f"litellm-{version}-*.whl")
        requirements = proxy_requirements(wheel, version)
        if not pip(venv, "install", *requirements, log=log) or not pip(
            venv, "install", "--no-deps", str(wheel), log=log
        ):
            raise RuntimeError(f"cannot install litellm[proxy]=={version}; see {log}")
        notes.append(
            f"pip install litellm[proxy]=={version} failed (see {log}); installed its "
            "requirements with certifi's lower bound dropped, then the wheel with --no-deps"
        )
    stamp.write_text(version + "\n")
    return notes


# -- running LiteLLM --------------------------------------------------------------------------


def model_entry(alias: str, fake_port: int, model: str, **budget: Any) -> dict[str, Any]:
    return {
        "model_name": alias,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_base": f"https://127.0.0.1:{fake_port}/v1",
            "api_key": "sk-fake-not-a-key",
            **budget,
        },
    }


def start_litellm(
    name: str,
    run_dir: Path,
    venv: Path,
    models: list[dict[str, Any]],
    fake_ca: Path,
    master_key: str,
    env: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> tuple[Process, int]:
    port = free_port()
    config = run_dir / f"{name}.yaml"  # JSON is YAML
    config.write_text(
        json.dumps(
            {
                "model_list": models,
                "litellm_settings": {"num_retries": 0, "request_timeout": 60},
                "general_settings": {"master_key": master_key},
            },
            indent=2,
        )
    )
    log_config = run_dir / "litellm-logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log_config", str(log_config)]
    process = spawn(
        name,
        argv,
        run_dir,
        env={
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            # The price map ships in the package; without this LiteLLM fetches it at start.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "SSL_VERIFY": str(fake_ca),  # trust the fake's own CA when calling it
            "SSL_CERT_FILE": str(fake_ca),
            **(env or {}),
        },
    )

    def alive() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health/liveliness")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    try:
        wait_for(f"LiteLLM ({name})", process, alive, timeout=timeout)
    except BaseException:
        process.stop()
        raise
    return process, port


def litellm_call(port: int, master_key: str, method: str, path: str, body: Any = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {master_key}", "Content-Type": "application/json"}
        conn.request(method, path, data, headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(
                f"LiteLLM {method} {path}: HTTP {response.status}: {payload[:300]!r}"
            )
        return json.loads(payload), dict(response.getheaders())
    finally:
        conn.close()


# -- throughput -------------------------------------------------------------------------------


def litellm_throughput_run(
    index: int,
    args: argparse.Namespace,
    workdir: Path,
    fake: tuple[Process, int, Path],
    venv: Path,
) -> dict[str, Any]:
    fake_process, fake_port, fake_ca = fake
    run_dir = workdir / f"litellm-{index}"
    run_dir.mkdir()
    fake_call(fake_port, fake_ca, "POST", "/_fake/reset")
    master_key = "sk-bench-" + secrets.token_hex(32)
    models = [model_entry(bench.MODEL, fake_port, bench.MODEL)]
    process, port = start_litellm("litellm", run_dir, venv, models, fake_ca, master_key)
    load_before = os.getloadavg()[0]
    fake_call(fake_port, fake_ca, "POST", "/_fake/reset")  # LiteLLM's start-up calls nothing
    spec: dict[str, Any] = {
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "pids": {"fake": fake_process.popen.pid, "proxy": process.popen.pid},
        "connect": ["127.0.0.1", port],
        "plain_http": True,
        "headers": {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {master_key}"},
    }
    with running(process):
        result = bench.run_client(spec, run_dir)
        process.check_alive()
    received = len(fake_call(fake_port, fake_ca, "GET", "/_fake/requests"))
    ok = (
        result["errors"] == 0
        and received == result["ok"] == result["sent"]
        and result["connections"] == args.concurrency
    )
    checks = [
        f"client: {result['sent']} sent, {result['ok']} ok, {result['errors']} errors, "
        f"{result['connections']} connections; fake received {received}: "
        f"{'OK' if ok else 'MISMATCH'}"
    ]
    checks += [f"error: {e}" for e in result["errors_sample"]]
    return bench.run_summary("litellm", index, result, checks, ok, load_before)


def throughput(
    args: argparse.Namespace, workdir: Path, fake: tuple[Process, int, Path], venv: Path
) -> tuple[dict[str, Any], list[str]]:
    runs: list[dict[str, Any]] = []
    for index in range(1, args.repeat + 1):
        for target in THROUGHPUT_TARGETS:
            if target == "litellm":
                run = litellm_throughput_run(index, args, workdir, fake, venv)
            else:
                run = bench.one_run(target, index, args, workdir, fake)
            runs.append(run)
            cpu = run["cpu_ms_per_request"].get("proxy")
            print(
                f"run {index} {target:<10} {run['rps']:7.0f} req/s  p50 {run['p50_ms']:6.2f} ms  "
                f"p99 {run['p99_ms']:6.2f} ms  proxy CPU {bench.fmt_cpu(cpu)} ms/req  (other "
                f"load {run['other_cpu_cores']:.2f} cores)"
            )
            for line in run["checks"]:
                print(f"    {line}")
            sys.stdout.flush()
    args.targets = list(THROUGHPUT_TARGETS)
    result = bench.report(args, runs)
    medians = result["medians"]
    for other in ("bare", "spendbrake"):
        ratio = medians["litellm"]["rps"] / medians[other]["rps"]
        added = medians["litellm"]["p50_ms"] - medians[other]["p50_ms"]
        result["summary"][f"litellm_rps_ratio_to_{other}"] = ratio
        print(f"litellm / {other}: {ratio:.1%} of the requests/s, median {added:+.2f} ms")
    failed = [f"{r['target']} run {r['run']}" for r in runs if not r["ok"]]
    return {"runs": runs, **result}, failed


# -- overshoot --------------------------------------------------------------------------------


def overshoot_headers(port: int, master_key: str) -> dict[str, str]:
    return {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {master_key}",
    }


def calibrate_cost(workdir: Path, venv: Path, fake: tuple[Process, int, Path]) -> Decimal:
    """What LiteLLM bills one overshoot call (its x-litellm-response-cost)."""
    _, fake_port, fake_ca = fake
    run_dir = workdir / "litellm-calibration"
    run_dir.mkdir()
    master_key = "sk-bench-" + secrets.token_hex(32)
    models = [model_entry(OVERSHOOT_MODEL, fake_port, OVERSHOOT_MODEL)]
    process, port = start_litellm("litellm", run_dir, venv, models, fake_ca, master_key)
    with running(process):
        return calibration_call(port, master_key)


def calibration_call(port: int, master_key: str) -> Decimal:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", bench.PATH, call_body(99, 999), overshoot_headers(port, master_key))
        response = conn.getresponse()
        body = response.read()
        cost = response.getheader("x-litellm-response-cost")
    finally:
        conn.close()
    if response.status != 200 or not cost:
        raise RuntimeError(
            f"LiteLLM calibration call: HTTP {response.status}, cost {cost!r}: {body[:300]!r}"
        )
    # LiteLLM computes in floats (0.00014000000000000001): 12 decimals keep the dollars.
    return Decimal(cost).quantize(Decimal("1e-12")).normalize()


def spend_by_agent(outcomes: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Each agent's spend as LiteLLM billed it: the costs of its answered calls."""
    spend: dict[str, Decimal] = {}
    for o in outcomes:
        if o["status"] == 200:
            spend[o["agent"]] = spend.get(o["agent"], Decimal(0)) + Decimal(o["cost_usd"] or "0")
    return spend


def overshoot_result(
    label: str,
    outcomes: list[dict[str, Any]],
    limit: Decimal,
    received: int,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], bool]:
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o["status"])] = statuses.get(str(o["status"]), 0) + 1
    answered = statuses.get("200", 0)
    spend = spend_by_agent(outcomes)
    ratios = {a: float(s / limit) for a, s in spend.items()}
    over = sorted(a for a, r in ratios.items() if r > 1)
    unanswered = statuses.get("None", 0)
    # A valid run: every call got an HTTP answer and the fake saw each answered call once.
    ok = (
        unanswered == 0
        and received == answered
        and all(o["cost_usd"] for o in outcomes if o["status"] == 200)
    )
    samples: dict[str, str] = {}
    for o in outcomes:
        if o["status"] not in (200, None):
            samples.setdefault(str(o["status"]), o["body"])
    errors = [o["error"] for o in outcomes if o.get("error")][:5]
    result: dict[str, Any] = {
        "label": label,
        "ok": ok,
        "limit_usd": str(limit),
        "answered": answered,
        "statuses": statuses,
        "fake_received": received,
        "max_spend_ratio": max(ratios.values(), default=0.0),
        "agents_over_limit": len(over),
        "answered_per_agent_max": max(
            (sum(1 for o in outcomes if o["agent"] == a and o["status"] == 200) for a in spend),
            default=0,
        ),
        "answer_samples": samples,
        "errors_sample": errors,
    }
    total = args.agents * args.calls
    print(
        f"{label}: {total} calls: "
        + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        + f"; fake received {received}; {len(over)} of {len(spend)} agents over their limit, "
        f"largest spend/limit {result['max_spend_ratio']:.2f} "
        f"({result['answered_per_agent_max']} calls answered for one agent, limit "
        f"{LIMIT_IN_CALLS} calls' worth){'' if ok else ': BROKEN RUN'}"
    )
    for status, body in sorted(samples.items()):
        print(f"    {status}: {body[:240]}")
    for error in errors:
        print(f"    error: {error}")
    return result, ok


def overshoot(
    args: argparse.Namespace, workdir: Path, fake: tuple[Process, int, Path], venv: Path
) -> tuple[dict[str, Any], list[str]]:
    _, fake_port, fake_ca = fake
    cost = calibrate_cost(workdir, venv, fake)
    limit = cost * LIMIT_IN_CALLS
    print(
        f"one call: LiteLLM bills ${cost}; each agent's deployment budget ${limit} "
        f"({LIMIT_IN_CALLS} calls' worth, budget_duration 1d)"
    )
    runs, failed = [], []
    for index in range(1, args.repeat + 1):
        run_dir = workdir / f"litellm-overshoot-{index}"
        run_dir.mkdir()
        master_key = "sk-bench-" + secrets.token_hex(32)
        models = [
            model_entry(
                agent_name(a),
                fake_port,
                OVERSHOOT_MODEL,
                max_budget=float(limit),
                budget_duration="1d",
            )
            for a in range(args.agents)
        ]
        process, port = start_litellm("litellm", run_dir, venv, models, fake_ca, master_key)
        fake_call(fake_port, fake_ca, "POST", "/_fake/reset")
        with running(process):
            spec = {
                "targets": [[port, None]],
                "tunnel": False,
                "model_prefix": "agent-",
                "headers": overshoot_headers(port, master_key),
                "agents": args.agents,
                "calls_each": args.calls,
            }
            outcomes = run_overshoot_client(spec, run_dir)["calls"]
            process.check_alive()
        received = len(fake_call(fake_port, fake_ca, "GET", "/_fake/requests"))
        result, ok = overshoot_result(
            f"run {index} (deployment budgets)", outcomes, limit, received, args
        )
        runs.append(result)
        if not ok:
            failed.append(f"LiteLLM overshoot run {index}")
    return {"cost_per_call_usd": str(cost), "limit_usd": str(limit), "runs": runs}, failed


# -- the database attempt ---------------------------------------------------------------------


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def start_postgres() -> tuple[str, Path, list[str]]:
    """A throwaway cluster on a free port: its DATABASE_URL, directory and stop command."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("no PostgreSQL here (initdb and pg_ctl not on PATH)")
    # Its own directory: the postgres user cannot enter the bench's 0700 temp directory.
    home = Path(tempfile.mkdtemp(prefix="spendbrake-bench-postgres-"))
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(home, postgres.pw_uid, postgres.pw_gid)
    data, port = home / "data", free_port()
    subprocess.run(
        as_postgres([initdb, "-D", str(data), "-U", "litellm", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    start = [pg_ctl, "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"]
    subprocess.run(as_postgres(start), check=True, capture_output=True)
    stop = as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    return f"postgresql://litellm@127.0.0.1:{port}/postgres", home, stop


def database(
    args: argparse.Namespace, workdir: Path, fake: tuple[Process, int, Path], venv: Path
) -> tuple[dict[str, Any], list[str]]:
    """Try LiteLLM with its database; on success, per-key budgets under the overshoot test."""
    _, fake_port, fake_ca = fake
    run_dir = workdir / "litellm-database"
    run_dir.mkdir()
    log = venv.parent / "install-litellm-database.log"
    if not pip(venv, "install", *DATABASE_PACKAGES, log=log):
        return {"ran": False, "why": f"pip could not install {DATABASE_PACKAGES} (see {log})"}, []
    try:
        url, home, stop = start_postgres()
    except subprocess.CalledProcessError as e:
        why = f"could not start PostgreSQL: {e}: {e.stderr.decode(errors='replace')[-500:]}"
        return {"ran": False, "why": why}, []
    except (RuntimeError, KeyError) as e:
        return {"ran": False, "why": f"could not start PostgreSQL: {e}"}, []
    try:
        master_key = "sk-bench-" + secrets.token_hex(32)
        models = [model_entry(OVERSHOOT_MODEL, fake_port, OVERSHOOT_MODEL)]
        try:
            process, port = start_litellm(
                "litellm-db", run_dir, venv, models, fake_ca, master_key, env={"DATABASE_URL": url}
            )
        except RuntimeError as e:
            lines = [
                re.sub(r"\x1b\[[0-9;]*m", "", line).strip()  # without colour codes
                for line in str(e).splitlines()
                if any(w in line.lower() for w in ("prisma", "error", "failed", "refused"))
            ]
            why = "LiteLLM with DATABASE_URL did not come up: " + " | ".join(dict.fromkeys(lines))
            return {"ran": False, "why": why[:2000]}, []
        with running(process):
            # Never run here: this machine did not get this far (see docs/benchmarks.md).
            cost = calibration_call(port, master_key)
            limit = cost * LIMIT_IN_CALLS
            keys: dict[str, str] = {}
            for a in range(args.agents):
                created, _ = litellm_call(
                    port,
                    master_key,
                    "POST",
                    "/key/generate",
                    {
                        "max_budget": float(limit),
                        "budget_duration": "1d",
                        "key_alias": agent_name(a),
                    },
                )
                keys[agent_name(a)] = created["key"]
            fake_call(fake_port, fake_ca, "POST", "/_fake/reset")
            spec = {
                "targets": [[port, None]],
                "tunnel": False,
                "model": OVERSHOOT_MODEL,
                "keys": keys,
                "headers": overshoot_headers(port, master_key),
                "agents": args.agents,
                "calls_each": args.calls,
            }
            outcomes = run_overshoot_client(spec, run_dir)["calls"]
        received = len(fake_call(fake_port, fake_ca, "GET", "/_fake/requests"))
        result, ok = overshoot_result("per-key budgets (database)", outcomes, limit, received, args)
        return {"ran": True, **result}, [] if ok else ["LiteLLM database overshoot"]
    finally:
        subprocess.run(stop, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench litellm",
        description="LiteLLM proxy beside bare mitmdump and spendbrake: requests/s, latency and "
        "budget overshoot (see docs/benchmarks.md).",
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument(
        "--litellm-version", default=DEFAULT_VERSION, help="litellm[proxy] to install"
    )
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        help=f"the virtualenv LiteLLM is installed into (default {DEFAULT_VENVS}/litellm-VERSION)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="throughput: measured requests")
    parser.add_argument("--concurrency", type=int, default=8, help="throughput: client threads")
    parser.add_argument("--warmup", type=int, default=100, help="throughput: warm-up requests")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each part")
    parser.add_argument("--agents", type=int, default=AGENTS, help="overshoot: agents")
    parser.add_argument("--calls", type=int, default=CALLS_EACH, help="overshoot: calls per agent")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    if min(args.requests, args.concurrency, args.repeat, args.agents, args.calls) < 1:
        parser.error("--requests, --concurrency, --repeat, --agents and --calls must be >= 1")
    args.litellm_venv = args.litellm_venv or DEFAULT_VENVS / f"litellm-{args.litellm_version}"
    # bench.one_run reads these too.
    args.spendbrake_upstream, args.profile, args.floor = False, None, None
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = bench.machine()
    print(
        f"machine: {info['nproc']} CPU(s) ({info['cpu']}); Python {info['python']}, mitmproxy "
        f"{info['mitmproxy']}; spendbrake checkout {info['git']}"
    )
    notes = ensure_litellm(args.litellm_venv, args.litellm_version)
    for note in notes:
        print(note)
    document: dict[str, Any] = {
        "command": "scripts/bench litellm " + " ".join(argv),
        "machine": info,
        "litellm": {
            "version": args.litellm_version,
            "venv": str(args.litellm_venv),
            "install": notes,
        },
    }
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="spendbrake-bench-litellm-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir, backlog=FAKE_BACKLOG)
        with running(fake[0]):
            for part, run_part in (
                ("throughput", throughput),
                ("overshoot", overshoot),
                ("database", database),
            ):
                if part not in args.parts:
                    continue
                print(f"\n== {part}", flush=True)
                result, part_failed = run_part(args, workdir, fake, args.litellm_venv)
                document[part] = result
                failed += part_failed
                if part == "database" and not result["ran"]:
                    print(f"could not run: {result['why']}")
    document["failed_checks"] = failed
    return bench.finish(args.json, document, failed)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("scripts/bench litellm: interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
