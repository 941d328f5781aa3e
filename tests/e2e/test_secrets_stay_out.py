"""Secrets stay out of storage and logs (issue 5): API keys, proxy credentials and prompts.

One proxy takes calls that carry distinctive secrets down every path a call can take: settled
(plain and streamed, OpenAI, Anthropic and Gemini), refused by a budget, stopped by the loop
brake and then by the suspension it left, refused as unreadable or unmetered, refused for an
unusable proxy password, and failed upstream after coming in as plain HTTP (the proxy credentials
on every request). Then everything spendbrake wrote or printed is searched for them: every
value of every table of the ledger (through a read-only connection), the bytes of the database,
WAL and shared-memory files while the proxy runs and after it stopped, the proxy's output, and
what ``status``, ``report`` and ``run`` print about that ledger.

Each secret is made of letters, digits and '-' only, so JSON escaping, URL encoding and SQLite's
UTF-8 leave it as it is: a stored or logged copy can only hide by being transformed on purpose.
The search also looks for each secret's random part alone, its base64 form, and the
``Proxy-Authorization`` value of every agent (``Basic base64(agent:password)``).

The proxy password itself is not searched for: by design it *is* the session id (DESIGN.md,
"Sessions": ``http://agent:SESSION@host:port``), stored with every call as ``calls.session`` so
session budgets and ``spendbrake resume --session`` can name it. A password that cannot be a
session id is refused, and is searched for like any other secret.
"""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import (
    CLIENTS_DIR,
    SPENDBRAKE,
    TEST_ID_HEADER,
    Certs,
    Proxy,
    basic_auth,
    clean_environment,
    requests_of,
    run_client,
    settled_calls,
    spendbrake_cli,
    spendbrake_up,
    upstream_settings,
)

from spendbrake.testing.fake_provider import FakeProvider, RecordedRequest
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.tight-bot]
daily_usd = 0.000001

[agents.loop-bot]
loop_repeats = 2
"""

TEST_ID = "test_secrets_stay_out"
OPENAI_HOST = "https://api.openai.com"
ANTHROPIC_HOST = "https://api.anthropic.com"
GEMINI_ROOT = "https://generativelanguage.googleapis.com"
GEMINI_MODELS = f"{GEMINI_ROOT}/v1beta/models"


@dataclass(frozen=True)
class Secret:
    """A value that must never be stored or logged; ``core`` is its random part."""

    name: str
    value: str
    core: str

    @classmethod
    def make(cls, name: str, prefix: str, suffix: str = "") -> Secret:
        core = uuid.uuid4().hex
        return cls(name, f"{prefix}{core}{suffix}", core)

    def needles(self) -> dict[str, bytes]:
        return {
            self.name: self.value.encode(),
            f"{self.name} (its random part)": self.core.encode(),
            f"{self.name} (base64)": base64.b64encode(self.value.encode()),
        }


OPENAI_KEY = Secret.make("the OpenAI API key", "sk-proj-SECRET")
ANTHROPIC_KEY = Secret.make("the Anthropic API key", "sk-ant-api03-SECRET")
GEMINI_QUERY_KEY = Secret.make("the Gemini API key in ?key=", "AIzaSECRETquery")
GEMINI_HEADER_KEY = Secret.make("the Gemini API key in x-goog-api-key", "AIzaSECRETheader")
PROMPT = Secret.make("the prompt", "zebra-quartz-")
# Longer than a session id may be (128 characters): refused, so it is nowhere, not even stored.
UNUSABLE_PASSWORD = Secret.make("an unusable proxy password", "pw-SECRET-", "-x" * 60)
SECRETS = (
    OPENAI_KEY,
    ANTHROPIC_KEY,
    GEMINI_QUERY_KEY,
    GEMINI_HEADER_KEY,
    PROMPT,
    UNUSABLE_PASSWORD,
)

# The session of every agent below: stored as calls.session by design (see the docstring).
PROXY_PASSWORD = f"pw-SECRET-{uuid.uuid4().hex}"
AGENTS = ("ok-bot", "tight-bot", "loop-bot", "mangled-bot", "nobody-bot", "plain-bot")

TEXT = f"Summarise {PROMPT.value} in one line."


def credentials_needles() -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    for agent in AGENTS:
        header = basic_auth(agent, PROXY_PASSWORD)
        needles[f"Proxy-Authorization of {agent}"] = header.encode()
        needles[f"base64 credentials of {agent}"] = header.removeprefix("Basic ").encode()
    unusable = basic_auth("nobody-bot", UNUSABLE_PASSWORD.value).removeprefix("Basic ")
    needles["base64 credentials with the unusable password"] = unusable.encode()
    return needles


NEEDLES: dict[str, bytes] = {
    **{name: needle for secret in SECRETS for name, needle in secret.needles().items()},
    **credentials_needles(),
}


def found_in(data: bytes, needles: Mapping[str, bytes] = NEEDLES) -> list[str]:
    """The names of the needles in ``data``, matched as they are and case-blind."""
    lowered = data.lower()
    return [name for name, n in needles.items() if n in data or n.lower() in lowered]


Outcome = tuple[int, str | None]  # the status and x-spendbrake-reason of one response


@dataclass
class Evidence:
    """Everything the calls left behind, and what the test saw of them on the way."""

    values: list[tuple[str, str, bytes]] = field(default_factory=list)  # (table, column, value)
    files: dict[str, bytes] = field(default_factory=dict)  # ledger files, running and stopped
    proxy_output: bytes = b""
    cli_outputs: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, list[Outcome]] = field(default_factory=dict)
    provider_saw: list[RecordedRequest] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# -- driving the calls ------------------------------------------------------------------------


def _httpx(proxy: Proxy, agent: str, password: str) -> httpx2.Client:
    context = ssl.create_default_context(cafile=str(proxy.certs.ca_cert))
    url = f"http://{agent}:{password}@127.0.0.1:{proxy.port}"
    return httpx2.Client(proxy=url, verify=context, trust_env=False, timeout=30)


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _chat_body() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": TEXT}]}


def _gemini_body() -> dict[str, Any]:
    return {"contents": [{"parts": [{"text": TEXT}]}], "generationConfig": {"maxOutputTokens": 20}}


def _anthropic_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-haiku-4-5-20251001",
        "messages": [{"role": "user", "content": TEXT}],
        **extra,
    }


def sdk_calls(proxy: Proxy) -> dict[str, list[Outcome]]:
    """The official SDKs, the keys where they put them: OPENAI_API_KEY, and x-api-key (extra
    headers replace the anthropic SDK's own), plain and streamed. Run side by side."""
    test = {TEST_ID_HEADER: TEST_ID}
    chat = {"content": TEXT, "max_tokens": 20, "headers": test}
    messages = {**chat, "headers": {**test, "x-api-key": ANTHROPIC_KEY.value}}
    runs: list[tuple[str, dict[str, Any]]] = [
        ("sdk_chat.py", chat),
        ("sdk_chat.py", {**chat, "stream": True, "include_usage": True}),
        ("sdk_messages.py", messages),
        ("sdk_messages.py", {**messages, "stream": True}),
    ]
    env = {**proxy.client_env("ok-bot", PROXY_PASSWORD), "OPENAI_API_KEY": OPENAI_KEY.value}
    with ThreadPoolExecutor(len(runs)) as pool:
        reports = list(pool.map(lambda run: run_client(run[0], run[1], env), runs))
    calls = [r["calls"][0] if "calls" in r else r for r in reports]
    return {"ok-bot": [(c["status"], c["headers"].get("x-spendbrake-reason")) for c in calls]}


def plain_calls(proxy: Proxy) -> dict[str, list[Outcome]]:
    """Calls made with httpx: Gemini's key in the query string and in its header, a budget too
    small for any call, the loop brake and the suspension it leaves, bodies spendbrake cannot
    read, routes it does not meter, and a proxy password it cannot use."""
    test = {TEST_ID_HEADER: TEST_ID}
    openai = {"authorization": f"Bearer {OPENAI_KEY.value}", "content-type": "application/json"}
    anthropic = {"x-api-key": ANTHROPIC_KEY.value, "content-type": "application/json"}
    gemini_key = {"x-goog-api-key": GEMINI_HEADER_KEY.value, "content-type": "application/json"}
    chat_url = f"{OPENAI_HOST}/v1/chat/completions"
    messages_url = f"{ANTHROPIC_HOST}/v1/messages"
    generate = f"{GEMINI_MODELS}/gemini-2.5-flash:generateContent?key={GEMINI_QUERY_KEY.value}"
    stream = (
        f"{GEMINI_MODELS}/gemini-2.5-flash:streamGenerateContent?alt=sse"
        f"&key={GEMINI_QUERY_KEY.value}"
    )
    gemini = _json(_gemini_body())
    chat = _json(_chat_body())
    not_json = f'{{"model": "gpt-4o-mini", "messages": [{{"content": "{TEXT}"'.encode()
    plan: dict[str, list[tuple[str, bytes, dict[str, str]]]] = {
        "ok-bot": [
            (generate, gemini, {}),
            (stream, gemini, {}),
            (generate.partition("?")[0], gemini, gemini_key),
        ],
        "tight-bot": [
            (chat_url, chat, openai),
            (generate, gemini, {}),
            (messages_url, _json(_anthropic_body(max_tokens=20)), anthropic),
        ],
        # The same request twice is a loop: refused, and the agent suspended.
        "loop-bot": [(chat_url, chat, openai)] * 3,
        "mangled-bot": [
            (chat_url, not_json, openai),
            (chat_url, chat + b"\xff\xfe", {**openai, "content-encoding": "gzip"}),
            (chat_url, gzip.compress(b"\xff" + chat), {**openai, "content-encoding": "gzip"}),
            (chat_url, _json({"model": "gpt-4o-mini", "messages": TEXT}), openai),
            (messages_url, _json(_anthropic_body()), anthropic),  # no max_tokens
            (generate, _json({"contents": TEXT}), {}),
            (f"{GEMINI_ROOT}/v1beta/cachedContents?key={GEMINI_QUERY_KEY.value}", gemini, {}),
            (f"{OPENAI_HOST}/v1/images/generations", _json({"prompt": TEXT}), openai),
        ],
        "nobody-bot": [(chat_url, chat, openai)],
        # Plain HTTP: the credentials ride on every request, the key in its request line. The
        # fake speaks only TLS, so these calls are held, fail upstream and are settled.
        "plain-bot": [
            (generate.replace("https:", "http:"), gemini, {}),
            (chat_url.replace("https:", "http:"), chat, openai),
        ],
    }
    outcomes: dict[str, list[Outcome]] = {}
    for agent, calls in plan.items():
        password = UNUSABLE_PASSWORD.value if agent == "nobody-bot" else PROXY_PASSWORD
        with _httpx(proxy, agent, password) as client:
            for url, content, headers in calls:
                response = client.post(url, content=content, headers={**test, **headers})
                reason = response.headers.get("x-spendbrake-reason")
                outcomes.setdefault(agent, []).append((response.status_code, reason))
    return outcomes


def run_command(
    proxy: Proxy, fake: FakeProvider, pki: TestPKI, cache_dir: Path, workdir: Path
) -> dict[str, str]:
    """``spendbrake run`` on the same ledger: its summary and what it printed. (Its own proxy's
    output goes to a temporary file the run deletes, and is printed only if that proxy dies.)"""
    summary = workdir / "summary.json"
    settings = [part for s in upstream_settings(fake, pki) for part in ("--set", s)]
    spec = {"content": TEXT, "max_tokens": 20, "headers": {TEST_ID_HEADER: TEST_ID}}
    client = [sys.executable, str(CLIENTS_DIR / "sdk_chat.py"), json.dumps(spec)]
    agent = ["--agent", "run-bot", *map(str, proxy.cli_args()), "--summary-json", str(summary)]
    result = subprocess.run(
        [str(SPENDBRAKE), "run", *settings, *agent, "--", *client],
        env=clean_environment(XDG_CACHE_HOME=str(cache_dir), OPENAI_API_KEY=OPENAI_KEY.value),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["calls"][0]["ok"] is True
    # Its stdout is the command's own (the SDK client's report); spendbrake prints on stderr.
    return {"run (stderr)": result.stderr, "run --summary-json": summary.read_text()}


# -- collecting what was left behind ----------------------------------------------------------


def ledger_files(ledger: Path, when: str) -> dict[str, bytes]:
    return {
        f"{path.name} ({when})": path.read_bytes()
        for path in sorted(ledger.parent.glob(ledger.name + "*"))
    }


def ledger_values(ledger: Path) -> Iterator[tuple[str, str, bytes]]:
    """Every text and blob value of every table, the schema included, read-only."""
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in ["sqlite_master", *tables]:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str):
                        yield table, column, value.encode("utf-8", "surrogatepass")
                    elif isinstance(value, bytes):
                        yield table, column, value
    finally:
        conn.close()


def ledger_rows(ledger: Path, table: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def evidence(
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
) -> Evidence:
    workdir = tmp_path_factory.mktemp("secrets")
    with spendbrake_up(
        workdir, fake=fake, pki=pki, certs=certs, config_toml=SPENDBRAKE_CONFIG, cache_dir=cache_dir
    ) as proxy:
        found = Evidence()
        with ThreadPoolExecutor(3) as pool:
            sdk = pool.submit(sdk_calls, proxy)
            plain = pool.submit(plain_calls, proxy)
            run = pool.submit(run_command, proxy, fake, pki, cache_dir, workdir)
            found.statuses = {**sdk.result(), **plain.result()}
            found.statuses["ok-bot"] = sdk.result()["ok-bot"] + plain.result()["ok-bot"]
            found.cli_outputs.update(run.result())
        settled_calls(proxy.ledger, "ok-bot", 7)  # the streams' rows are final
        commands = [["status", "--json"], ["status"], ["report"], ["report", "--json"]]
        with ThreadPoolExecutor(2) as pool:
            outputs = pool.map(lambda c: spendbrake_cli(*c, *proxy.cli_args()), commands)
            for command, output in zip(commands, outputs, strict=True):
                found.cli_outputs[" ".join(command)] = output.stdout + output.stderr
        found.files.update(ledger_files(proxy.ledger, "while the proxy runs"))
    # The proxy has stopped (and was healthy: no traceback in its output).
    found.proxy_output = proxy.log.read_bytes()
    found.files.update(ledger_files(proxy.ledger, "after the proxy stopped"))
    found.values = list(ledger_values(proxy.ledger))
    found.rows = {table: ledger_rows(proxy.ledger, table) for table in ("calls", "events")}
    found.provider_saw = requests_of(fake, TEST_ID)
    return found


# -- the tests --------------------------------------------------------------------------------


def test_the_calls_took_every_path_with_their_secrets(evidence: Evidence) -> None:
    """Without this the other tests could pass on calls that never carried their secrets."""
    ok, refused = (200, None), "daily_budget_exceeded"
    assert evidence.statuses == {
        "ok-bot": [ok] * 7,
        "tight-bot": [(402, refused)] * 3,
        "loop-bot": [ok, (423, "loop_detected"), (423, "agent_suspended")],
        "mangled-bot": [(400, "unreadable_request")] * 6 + [(403, "unmetered_route")] * 2,
        "nobody-bot": [(407, "unauthenticated_agent")],
        "plain-bot": [(502, None)] * 2,
    }
    calls = evidence.rows["calls"]
    states = {(c["agent"], c["state"], c["reason"]) for c in calls}
    assert ("ok-bot", "settled", "") in states
    assert ("run-bot", "settled", "") in states
    assert {("tight-bot", "refused", refused), ("loop-bot", "refused", "loop_detected")} <= states
    assert ("mangled-bot", "refused", "unreadable_request") in states
    assert {(c["outcome"], c["reason"]) for c in calls if c["agent"] == "plain-bot"} == {
        ("interrupted", "server closed connection")
    }
    assert any(c["stream"] for c in calls if c["agent"] == "ok-bot")
    assert [e["kind"] for e in evidence.rows["events"] if e["agent"] == "loop-bot"] == ["suspended"]
    # The provider got the keys and the prompt: they passed through the proxy in the clear.
    saw = [(r.path, r.headers, r.body) for r in evidence.provider_saw]
    assert any(h.get("authorization") == f"Bearer {OPENAI_KEY.value}" for _, h, _ in saw)
    assert any(h.get("x-api-key") == ANTHROPIC_KEY.value for _, h, _ in saw)
    assert any(h.get("x-goog-api-key") == GEMINI_HEADER_KEY.value for _, h, _ in saw)
    assert any(f"key={GEMINI_QUERY_KEY.value}" in path for path, _, _ in saw)
    assert all(PROMPT.value.encode() in body for _, _, body in saw)
    assert all("proxy-authorization" not in h for _, h, _ in saw)


def test_no_ledger_value_holds_a_secret(evidence: Evidence) -> None:
    tables = {table for table, _, _ in evidence.values}
    assert {"sqlite_master", "calls", "events", "suspensions", "day_totals"} <= tables
    leaks = [
        f"{name} in {table}.{column}: {value[:200]!r}"
        for table, column, value in evidence.values
        for name in found_in(value)
    ]
    assert leaks == []


def test_no_ledger_file_holds_a_secret_byte_for_byte(evidence: Evidence) -> None:
    """The files too: a WAL frame or a freed page keeps what the tables no longer show."""
    names = set(evidence.files)
    assert {"ledger.db (while the proxy runs)", "ledger.db-wal (while the proxy runs)"} <= names
    assert "ledger.db (after the proxy stopped)" in names
    leaks = [
        f"{name} in {file}" for file, data in evidence.files.items() for name in found_in(data)
    ]
    assert leaks == []


def test_the_proxy_output_holds_no_secret(evidence: Evidence) -> None:
    output = evidence.proxy_output
    assert b"HTTP(S) proxy listening" in output  # the whole output, start to end
    assert b"loop_detected stopped a call of loop-bot" in output  # and the addon's warnings
    assert found_in(output) == [], output.decode(errors="replace")


@pytest.mark.parametrize(
    "command",
    ["status --json", "status", "report", "report --json", "run (stderr)", "run --summary-json"],
)
def test_the_cli_prints_no_secret(evidence: Evidence, command: str) -> None:
    output = evidence.cli_outputs[command]
    assert output.strip()
    assert found_in(output.encode()) == [], output


def test_the_proxy_password_is_stored_as_the_session_and_the_search_sees_it(
    evidence: Evidence,
) -> None:
    """The password is the session id by design, so it is stored: which also shows that the
    searches above read the values and files where a leaked secret would be. The credentials as
    the client sent them (base64 in Proxy-Authorization) were searched for with the secrets."""
    calls = evidence.rows["calls"]
    assert {c["session"] for c in calls if c["agent"] in AGENTS} == {PROXY_PASSWORD}
    password = {"the proxy password": PROXY_PASSWORD.encode()}
    columns = {
        f"{table}.{column}" for table, column, value in evidence.values if found_in(value, password)
    }
    assert columns == {"calls.session", "window_totals.name"}  # "AGENT/SESSION"
    assert found_in(evidence.files["ledger.db (after the proxy stopped)"], password)
    assert "nobody-bot" not in {c["agent"] for c in calls}  # the unusable password: no row
