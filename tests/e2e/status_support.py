"""A proxy with an admin token and the plain status port, and a few agents' calls through it:
what the status page and /metrics end-to-end tests look at."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_support import (
    TEST_ID_HEADER,
    Certs,
    Proxy,
    clean_environment,
    run_client,
    settled_calls,
    spendbrake_cli,
    spendbrake_up,
    wait_for,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

_STATUS_PORT = re.compile(r"spendbrake: status page and /metrics at http://127\.0\.0\.1:(\d+)/")
# One agent whose day has no room for any call: its calls are refused (daily_budget_exceeded).
BROKE_CONFIG = """
[agents.{broke}]
daily_usd = 0.000001
"""


@dataclass(frozen=True)
class StatusProxy:
    proxy: Proxy
    token: str
    status_port: int

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"


@contextmanager
def status_proxy(
    workdir: Path,
    *,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    broke_agent: str,
) -> Iterator[StatusProxy]:
    """``spendbrake up`` with ``spendbrake_status_listen=127.0.0.1:0`` on a ledger that has an
    admin token, made with ``spendbrake admin-token`` as a user would."""
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = workdir / "ledger.db"
    made = spendbrake_cli("admin-token", "--ledger", ledger).stdout
    token = made.splitlines()[-1].strip()
    with spendbrake_up(
        workdir,
        fake=fake,
        pki=pki,
        certs=certs,
        config_toml=BROKE_CONFIG.format(broke=broke_agent),
        ledger=ledger,
        cache_dir=cache_dir,
        settings=["spendbrake_status_listen=127.0.0.1:0"],
    ) as proxy:
        found = wait_for(
            lambda: _STATUS_PORT.search(proxy.output()), what="the status port in the log"
        )
        yield StatusProxy(proxy, token, int(found[1]))


def chat_calls(
    proxy: Proxy, test_id: str, agent: str, calls: int, model: str = "gpt-4o-mini"
) -> list[dict[str, Any]]:
    """``calls`` chat calls of ``agent`` with the openai SDK; the SDK's report of each."""
    spec = {
        "model": model,
        "calls": calls,
        "max_tokens": 20,
        "max_retries": 0,
        "headers": {TEST_ID_HEADER: test_id},
    }
    report: list[dict[str, Any]] = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"]
    return report


def traffic(
    proxy: Proxy, test_id: str, agents: Sequence[str], broke: str
) -> dict[str, list[dict[str, Any]]]:
    """Two calls of the first agent (gpt-4o-mini), one of the second (gpt-4o), and one of the
    broke agent, refused; the ledger rows of each once all are settled."""
    first, second = agents
    assert all(call["ok"] for call in chat_calls(proxy, test_id, first, 2))
    assert all(call["ok"] for call in chat_calls(proxy, test_id, second, 1, "gpt-4o"))
    [refused] = chat_calls(proxy, test_id, broke, 1)
    assert refused["status"] == 402
    return {
        first: settled_calls(proxy.ledger, first, 2),
        second: settled_calls(proxy.ledger, second, 1),
        broke: settled_calls(proxy.ledger, broke, 1),
    }


def curl_through_proxy(proxy: Proxy, url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """curl through the proxy, trusting its CA, as any tool that honours the bundle does."""
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--proxy", proxy.proxy_url(), "--cacert",
         str(proxy.certs.bundle), *arguments, url],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip
