"""Strict mode and the admin API (issue 5): spoofing attempts fail, and a proxy with an
allow-list serves no one else.

The strict proxy's ledger holds two agents' secrets and an admin token before it starts. A
second proxy allows only 127.0.0.2: a client on 127.0.0.1 is outside its networks.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Certs,
    Proxy,
    basic_auth,
    clean_environment,
    ledger_calls,
    requests_of,
    run_client,
    spendbrake_cli,
    spendbrake_up,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

STRICT = """
[access]
strict = true
"""
ALLOW_ONLY_127_0_0_2 = """
[access]
allow_clients = ["127.0.0.2"]
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("strict")
    ledger = workdir / "ledger.db"
    secrets = {}
    for agent in ("alpha-bot", "beta-bot"):
        added = spendbrake_cli("agent", "add", agent, "--ledger", ledger).stdout
        [secrets[agent]] = re.findall(rf"http://{agent}:([A-Za-z0-9_-]+)@", added)
    token = spendbrake_cli("admin-token", "--ledger", ledger).stdout.splitlines()[-1].strip()
    return {"workdir": workdir, "ledger": ledger, "secrets": secrets, "token": token}


@pytest.fixture(scope="module")
def proxy(
    keys: dict[str, Any], fake: FakeProvider, pki: TestPKI, certs: Certs, cache_dir: Path
) -> Iterator[Proxy]:
    with spendbrake_up(
        keys["workdir"],
        fake=fake,
        pki=pki,
        certs=certs,
        config_toml=STRICT,
        ledger=keys["ledger"],
        cache_dir=cache_dir,
    ) as running:
        yield running


def chat(proxy: Proxy, test_id: str, agent: str | None, password: str | None, **spec: Any) -> Any:
    """One chat call with the openai SDK; its report."""
    spec = {"max_tokens": 5, "headers": {TEST_ID_HEADER: test_id, **spec.pop("headers", {})}}
    [call] = run_client("sdk_chat.py", spec, proxy.client_env(agent, password))["calls"]
    return call


def curl(proxy_url: str, url: str, *arguments: str, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--proxy", proxy_url, "--cacert", str(ca),
         "--write-out", "\n%{http_code} %{http_connect}", *arguments, url],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def answer_or_closed(sock: socket.socket) -> bytes:
    """What the proxy answers; b"" when it closed (or reset) the connection instead."""
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def test_an_agent_with_its_secret_is_served(
    proxy: Proxy, keys: dict[str, Any], fake: FakeProvider, test_id: str
) -> None:
    call = chat(proxy, test_id, "alpha-bot", keys["secrets"]["alpha-bot"] + ".run-1")
    assert call["ok"], call
    assert call["headers"]["x-spendbrake-agent"] == "alpha-bot"
    assert ledger_calls(proxy.ledger, "alpha-bot")[-1]["session"] == "run-1"
    assert len(requests_of(fake, test_id)) == 1


@pytest.mark.parametrize(
    ("agent", "password", "message"),
    [
        (None, None, "strict mode: name the agent and its secret in the proxy URL"),
        ("alpha-bot", None, "is not the secret of agent 'alpha-bot'"),
        ("alpha-bot", "guess", "is not the secret of agent 'alpha-bot'"),
        ("gamma-bot", "anything", "strict mode: agent 'gamma-bot' has no secret"),
    ],
)
def test_a_call_without_a_valid_secret_is_refused_407_and_never_forwarded(
    proxy: Proxy,
    keys: dict[str, Any],
    fake: FakeProvider,
    test_id: str,
    agent: str | None,
    password: str | None,
    message: str,
) -> None:
    call = chat(proxy, test_id, agent, password, max_retries=2)
    assert not call["ok"]
    assert call["status"] == 407
    assert call["error_class"] == "APIStatusError"
    assert call["error_body"]["error"]["code"] == "unauthenticated_agent"
    assert message in call["error_body"]["error"]["message"]
    assert keys["secrets"]["alpha-bot"] not in json.dumps(call)
    assert requests_of(fake, test_id) == []


def test_another_agents_secret_or_a_header_cannot_claim_an_agent(
    proxy: Proxy, keys: dict[str, Any], fake: FakeProvider, test_id: str
) -> None:
    beta_secret = keys["secrets"]["beta-bot"]
    call = chat(proxy, test_id, "alpha-bot", beta_secret)
    assert call["status"] == 407
    # beta-bot's own secret and a header naming alpha-bot: counted as beta-bot, header dropped.
    call = chat(
        proxy, test_id, "beta-bot", beta_secret, headers={"x-spendbrake-agent": "alpha-bot"}
    )
    assert call["headers"]["x-spendbrake-agent"] == "beta-bot"
    [forwarded] = requests_of(fake, test_id)
    assert "x-spendbrake-agent" not in forwarded.headers


def test_tunnels_to_other_hosts_need_a_valid_secret_too(
    proxy: Proxy, keys: dict[str, Any], fake: FakeProvider, pki: TestPKI
) -> None:
    other_host = f"https://localhost:{fake.port}/_fake/hello"  # not an LLM host: a tunnel
    refused = curl(proxy.proxy_url(), other_host, ca=pki.ca_cert)
    assert refused.returncode != 0
    assert refused.stdout.split()[-1] == "407"  # the CONNECT's answer
    secret = keys["secrets"]["beta-bot"]
    allowed = curl(proxy.proxy_url("beta-bot", secret), other_host, ca=pki.ca_cert)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.split()[-2:] == ["200", "200"]


def test_the_admin_api_needs_the_admin_token_not_an_agents_secret(
    proxy: Proxy, keys: dict[str, Any]
) -> None:
    secret = keys["secrets"]["alpha-bot"]
    via = proxy.proxy_url("alpha-bot", secret)
    status = "https://spendbrake.local/api/status"
    for authorization in ([], ["-H", f"authorization: Bearer {secret}"]):
        denied = curl(via, status, *authorization, ca=proxy.certs.bundle)
        assert denied.stdout.split()[-2] == "401", denied.stdout
        assert "this needs the admin token" in denied.stdout
    token = ["-H", f"authorization: Bearer {keys['token']}"]
    allowed = curl(via, status, *token, ca=proxy.certs.bundle)
    body, _, codes = allowed.stdout.rpartition("\n")
    assert codes.split()[0] == "200"
    assert {entry["agent"] for entry in json.loads(body)["agents"]} >= {"alpha-bot"}
    resume = "https://spendbrake.local/api/agents/alpha-bot/resume"
    resumed = curl(via, resume, "-X", "POST", *token, ca=proxy.certs.bundle)
    body, _, codes = resumed.stdout.rpartition("\n")
    assert codes.split()[0] == "200"
    assert json.loads(body) == {"agent": "alpha-bot", "resumed": False}  # it was not suspended


def test_whoami_in_strict_mode_says_why_a_client_is_refused(proxy: Proxy) -> None:
    refused = curl(proxy.proxy_url("alpha-bot", "guess"), "https://spendbrake.local/whoami",
                   ca=proxy.certs.bundle)  # fmt: skip
    body, _, codes = refused.stdout.rpartition("\n")
    assert codes.split()[0] == "407"
    assert json.loads(body)["strict"] is True
    assert "is not the secret of agent 'alpha-bot'" in json.loads(body)["error"]


def test_a_client_outside_the_allowed_networks_is_disconnected(
    start_proxy: Callable[..., AbstractContextManager[Proxy]],
) -> None:
    with start_proxy(config_toml=ALLOW_ONLY_127_0_0_2) as allow_list:
        with socket.create_connection(("127.0.0.1", allow_list.port), timeout=10) as outsider:
            outsider.sendall(
                b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
                + f"Proxy-Authorization: {basic_auth('x', 'y')}\r\n\r\n".encode()
            )
            assert answer_or_closed(outsider) == b""  # closed without a word
        with socket.create_connection(
            ("127.0.0.1", allow_list.port), timeout=10, source_address=("127.0.0.2", 0)
        ) as insider:
            insider.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            assert insider.recv(4096).startswith(b"HTTP/1.1 200")
        assert "client 127.0.0.1 is not in access.allow_clients" in allow_list.output()


def test_no_secret_or_token_is_stored_or_logged(proxy: Proxy, keys: dict[str, Any]) -> None:
    """After every test above: the ledger's files and values and the proxy's output hold the
    secrets and the admin token only as hashes."""
    needles = {"the admin token": keys["token"]}
    for agent, secret in keys["secrets"].items():
        needles[f"{agent}'s secret"] = secret
        needles[f"{agent}'s Proxy-Authorization"] = basic_auth(agent, secret).removeprefix("Basic ")
    haystacks = {"the proxy's output": proxy.output().encode()}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{proxy.ledger}{suffix}")
        if path.exists():
            haystacks[path.name] = path.read_bytes()
    conn = sqlite3.connect(f"file:{proxy.ledger}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        values = [
            str(value)
            for table in tables
            for row in conn.execute(f"SELECT * FROM {table}")
            for value in row
        ]
    finally:
        conn.close()
    haystacks["the ledger's values"] = "\n".join(values).encode()
    found = [
        f"{name} in {where}"
        for where, data in haystacks.items()
        for name, needle in needles.items()
        if needle.encode() in data
    ]
    assert found == []
    assert len(values) > 0  # the scan saw the ledger's rows
