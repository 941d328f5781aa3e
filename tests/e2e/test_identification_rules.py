"""Every identification rule end to end (issue 5): real clients through a real proxy, the agent
in the ledger row, and ``spendbrake.local/whoami`` giving the same answer to the same client.

One proxy listens twice (its main port, and one that belongs to port-bot). Its configuration
names agents by process (a marker on the client's command line) and by client network (the
client connects from 127.0.0.2, which Linux routes over loopback like 127.0.0.1). Before it
starts, the ledger learns an API key (``spendbrake agent key``) and an agent's secret
(``spendbrake agent add``).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    CLIENTS_DIR,
    SPENDBRAKE,
    TEST_ID_HEADER,
    Certs,
    Proxy,
    clean_environment,
    ledger_calls,
    run_client,
    spendbrake_cli,
    spendbrake_up,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

MARKER = f"proc-marker-{uuid.uuid4().hex[:8]}"
CONFIG = f"""
[identify]
networks = {{ "127.0.0.2/32" = "net-bot" }}

[[identify.processes]]
agent = "proc-bot"
cmdline = "*{MARKER}*"
"""
API_KEY = f"sk-e2e-key-bot-{uuid.uuid4().hex}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def port_of_port_bot() -> int:
    return free_port()


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The ledger, with secret-bot's secret and key-bot's API key in it before the proxy starts."""
    workdir = tmp_path_factory.mktemp("identification")
    ledger = workdir / "ledger.db"
    added = spendbrake_cli("agent", "add", "secret-bot", "--ledger", ledger).stdout
    [made] = re.findall(r"http://secret-bot:([A-Za-z0-9_-]+)@", added)
    result = subprocess.run(
        [str(SPENDBRAKE), "agent", "key", "key-bot", "--ledger", str(ledger)],
        input=API_KEY + "\n",
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert API_KEY not in result.stdout + result.stderr  # only its last 4 characters
    return {"workdir": workdir, "ledger": ledger, "secret": made}


@pytest.fixture(scope="module")
def proxy(
    secret: dict[str, Any],
    port_of_port_bot: int,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
) -> Iterator[Proxy]:
    with spendbrake_up(
        secret["workdir"],
        fake=fake,
        pki=pki,
        certs=certs,
        config_toml=CONFIG,
        ledger=secret["ledger"],
        cache_dir=cache_dir,
        more_listens=[f"127.0.0.1:{port_of_port_bot}=port-bot"],
    ) as running:
        yield running


def client(library: str, via: Proxy, test_id: str, **spec: Any) -> dict[str, Any]:
    spec = {
        "library": library,
        "proxy": spec.pop("proxy", via.proxy_url()),
        "ca": str(via.certs.bundle),
        "headers": {TEST_ID_HEADER: test_id, **spec.pop("headers", {})},
        **spec,
    }
    env = spec.pop("env", clean_environment())
    report = run_client("identify_client.py", spec, env)
    assert report["status"] == 200, report
    assert report["whoami_status"] == 200, report
    return report


CHAT_URL = "https://api.openai.com/v1/chat/completions"
WHOAMI_URL = "https://spendbrake.local/whoami"
CHAT_BODY = json.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "curl"}]}
)


def curl(proxy: Proxy, test_id: str, url: str, *arguments: str) -> str:
    """curl through the proxy; with --data a JSON POST whose response headers come first."""
    headers = ["--dump-header", "-", "-H", "content-type: application/json"]
    result = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--fail-with-body",
            "--proxy", proxy.proxy_url(), "--cacert", str(proxy.certs.bundle),
            "-H", f"{TEST_ID_HEADER}: {test_id}",
            *(headers if "--data" in arguments else []),
            *arguments,
            url,
        ],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_counted_as(proxy: Proxy, report: dict[str, Any], agent: str, source: str) -> None:
    """The ledger row, the response header and whoami all name the same agent."""
    assert report["agent_header"] == agent
    assert report["whoami"]["agent"] == agent
    assert report["whoami"]["source"] == source
    rows = ledger_calls(proxy.ledger, agent)
    assert rows, f"no ledger row for {agent}"
    assert rows[-1]["state"] == "settled"


def test_proxy_auth_user_with_the_openai_sdk(proxy: Proxy, test_id: str) -> None:
    env = proxy.client_env("sdk-bot", "run-1")
    report = client("openai", proxy, test_id, env=env)
    assert_counted_as(proxy, report, "sdk-bot", "proxy-auth")
    assert report["whoami"]["session"] == "run-1"
    assert ledger_calls(proxy.ledger, "sdk-bot")[-1]["session"] == "run-1"


def test_an_agents_secret_in_the_proxy_url_with_requests(
    proxy: Proxy, secret: dict[str, Any], test_id: str
) -> None:
    url = proxy.proxy_url("secret-bot", f"{secret['secret']}.nightly")
    report = client("requests", proxy, test_id, proxy=url)
    assert_counted_as(proxy, report, "secret-bot", "proxy-auth")
    assert report["whoami"]["why"] == "proxy-auth user 'secret-bot', secret verified"
    assert ledger_calls(proxy.ledger, "secret-bot")[-1]["session"] == "nightly"


def test_the_header_with_httpx(proxy: Proxy, test_id: str) -> None:
    report = client("httpx", proxy, test_id, headers={"x-spendbrake-agent": "header-bot"})
    assert_counted_as(proxy, report, "header-bot", "header")


def test_the_listen_port_with_requests(proxy: Proxy, port_of_port_bot: int, test_id: str) -> None:
    url = f"http://127.0.0.1:{port_of_port_bot}"
    report = client("requests", proxy, test_id, proxy=url)
    assert_counted_as(proxy, report, "port-bot", "listen-port")


def test_the_source_process_with_httpx(proxy: Proxy, test_id: str) -> None:
    report = client("httpx", proxy, test_id, marker=MARKER)
    assert_counted_as(proxy, report, "proc-bot", "process")
    assert "pid " in report["whoami"]["why"]


def test_the_client_network_with_curl_from_another_loopback_address(
    proxy: Proxy, test_id: str
) -> None:
    # httpx cannot choose its local address towards a proxy; curl can.
    chat = curl(proxy, test_id, CHAT_URL, "--interface", "127.0.0.2", "--data", CHAT_BODY)
    assert "x-spendbrake-agent: net-bot" in chat.lower()
    whoami = json.loads(curl(proxy, test_id, WHOAMI_URL, "--interface", "127.0.0.2"))
    assert (whoami["agent"], whoami["source"]) == ("net-bot", "client-network")
    assert whoami["client"] == "127.0.0.2"
    assert ledger_calls(proxy.ledger, "net-bot")[-1]["state"] == "settled"


def test_the_api_key_with_the_openai_sdk(proxy: Proxy, test_id: str) -> None:
    env = {**proxy.client_env(None), "OPENAI_API_KEY": API_KEY}
    report = client("openai", proxy, test_id, env=env, api_key=API_KEY)
    assert_counted_as(proxy, report, "key-bot", "api-key")
    assert report["whoami"]["why"] == f"API key …{API_KEY[-4:]} is registered to key-bot"


def test_the_api_key_with_curl(proxy: Proxy, test_id: str) -> None:
    key = ("-H", f"authorization: Bearer {API_KEY}")
    chat = curl(proxy, test_id, CHAT_URL, *key, "--data", CHAT_BODY)
    assert "x-spendbrake-agent: key-bot" in chat.lower()
    whoami = json.loads(curl(proxy, test_id, WHOAMI_URL, *key))
    assert (whoami["agent"], whoami["source"]) == ("key-bot", "api-key")


def test_nothing_named_gives_the_default_agent(proxy: Proxy, test_id: str) -> None:
    report = client("requests", proxy, test_id)
    assert_counted_as(proxy, report, "default", "default")


def test_spendbrake_whoami_asks_through_the_proxy(proxy: Proxy, secret: dict[str, Any]) -> None:
    env = proxy.client_env("secret-bot", secret["secret"])
    result = subprocess.run(
        [str(SPENDBRAKE), "whoami"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "agent:   secret-bot",
        "session: (the agent's unnamed session)",
        "why:     proxy-auth user 'secret-bot', secret verified",
    ]
    wrong = proxy.client_env("secret-bot", "not-the-secret")
    result = subprocess.run(
        [str(SPENDBRAKE), "whoami"], env=wrong, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "is not the secret of agent 'secret-bot'" in result.stderr


NODE_MODULES = Path(__file__).resolve().parents[2] / ".venv" / "node" / "node_modules"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "undici").is_dir(),
    reason="needs node and undici in .venv/node (scripts/test installs it with npm)",
)
def test_a_node_agent_with_fetch_through_undicis_env_proxy_agent(
    proxy: Proxy, secret: dict[str, Any], test_id: str
) -> None:
    env = proxy.client_env("secret-bot", f"{secret['secret']}.node-run")
    env.update(NODE_EXTRA_CA_CERTS=str(proxy.certs.bundle), NODE_PATH=str(NODE_MODULES))
    spec = {"headers": {TEST_ID_HEADER: test_id}}
    result = subprocess.run(
        ["node", str(CLIENTS_DIR / "node_fetch.cjs"), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report
    assert_counted_as(proxy, report, "secret-bot", "proxy-auth")
    assert report["whoami"]["session"] == "node-run"
    assert ledger_calls(proxy.ledger, "secret-bot")[-1]["session"] == "node-run"


def test_the_registered_api_key_and_secret_are_nowhere_in_the_ledger_or_the_output(
    proxy: Proxy, secret: dict[str, Any]
) -> None:
    """After every call above: the key and the secret are only hashes (and the key's last 4
    characters) in the ledger's files, and nowhere in what the proxy printed."""
    core = API_KEY.removeprefix("sk-e2e-key-bot-")
    haystacks = {"the proxy's output": proxy.output().encode()}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{proxy.ledger}{suffix}")
        if path.exists():
            haystacks[path.name] = path.read_bytes()
    needles = {"the API key": API_KEY, "its random part": core, "the secret": secret["secret"]}
    found = [
        f"{name} in {where}"
        for where, data in haystacks.items()
        for name, needle in needles.items()
        if needle.encode() in data
    ]
    assert found == []
    assert ledger_calls(proxy.ledger, "key-bot")  # calls made with the key were recorded
