"""Processes, clients and ledger reads shared by the end-to-end tests (fixtures: conftest.py).

Everything here starts real processes the way a user would: ``spendbrake up`` or ``mitmdump -s``
with stdout to a file (a full, undrained pipe would block the proxy), the official openai SDK in
a subprocess that finds the proxy through ``HTTPS_PROXY`` alone. Only the provider is fake.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from ledger_hammer import assert_windows_match_calls, totals_from_calls
from spendbrake.testing.fake_provider import FakeProvider, RecordedRequest
from spendbrake.testing.tls import TestPKI

E2E_DIR = Path(__file__).resolve().parent
CLIENTS_DIR = E2E_DIR / "clients"
BIN_DIR = Path(sys.executable).parent
SPENDBRAKE = BIN_DIR / "spendbrake"
MITMDUMP = BIN_DIR / "mitmdump"

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 60.0
_LISTENING = re.compile(rb"HTTP\(S\) proxy listening at 127\.0\.0\.1:(\d+)\.")

# Whatever routes or trusts traffic in the developer's shell must not leak into the processes
# under test: each test decides exactly how its client reaches the proxy.
_SCRUBBED_PREFIXES = ("OPENAI_", "SPENDBRAKE_")
_SCRUBBED = frozenset(
    {
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    }
)

# The header every test puts on its calls, to find them among what the shared fake received.
TEST_ID_HEADER = "x-e2e-test"


def clean_environment(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in _SCRUBBED and not name.upper().startswith(_SCRUBBED_PREFIXES)
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Certs:
    """The proxy's CA directory (mitmproxy confdir, ``SPENDBRAKE_CERTS``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "mitmproxy-ca-cert.pem"

    @property
    def bundle(self) -> Path:
        """System CAs + the proxy CA: what ``spendbrake env`` hands clients."""
        return self.directory / "spendbrake-ca-bundle.pem"


@dataclass
class Proxy:
    """A running proxy process and the files it works with."""

    process: subprocess.Popen[bytes]
    port: int
    ledger: Path
    config: Path | None
    log: Path
    certs: Certs
    killed: bool = field(default=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def proxy_url(self, agent: str | None = None, session: str | None = None) -> str:
        """The proxy URL with ``agent:session`` as credentials (none when both are None)."""
        if agent is None and session is None:
            return f"http://127.0.0.1:{self.port}"
        userinfo = (agent or "") + ("" if session is None else f":{session}")
        return f"http://{userinfo}@127.0.0.1:{self.port}"

    def client_env(self, agent: str | None, session: str | None = None) -> dict[str, str]:
        """What a user's shell has after ``spendbrake env``, for the openai SDK in a subprocess.

        ``NO_PROXY`` is emptied: the SDK talks to api.openai.com, which must go through us.
        """
        url = self.proxy_url(agent, session)
        return clean_environment(
            HTTPS_PROXY=url,
            https_proxy=url,
            NO_PROXY="",
            no_proxy="",
            SSL_CERT_FILE=str(self.certs.bundle),
            OPENAI_API_KEY="sk-e2e-test-key",
        )

    def cli_args(self) -> list[str | Path]:
        """``--config``/``--ledger`` for a ``spendbrake`` command on this proxy's ledger."""
        config: list[str | Path] = ["--config", self.config] if self.config else []
        return [*config, "--ledger", self.ledger]

    def assert_alive(self) -> None:
        assert self.process.poll() is None, (
            f"the proxy exited with {self.process.returncode}; its output:\n{self.output()}"
        )

    def assert_healthy(self) -> None:
        """Alive, and nothing went wrong inside it (spendbrake and mitmproxy log exceptions
        and carry on, so a test's own assertions can miss them)."""
        self.assert_alive()
        output = self.output()
        assert "Traceback" not in output, f"the proxy logged an exception:\n{output}"
        assert "mitmproxy has crashed" not in output, output

    def sigkill(self) -> None:
        """Kill the proxy as a crash would, and reap it (a zombie still looks alive)."""
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _wait_until_listening(
    process: subprocess.Popen[bytes], log: Path, fixed_ports: Sequence[int] = ()
) -> int:
    """The port of the proxy's main listener, once every listener listens (the others, on
    ``fixed_ports``, may come up in any order)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        ports = [int(m.group(1)) for m in _LISTENING.finditer(log.read_bytes())]
        main = [port for port in ports if port not in fixed_ports]
        if main and len(ports) > len(fixed_ports):
            return main[0]
        if process.poll() is not None:
            raise AssertionError(
                f"the proxy exited with {process.returncode} before listening; its output:\n"
                f"{log.read_text(errors='replace')}"
            )
        time.sleep(0.05)
    raise AssertionError(
        f"the proxy did not listen within {READY_TIMEOUT_S} s; its output:\n"
        f"{log.read_text(errors='replace')}"
    )


@contextmanager
def running_proxy(
    command: Sequence[str | Path],
    *,
    log: Path,
    ledger: Path,
    config: Path | None,
    certs: Certs,
    env: Mapping[str, str],
    fixed_ports: Sequence[int] = (),
) -> Iterator[Proxy]:
    """Start ``command``, wait for its listening lines, stop it strictly afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
    try:
        port = _wait_until_listening(process, log, fixed_ports)
        proxy = Proxy(process, port, ledger, config, log, certs)
        proxy.assert_alive()
        yield proxy
        if not proxy.killed:
            proxy.assert_healthy()  # it survived everything the tests did to it
    finally:
        _stop(process)


def upstream_settings(fake: FakeProvider, pki: TestPKI) -> list[str]:
    """mitmproxy settings that send api.openai.com to the fake and trust its test CA."""
    return [
        f"spendbrake_upstream=127.0.0.1:{fake.port}",
        f"ssl_verify_upstream_trusted_ca={pki.ca_cert}",
    ]


@contextmanager
def spendbrake_up(
    workdir: Path,
    *,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    config_toml: str | None = None,
    ledger: Path | None = None,
    name: str = "proxy",
    cache_dir: Path,
    settings: Sequence[str] = (),
    more_listens: Sequence[str] = (),
    scripts: Sequence[Path] = (),
) -> Iterator[Proxy]:
    """``spendbrake up --listen 127.0.0.1:0`` against the fake provider, plus ``settings``
    (``--set NAME=VALUE``), more ``--listen`` addresses and addon ``scripts`` (``--script
    FILE``) of the test's own."""
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = ledger or workdir / "ledger.db"
    config: Path | None = None
    command: list[str | Path] = [SPENDBRAKE, "up", "--listen", "127.0.0.1:0", "--ledger", ledger]
    for listen in more_listens:
        command += ["--listen", listen]
    if config_toml is not None:
        config = workdir / "spendbrake.toml"
        config.write_text(config_toml)
        command += ["--config", config]
    for setting in [*upstream_settings(fake, pki), *settings]:
        command += ["--set", setting]
    for script in scripts:
        command += ["--script", script]
    env = clean_environment(SPENDBRAKE_CERTS=str(certs.directory), XDG_CACHE_HOME=str(cache_dir))
    with running_proxy(
        command,
        log=workdir / f"{name}.log",
        ledger=ledger,
        config=config,
        certs=certs,
        env=env,
        fixed_ports=[int(listen.partition("=")[0].rpartition(":")[2]) for listen in more_listens],
    ) as proxy:
        yield proxy


# -- clients ----------------------------------------------------------------------------------


def run_client(script: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Run ``clients/<script>`` with ``spec`` as JSON; return the JSON it prints."""
    result = subprocess.run(
        [sys.executable, str(CLIENTS_DIR / script), json.dumps(spec)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} exited with {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@contextmanager
def background_client(
    script: str, spec: Mapping[str, Any], env: Mapping[str, str], *, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``clients/<script>`` without waiting for it; stop it strictly afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(CLIENTS_DIR / script), json.dumps(spec)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
    try:
        yield process
    finally:
        _stop(process)


@contextmanager
def raw_client(
    proxy: Proxy, agent: str | None, session: str = "raw", timeout: float = 15
) -> Iterator[httpx2.Client]:
    """Plain httpx2 through the proxy, trusting only the proxy's CA."""
    context = ssl.create_default_context(cafile=str(proxy.certs.ca_cert))
    with httpx2.Client(
        proxy=proxy.proxy_url(agent, session if agent else None),
        verify=context,
        trust_env=False,
        timeout=timeout,
    ) as client:
        yield client


def spendbrake_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the ``spendbrake`` command; it must succeed."""
    result = subprocess.run(
        [str(SPENDBRAKE), *(str(a) for a in args)],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"spendbrake {' '.join(map(str, args))} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- what the fake and the ledger saw ---------------------------------------------------------


def requests_of(fake: FakeProvider, test_id: str) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.headers.get(TEST_ID_HEADER) == test_id]


def ledger_calls(ledger: Path, agent: str) -> list[dict[str, Any]]:
    """The agent's rows in ``calls``, oldest first (read on a connection of our own)."""
    conn = sqlite3.connect(ledger, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM calls WHERE agent = ? ORDER BY id", (agent,))
        return [dict(row) for row in rows]
    finally:
        conn.close()


def wait_for[T](probe: Callable[[], T | None], *, timeout: float = 10.0, what: str) -> T:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settled_calls(ledger: Path, agent: str, count: int) -> list[dict[str, Any]]:
    """The agent's rows once ``count`` of them exist and none is held any more.

    A stream is settled in the ``response`` hook, which runs after the last byte reached the
    client: the client can finish a moment before the ledger row does.
    """

    def probe() -> list[dict[str, Any]] | None:
        rows = ledger_calls(ledger, agent)
        done = len(rows) == count and all(r["state"] != "held" for r in rows)
        return rows if done else None

    return wait_for(probe, what=f"{count} settled ledger row(s) of agent {agent!r}")


def assert_ledger_sound(ledger: Path) -> None:
    """The file passes SQLite's own check, and every total the ledger keeps (days, months,
    groups, sessions) is exactly the sum of its call rows: nothing a crash or a fault cut
    short was half written."""
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        days = conn.execute(
            "SELECT agent, day, spent_nanos, held_nanos, calls, blocked, budget_blocked "
            "FROM day_totals"
        ).fetchall()
    finally:
        conn.close()
    for agent, day, *kept in days:
        assert tuple(kept) == totals_from_calls(ledger, agent, day), (
            f"day_totals of {agent} on {day} drifted from the calls table"
        )
    assert_windows_match_calls(ledger)
