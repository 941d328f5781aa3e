"""/metrics of a running proxy, scraped as Prometheus would (the bearer token, the plain status
port or https://spendbrake.local through the proxy) and read by prometheus_client's parser:
every figure is the ledger's."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Certs
from prometheus_client.parser import text_string_to_metric_families
from status_support import StatusProxy, curl_through_proxy, status_proxy, traffic

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

AGENTS = ("metrics-a", "metrics-b")
BROKE = "metrics-broke"
type Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
) -> Iterator[StatusProxy]:
    workdir = tmp_path_factory.mktemp("metrics")
    with status_proxy(
        workdir, fake=fake, pki=pki, certs=certs, cache_dir=cache_dir, broke_agent=BROKE
    ) as started:
        yield started


@pytest.fixture(scope="module")
def rows(running: StatusProxy) -> dict[str, list[dict[str, Any]]]:
    return traffic(running.proxy, "metrics-endpoint", AGENTS, BROKE)


def parsed(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_plain_port(running: StatusProxy, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"{running.status_url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_need_the_admin_token(running: StatusProxy) -> None:
    assert scrape_plain_port(running, None)[0] == 401
    assert scrape_plain_port(running, "not-the-token")[0] == 401


def test_the_metrics_are_the_ledgers_figures_per_agent_and_model(
    running: StatusProxy, rows: dict[str, list[dict[str, Any]]]
) -> None:
    status, text = scrape_plain_port(running, running.token)
    assert status == 200
    samples = parsed(text)
    for agent, calls in rows.items():
        if agent == BROKE:
            continue
        [model] = {call["forwarded_model"] for call in calls}
        labels = {"agent": agent, "provider": "openai", "model": model}
        key = frozenset(labels.items())
        spent = sum(call["actual_nanos"] for call in calls)
        assert spent > 0
        assert samples[("spendbrake_spent_usd_total", key)] == spent / 1e9
        assert samples[("spendbrake_held_usd", key)] == 0
        assert samples[("spendbrake_calls_total", key)] == len(calls)
        for kind in ("input", "output"):
            tokens = sum(call[f"{kind}_tokens"] for call in calls)
            assert tokens > 0
            assert samples[("spendbrake_tokens_total", key | {("kind", kind)})] == tokens
        assert samples[("spendbrake_limit_usd", frozenset({("agent", agent)}))] == 5.0
        remaining = samples[("spendbrake_remaining_usd", frozenset({("agent", agent)}))]
        assert remaining == pytest.approx((5_000_000_000 - spent) / 1e9, abs=1e-12)
    refused = frozenset(
        {"agent": BROKE, "provider": "openai", "model": "gpt-4o-mini",
         "reason": "daily_budget_exceeded"}.items()
    )  # fmt: skip
    assert samples[("spendbrake_refusals_total", refused)] == 1
    state = frozenset({("agent", BROKE), ("state", "exhausted")})
    assert samples[("spendbrake_agent_state", state)] == 1


def test_the_latency_spendbrake_adds_is_counted_per_hook(
    running: StatusProxy, rows: dict[str, list[dict[str, Any]]]
) -> None:
    samples = parsed(scrape_plain_port(running, running.token)[1])
    name = "spendbrake_added_latency_seconds"
    admitted = sum(len(rows[agent]) for agent in AGENTS)
    # Every metered call was admitted (or refused) once and settled once; nothing else counts.
    assert samples[(f"{name}_count", frozenset({("hook", "request")}))] == admitted + 1
    assert samples[(f"{name}_count", frozenset({("hook", "response")}))] == admitted
    assert samples[(f"{name}_sum", frozenset({("hook", "request")}))] > 0


def test_prometheus_can_scrape_through_the_proxy_too(
    running: StatusProxy, rows: dict[str, list[dict[str, Any]]]
) -> None:
    """https://spendbrake.local/metrics with the proxy's CA trusted: what a Prometheus on
    another host does with proxy_url and tls_config.ca_file."""
    auth = f"authorization: Bearer {running.token}"
    answer = curl_through_proxy(running.proxy, "https://spendbrake.local/metrics", "-H", auth)
    assert answer.returncode == 0, answer.stderr
    through_proxy = parsed(answer.stdout)
    on_the_port = parsed(scrape_plain_port(running, running.token)[1])
    ledger_figures = {k: v for k, v in on_the_port.items() if "latency" not in k[0]}
    assert {k: v for k, v in through_proxy.items() if "latency" not in k[0]} == ledger_figures


def test_the_token_is_never_in_the_proxys_output(running: StatusProxy) -> None:
    assert running.token not in running.proxy.output()
