"""Benchmark: what spendbrake costs on top of bare mitmdump.

Drives the same load (small non-streaming chat completions over keep-alive connections, C
client threads) against the fake upstream directly, bare mitmdump, and `spendbrake up`, and
prints requests/s and latency for each, and spendbrake's ratios to bare mitmdump against the
targets (>= 85 % of bare's requests/s, <= 1 ms added to the median).

The load generator runs in its own process (so it does not share a GIL with the fake or the
proxy): this file re-executes itself as `bench.py --client-worker SPEC`. Each thread owns one
http.client connection, through a CONNECT tunnel for the proxies. Run it through `scripts/bench`;
see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: scripts/bench runs .venv/bin/python
TARGETS = ("direct", "bare", "spendbrake")
AGENT, SESSION = "bench", "x"
MODEL = "gpt-4o-mini"
HOST = "api.openai.com"
PATH = "/v1/chat/completions"
# Both proxies run with these; bare mitmdump also gets every other option `spendbrake up` sets.
REQUIRED_SETTINGS = ("flow_detail=0", "tcp_timeout=3600")
TARGET_RPS_RATIO = 0.85
TARGET_ADDED_P50_MS = 1.0
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 15.0
NOISY_OTHER_CORES = 0.25  # CPU used by processes other than client, fake and proxy
MAX_ERRORS = 5
FLOOR_SCRIPT = ROOT / "scripts" / "bench_floor_script.py"
FLOOR_VARIANTS = ("no-call-work", "side-process")  # bench_floor_script.VARIANTS
FLOOR_VARIANT_ENV = "SPENDBRAKE_BENCH_FLOOR"
RUN_TIMEOUT_S = 900.0

# Sends api.openai.com connections to the fake, for both proxies alike. The name is put back once
# the socket is open: mitmproxy reuses an upstream connection only for a request to the same
# address, so a rewritten address costs a new connection and TLS handshake per request, and with
# connection_strategy=lazy the sixth request on a client connection waits forever (mitmproxy
# allows five server connections per address and client connection).
REDIRECT_SCRIPT = """\
UPSTREAM = ({host!r}, {port!r})
_original = {{}}


def server_connect(data):
    address = data.server.address
    if address and address[0] == {llm_host!r}:
        _original[data.server.id] = address
        data.server.address = UPSTREAM


def server_connected(data):
    original = _original.pop(data.server.id, None)
    if original is not None:
        # mitmproxy forbids changing the address of an open connection; this one only renames it.
        object.__setattr__(data.server, "address", original)


def server_connect_error(data):
    _original.pop(data.server.id, None)
"""

# For benchmarks of streams (scripts/bench streams): bare mitmdump buffers every response unless
# told to stream it, as spendbrake does for text/event-stream. spendbrake has set its metering
# stream already when this runs (its addon comes first), so there this changes nothing.
STREAM_SSE_HOOK = """

def responseheaders(flow):
    content_type = flow.response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream") and not flow.response.stream:
        flow.response.stream = True
"""

SPENDBRAKE_CONFIG = f"""\
[agents.{AGENT}]
daily_usd = 1000000.00
"""


# -- the load generator (its own process) -----------------------------------------------------


def request_body(number: int) -> bytes:
    # Every request differs, as an agent's do: identical ones would trip the loop brake.
    content = f"Say hello in one short sentence. (request {number})"
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    ).encode()


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all threads) in clock ticks, or None if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def client_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run warm-up then the measured phase; return latencies, counts and CPU samples.

    With ``plain_http`` the threads talk plain HTTP to a base-URL gateway (LiteLLM, in
    scripts/bench litellm) instead of HTTPS; ``headers`` replace request headers.
    """
    context = None if spec.get("plain_http") else ssl.create_default_context(cafile=spec["ca"])
    bodies = itertools.count()
    headers = {
        "Host": HOST,
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-bench-not-a-key",
        **spec.get("headers", {}),
    }
    proxy = spec.get("proxy")
    tunnel_headers = {}
    if proxy:
        token = base64.b64encode(f"{AGENT}:{SESSION}".encode()).decode()
        tunnel_headers["Proxy-Authorization"] = f"Basic {token}"
    host, port = spec["connect"]
    concurrency: int = spec["concurrency"]
    measured: int = spec["requests"]
    warmup_each = math.ceil(spec["warmup"] / concurrency) if spec["warmup"] else 0

    counter = itertools.count()
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    totals = {"sent": 0, "ok": 0, "errors": 0, "connections": 0, "metered": 0}
    error_samples: list[str] = []
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    abort = threading.Event()  # a broken proxy stalls every request: give up, don't wait it out

    def connect() -> http.client.HTTPConnection:
        conn = (
            http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
            if context is None
            else http.client.HTTPSConnection(host, port, context=context, timeout=REQUEST_TIMEOUT_S)
        )
        if proxy:
            conn.set_tunnel(HOST, 443, headers=tunnel_headers)
        conn.connect()
        return conn

    def one(
        conn: http.client.HTTPConnection | None, sink: list[float] | None, local: dict[str, int]
    ) -> http.client.HTTPConnection | None:
        local["sent"] += 1
        try:
            if conn is None:
                conn = connect()
                local["connections"] += 1
            started = time.perf_counter()
            conn.request("POST", PATH, request_body(next(bodies)), headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or b'"chat.completion"' not in data:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            if response.getheader("x-spendbrake-agent") == AGENT:
                local["metered"] += 1
            local["ok"] += 1
            if sink is not None:
                sink.append(elapsed)
            if response.will_close:
                conn.close()
                conn = None
            return conn
        except Exception as e:
            local["errors"] += 1
            with lock:
                if len(error_samples) < MAX_ERRORS:
                    error_samples.append(f"{type(e).__name__}: {e}")
                else:
                    abort.set()
            if conn is not None:
                conn.close()
            return None

    def thread_main(index: int) -> None:
        local = dict.fromkeys(totals, 0)
        conn: http.client.HTTPConnection | None = None
        try:
            for _ in range(warmup_each):
                if abort.is_set():
                    break
                conn = one(conn, None, local)
            if conn is None:  # open the connection before the clock starts
                with contextlib.suppress(Exception):
                    conn = connect()
                    local["connections"] += 1
        finally:
            barrier.wait()
        sink = latencies[index]
        while next(counter) < measured and not abort.is_set():
            conn = one(conn, sink, local)
        if conn is not None:
            conn.close()
        with lock:
            for key, value in local.items():
                totals[key] += value

    pids: dict[str, int] = spec.get("pids", {})
    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    ticks_before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    machine_before = machine_ticks()
    client_cpu_before = time.process_time()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu_before
    ticks_after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    machine_after = machine_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    cpu_s: dict[str, float | None] = {"client": client_cpu}
    for name in pids:
        before, after = ticks_before[name], ticks_after[name]
        cpu_s[name] = None if before is None or after is None else (after - before) / hz
    ours = sum(v for v in cpu_s.values() if v is not None)
    busy = (machine_after[0] - machine_before[0]) / hz
    steal = (machine_after[1] - machine_before[1]) / hz
    return {
        "other_cpu_cores": max(busy - ours, 0.0) / elapsed,
        "steal_cores": steal / elapsed,
        "elapsed_s": elapsed,
        "latencies_s": [x for per_thread in latencies for x in per_thread],
        "warmup_sent": warmup_each * concurrency,
        "cpu_s": cpu_s,
        "errors_sample": error_samples,
        **totals,
    }


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return (
            f"--- {self.name} stdout:\n{tail(self.stdout)}\n"
            f"--- {self.name} stderr:\n{tail(self.stderr)}"
        )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.popen.returncode}\n{self.output()}"
            )

    def stop(self) -> int:
        """SIGTERM (mitmproxy shuts down cleanly on it), wait, then SIGKILL."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Process:
    stdout, stderr = workdir / f"{name}.out", workdir / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a Ctrl-C reaches the bench, which stops them in order
        )
    return Process(name, popen, stdout, stderr)


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


def wait_for(what: str, process: Process, ready: Any, timeout: float = READY_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            result = ready()
            if result:
                return result
        except Exception as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({last})\n{process.output()}")


# The fake with a longer listen queue than socketserver's 5: with hundreds of connections opened
# at once (scripts/bench streams, overshoot, litellm) the kernel otherwise drops the overflow
# and the clients retry their SYN a second or more later.
FAKE_WITH_BACKLOG = (
    "import sys; from spendbrake.testing import fake_provider as f; "
    "f._Server.request_queue_size = int(sys.argv.pop(1)); sys.exit(f.main())"
)


def start_fake(workdir: Path, backlog: int | None = None) -> tuple[Process, int, Path]:
    argv = [sys.executable, "-m", "spendbrake.testing.fake_provider", "--port", "0"]
    if backlog is not None:
        argv = [sys.executable, "-c", FAKE_WITH_BACKLOG, str(backlog), "--port", "0"]
    fake = spawn("fake", [*argv, "--dir", str(workdir / "fake-pki")], workdir)

    def announced() -> tuple[int, Path] | None:
        port = ca = None
        for line in fake.stdout.read_text().splitlines():
            if line.startswith("fake provider listening at "):
                port = int(line.rsplit(":", 1)[1])
            elif line.startswith("fake provider CA at "):
                ca = Path(line.removeprefix("fake provider CA at "))
        return (port, ca) if port and ca else None

    port, ca = wait_for("fake provider", fake, announced)
    return fake, port, ca


def fake_call(port: int, ca: Path, method: str, path: str) -> Any:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=str(ca)), timeout=30
    )
    try:
        conn.request(method, path, headers={"Host": HOST})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"fake {method} {path}: HTTP {response.status}")
        return json.loads(data)
    finally:
        conn.close()


def probe_through_proxy(proxy_port: int, ca: Path) -> bool:
    """GET /_fake/hello through the proxy: proves listening, CA, tunnel and redirect."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", proxy_port, context=ssl.create_default_context(cafile=str(ca)), timeout=5
    )
    token = base64.b64encode(f"{AGENT}:{SESSION}".encode()).decode()
    conn.set_tunnel(HOST, 443, headers={"Proxy-Authorization": f"Basic {token}"})
    try:
        conn.request("GET", "/_fake/hello", headers={"Host": HOST})
        response = conn.getresponse()
        return response.status == 200 and response.read() == b"hello"
    finally:
        conn.close()


def proxy_settings() -> tuple[list[str], list[str]]:
    """(settings for bare mitmdump, settings to add to `spendbrake up`).

    Bare mitmdump gets every mitmproxy option `spendbrake up` sets itself (flow_detail,
    tcp_timeout, connection_strategy...), so the two differ only by spendbrake's addons. Only
    what `spendbrake up` lacks is added to it: mitmproxy refuses an option given twice.
    """
    from spendbrake.proxy import mitmdump_arguments

    own = mitmdump_arguments(
        listen_host="127.0.0.1", listen_port=1, confdir=Path("c"), config=None, ledger=Path("l")
    )
    mirrored = [
        value
        for flag, value in itertools.pairwise(own)
        if flag == "--set" and not value.startswith(("spendbrake_", "confdir="))
    ]
    names = {setting.split("=", 1)[0] for setting in mirrored}
    missing = [s for s in REQUIRED_SETTINGS if s.split("=", 1)[0] not in names]
    return [*mirrored, *missing], missing


def set_options(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


@dataclass
class Proxy:
    process: Process
    port: int
    ca: Path  # the proxy's CA, which clients must trust
    ledger: Path | None = None


def start_proxy(
    kind: str,
    run_dir: Path,
    fake_port: int,
    fake_ca: Path,
    *,
    own_upstream: bool = False,
    stream_sse: bool = False,
    config: str = SPENDBRAKE_CONFIG,
    ledger: Path | None = None,
    floor: str | None = None,
) -> Proxy:
    """``stream_sse`` makes both proxies stream SSE responses (STREAM_SSE_HOOK); ``config`` is
    spendbrake's configuration and ``ledger`` its file (default: a new one in ``run_dir``);
    ``floor`` replaces spendbrake's per-call work with a floor variant (FLOOR_SCRIPT)."""
    port = free_port()
    bare_settings, spendbrake_settings = proxy_settings()
    common = [f"ssl_verify_upstream_trusted_ca={fake_ca}"]
    redirect = run_dir / "redirect.py"
    script = REDIRECT_SCRIPT.format(host="127.0.0.1", port=fake_port, llm_host=HOST)
    redirect.write_text(script + (STREAM_SSE_HOOK if stream_sse else ""))
    if kind == "bare":
        confdir = run_dir / "mitmproxy-certs"
        argv = [str(BIN / "mitmdump"), "--mode", "regular", "--listen-host", "127.0.0.1"]
        argv += ["--listen-port", str(port), "--set", f"confdir={confdir}"]
        argv += [*set_options([*bare_settings, *common]), "--scripts", str(redirect)]
        process = spawn("bare", argv, run_dir)
        proxy = Proxy(process, port, confdir / "mitmproxy-ca-cert.pem")
    else:
        certs, config_file = run_dir / "certs", run_dir / "bench.toml"
        ledger = ledger or run_dir / "ledger.db"
        config_file.write_text(config)
        argv = [str(BIN / "spendbrake"), "up", "--listen", f"127.0.0.1:{port}"]
        argv += ["--config", str(config_file), "--ledger", str(ledger)]
        argv += set_options([*spendbrake_settings, *common])
        if own_upstream:
            argv += ["--set", f"spendbrake_upstream=127.0.0.1:{fake_port}"]
        else:
            argv += ["--script", str(redirect)]
        env = {"SPENDBRAKE_CERTS": str(certs)}
        if floor is not None:
            argv += ["--script", str(FLOOR_SCRIPT)]
            env[FLOOR_VARIANT_ENV] = floor
        process = spawn("spendbrake", argv, run_dir, env=env)
        proxy = Proxy(process, port, certs / "mitmproxy-ca-cert.pem", ledger)
    try:
        wait_for(
            f"{kind} proxy",
            process,
            lambda: proxy.ca.exists() and probe_through_proxy(port, proxy.ca),
        )
    except BaseException:
        process.stop()
        raise
    return proxy


@contextlib.contextmanager
def profiling(directory: Path | None, name: str, target: Process, run_dir: Path) -> Iterator[None]:
    """With --profile: py-spy samples whichever thread of the proxy holds the GIL (the work that
    serialises it), as collapsed stacks, one line per stack with its sample count."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{name}.txt"
    argv = [str(BIN / "py-spy"), "record", "--pid", str(target.popen.pid), "--gil", "--threads"]
    argv += ["--rate", "250", "--format", "raw", "--output", str(output)]
    spy = spawn(f"py-spy-{name}", argv, run_dir)
    time.sleep(1.0)  # py-spy attaches before the load starts
    try:
        yield
    finally:
        if spy.popen.poll() is None:
            spy.popen.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.popen.kill()
                spy.popen.wait()
        if not output.exists():
            print(f"    py-spy wrote no profile:\n{spy.output()}")


def check_ledger(ledger: Path, sent: int) -> tuple[bool, str]:
    """After the proxy stopped: one settled 'ok' row per request sent, nothing left held."""
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        rows, ok = conn.execute(
            "SELECT count(*), coalesce(sum(state = 'settled' AND outcome = 'ok'), 0) "
            "FROM calls WHERE agent = ?",
            (AGENT,),
        ).fetchone()
        calls, held, spent = conn.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(held_nanos), 0), "
            "coalesce(sum(spent_nanos), 0) FROM day_totals WHERE agent = ?",
            (AGENT,),
        ).fetchone()
    finally:
        conn.close()
    good = rows == ok == calls == sent and held == 0
    text = (
        f"ledger: {rows} call rows ({ok} settled ok), day_totals.calls {calls}, held {held}, "
        f"spent ${spent / 1e9:.6f}, for {sent} requests sent: {'OK' if good else 'MISMATCH'}"
    )
    return good, text


# -- one run ----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[index]


def run_client(
    spec: dict[str, Any],
    run_dir: Path,
    script: str = __file__,
    name: str = "client",
    timeout: float = RUN_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``script --client-worker SPEC`` (the load generator of a benchmark) in a process of
    its own, so it shares no GIL with the proxy; return the JSON it prints."""
    out, err = run_dir / "client.out", run_dir / "client.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, script, "--client-worker", json.dumps(spec)],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            child.wait(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"{name} exited with {child.returncode}:\n{tail(err)}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def one_run(
    target: str,
    index: int,
    args: argparse.Namespace,
    workdir: Path,
    fake: tuple[Process, int, Path],
) -> dict[str, Any]:
    fake_process, fake_port, fake_ca = fake
    run_dir = workdir / f"{target}-{index}"
    run_dir.mkdir()
    fake_call(fake_port, fake_ca, "POST", "/_fake/reset")
    spec: dict[str, Any] = {
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "pids": {"fake": fake_process.popen.pid},
    }
    load_before = os.getloadavg()[0]
    checks: list[str] = []
    ok = True
    if target == "direct":
        result = run_client(
            {**spec, "connect": ["127.0.0.1", fake_port], "ca": str(fake_ca)}, run_dir
        )
    else:
        floor = args.floor if target == "spendbrake" else None
        proxy = start_proxy(
            target, run_dir, fake_port, fake_ca, own_upstream=args.spendbrake_upstream, floor=floor
        )
        with running(proxy.process):
            spec["pids"]["proxy"] = proxy.process.popen.pid
            spec.update(connect=["127.0.0.1", proxy.port], proxy=True, ca=str(proxy.ca))
            with profiling(args.profile, f"{target}-{index}", proxy.process, run_dir):
                result = run_client(spec, run_dir)
            proxy.process.check_alive()
        status = proxy.process.popen.returncode
        if status not in (0, -15):
            ok = False
            checks.append(f"{target} exited with status {status} on SIGTERM")
        # Keep-alive must hold upstream too: one server connection per client connection (and
        # one for the readiness probe), as for a real provider.
        upstream = proxy.process.stdout.read_text(errors="replace").count("] server connect ")
        upstream_ok = upstream <= args.concurrency + 1
        ok &= upstream_ok
        checks.append(
            f"upstream: {upstream} server connections opened for {args.concurrency} clients "
            f"(+1 probe): {'OK' if upstream_ok else 'NOT REUSED'}"
        )
        if floor is not None:
            ok &= result["ok"] == result["sent"]
            checks.append(f"ledger: not checked, floor variant {floor} holds and settles nothing")
        elif target == "spendbrake":
            assert proxy.ledger is not None
            good, text = check_ledger(proxy.ledger, result["ok"])
            ok &= good and result["ok"] == result["sent"]
            checks.append(text)

    received = len(fake_call(fake_port, fake_ca, "GET", "/_fake/requests"))
    expected_metered = result["ok"] if target == "spendbrake" else 0
    good = (
        result["errors"] == 0
        and received == result["ok"] == result["sent"]
        and result["metered"] == expected_metered
        and result["connections"] == args.concurrency
    )
    ok &= good
    checks.append(
        f"client: {result['sent']} sent, {result['ok']} ok, {result['errors']} errors, "
        f"{result['connections']} connections, {result['metered']} metered responses; "
        f"fake received {received}: {'OK' if good else 'MISMATCH'}"
    )
    checks += [f"error: {e}" for e in result["errors_sample"]]

    return run_summary(target, index, result, checks, ok, load_before)


def run_summary(
    target: str,
    index: int,
    result: dict[str, Any],
    checks: list[str],
    ok: bool,
    load_before: float,
) -> dict[str, Any]:
    """One run's row: requests/s, latency percentiles and CPU per request from the client's
    result, with the run's sanity checks."""
    latencies = sorted(result["latencies_s"]) or [math.nan]
    measured = len(result["latencies_s"])
    ok &= measured > 0
    cpu_ms = {
        name: None if seconds is None else seconds * 1000 / max(measured, 1)
        for name, seconds in result["cpu_s"].items()
    }
    return {
        "target": target,
        "run": index,
        "ok": ok,
        "checks": checks,
        "requests": measured,
        "elapsed_s": result["elapsed_s"],
        "rps": measured / result["elapsed_s"] if result["elapsed_s"] else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "max_ms": latencies[-1] * 1000,
        "cpu_ms_per_request": cpu_ms,
        "loadavg_1m_before": load_before,
        "other_cpu_cores": result["other_cpu_cores"],
        "steal_cores": result["steal_cores"],
    }


# -- reporting --------------------------------------------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median requests/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[(len(ordered) - 1) // 2]


def fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def machine() -> dict[str, Any]:
    from mitmproxy.version import VERSION

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import spendbrake

    revision = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "spendbrake": str(Path(spendbrake.__file__).parent),
        "git": revision or "unknown",
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "mitmproxy": VERSION,
        "platform": platform.platform(),
    }


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_target = {t: [r for r in runs if r["target"] == t] for t in args.targets}
    medians = {t: median_run(rs) for t, rs in by_target.items() if rs}
    header = (
        f"{'target':<11} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms/req: proxy':>17} {'fake':>5} {'client':>6} {'other load':>10}   "
        "req/s of each run"
    )
    print()
    print(
        f"median of {args.repeat} run(s) each; {args.requests} requests, {args.concurrency} "
        f"clients, {args.warmup} warm-up requests"
    )
    print(header)
    for target, run in medians.items():
        cpu = run["cpu_ms_per_request"]
        each = ", ".join(f"{r['rps']:.0f}" for r in by_target[target])
        print(
            f"{target:<11} {run['rps']:>7.0f} {run['p50_ms']:>7.2f} {run['p90_ms']:>7.2f} "
            f"{run['p99_ms']:>7.2f} {fmt_cpu(cpu.get('proxy')):>17} {fmt_cpu(cpu.get('fake')):>5} "
            f"{fmt_cpu(cpu.get('client')):>6} {run['other_cpu_cores']:>10.2f}   {each}"
        )
    noisy = [r for r in runs if r["other_cpu_cores"] > NOISY_OTHER_CORES]
    if noisy:
        print(
            f"note: other processes used > {NOISY_OTHER_CORES} cores during "
            + ", ".join(f"{r['target']} run {r['run']} ({r['other_cpu_cores']:.2f})" for r in noisy)
            + ": those numbers are disturbed; re-run on a quieter machine"
        )
    summary: dict[str, Any] = {}
    if "bare" in medians and "spendbrake" in medians:
        bare, sb = medians["bare"], medians["spendbrake"]
        ratio = sb["rps"] / bare["rps"]
        added = sb["p50_ms"] - bare["p50_ms"]
        rps_ok, p50_ok = ratio >= TARGET_RPS_RATIO, added <= TARGET_ADDED_P50_MS
        summary = {
            "rps_ratio": ratio,
            "added_p50_ms": added,
            "added_p99_ms": sb["p99_ms"] - bare["p99_ms"],
            "rps_target": TARGET_RPS_RATIO,
            "added_p50_target_ms": TARGET_ADDED_P50_MS,
            "rps_target_met": rps_ok,
            "p50_target_met": p50_ok,
        }
        pairs = [
            (b["rps"], s["rps"])
            for b in by_target["bare"]
            for s in by_target["spendbrake"]
            if b["run"] == s["run"]
        ]
        summary["rps_ratio_per_repeat"] = [s / b for b, s in pairs]
        bare_cpu = bare["cpu_ms_per_request"].get("proxy")
        sb_cpu = sb["cpu_ms_per_request"].get("proxy")
        if bare_cpu is not None and sb_cpu is not None:
            summary["added_proxy_cpu_ms_per_request"] = sb_cpu - bare_cpu
        print()
        print(
            f"spendbrake / bare: {ratio:.1%} of the requests/s (target >= {TARGET_RPS_RATIO:.0%}: "
            f"{'met' if rps_ok else 'MISSED'}), median {added:+.2f} ms "
            f"(target <= +{TARGET_ADDED_P50_MS:.0f} ms: {'met' if p50_ok else 'MISSED'}), "
            f"p99 {summary['added_p99_ms']:+.2f} ms"
        )
        print(
            "spendbrake / bare in each repeat (same fake, back to back): "
            + ", ".join(f"{r:.0%}" for r in summary["rps_ratio_per_repeat"])
        )
        if "added_proxy_cpu_ms_per_request" in summary:
            print(
                f"proxy CPU per request: bare {bare_cpu:.2f} ms, spendbrake {sb_cpu:.2f} ms "
                f"({summary['added_proxy_cpu_ms_per_request']:+.2f} ms)"
            )
    return {"medians": medians, "summary": summary}


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Throughput and latency of spendbrake against bare mitmdump and the fake "
        "upstream directly (see docs/benchmarks.md).",
        epilog="The rest of the suite: scripts/bench streams | ledger | overshoot | litellm "
        "(each with --help).",
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per run")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (connections)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per target; the median run is shown"
    )
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests per run first")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of: " + ", ".join(TARGETS),
    )
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument(
        "--spendbrake-upstream",
        action="store_true",
        help="redirect spendbrake with its own spendbrake_upstream option instead of the same "
        "redirect script bare mitmdump gets (see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--floor",
        choices=FLOOR_VARIANTS,
        help="replace spendbrake's per-call work with the floor of a design, to bound what that "
        "design could reach (scripts/bench_floor_script.py; not a working spendbrake)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each proxy with py-spy (.venv/bin/pip install py-spy) into "
        "DIR/TARGET-RUN.txt; sampling slows the proxy, so profiled numbers are not comparable",
    )
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or set(args.targets) - set(TARGETS):
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    if args.profile and not (BIN / "py-spy").exists():
        parser.error(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
    if args.requests < 1 or args.concurrency < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --repeat must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = machine()
    print(
        f"machine: {info['nproc']} CPU(s) ({info['cpu']}) shared by client, fake and proxy; "
        f"Python {info['python']}, mitmproxy {info['mitmproxy']}\n"
        f"spendbrake from {info['spendbrake']} (checkout {info['git']})"
    )
    if args.floor:
        print(f"spendbrake runs floor variant {args.floor}: nothing is held or settled")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="spendbrake-bench-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir)
        with running(fake[0]):
            for index in range(1, args.repeat + 1):
                for target in args.targets:  # interleaved, so drifting load hits all alike
                    run = one_run(target, index, args, workdir, fake)
                    runs.append(run)
                    cpu = run["cpu_ms_per_request"]
                    print(
                        f"run {index} {target:<10} {run['rps']:7.0f} req/s  p50 "
                        f"{run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms  proxy CPU "
                        f"{fmt_cpu(cpu.get('proxy'))} ms/req  (other load "
                        f"{run['other_cpu_cores']:.2f} cores)"
                    )
                    for line in run["checks"]:
                        print(f"    {line}")
                    sys.stdout.flush()
    result = report(args, runs)
    failed = [f"{r['target']} run {r['run']}" for r in runs if not r["ok"]]
    document = {
        "command": "scripts/bench " + " ".join(argv),
        "machine": info,
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "model": MODEL,
            "max_tokens": 16,
            "floor": args.floor,
        },
        "runs": runs,
        **result,
        "failed_checks": failed,
    }
    return finish(args.json, document, failed)


def finish(json_path: Path | None, document: dict[str, Any], failed: list[str]) -> int:
    """Write a benchmark's JSON (if asked), say which runs failed their checks; the exit code."""
    if json_path:
        json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    if failed:
        print(f"\nsanity checks FAILED in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client-worker":
        print(json.dumps(client_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    # SIGTERM unwinds like Ctrl-C, so the proxies and the fake are stopped in `finally`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("scripts/bench: interrupted; the proxies and the fake were stopped", file=sys.stderr)
        sys.exit(130)
