"""/metrics: the fixed ledger's day as Prometheus reads it (parsed by prometheus_client's own
parser), and the latency spendbrake's hooks add."""

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fixed_ledger
from fixed_ledger import NOW
from spendbrake.ledger_reads import Reader, open_reader
from spendbrake.ledger_url import LedgerLocation
from spendbrake.metrics import AddedLatency, exposition
from spendbrake.status_facts import read_metric_facts

BOTH_BACKENDS = True  # each test on a SQLite file and on a PostgreSQL schema (conftest)

type Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def reader(path: LedgerLocation) -> Iterator[Reader]:
    fixed_ledger.write(path)
    opened = open_reader(path)
    yield opened
    opened.close()


def scrape(reader: Reader, latency: AddedLatency | None = None) -> Samples:
    facts = read_metric_facts(reader, fixed_ledger.config(), NOW)
    text = exposition(facts, latency or AddedLatency()).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


GPT_4O = {"agent": "research-bot", "provider": "openai", "model": "gpt-4o"}
HAIKU = {"agent": "summarizer", "provider": "anthropic", "model": "claude-haiku-4-5"}
MINI = {"agent": "translator", "provider": "openai", "model": "gpt-4o-mini"}


def test_spend_holds_and_calls_per_agent_and_model(reader: Reader) -> None:
    samples = scrape(reader)
    assert value(samples, "spendbrake_spent_usd_total", **GPT_4O) == 0.017  # yesterday's not
    assert value(samples, "spendbrake_held_usd", **GPT_4O) == 0.004  # the call in flight
    assert value(samples, "spendbrake_calls_total", **GPT_4O) == 4  # 3 settled, 1 in flight
    assert value(samples, "spendbrake_spent_usd_total", **HAIKU) == 0.30
    assert value(samples, "spendbrake_calls_total", **HAIKU) == 2
    # The translator's call went out as gpt-4o-mini: that is the model it is counted under.
    assert value(samples, "spendbrake_spent_usd_total", **MINI) == 0.0012
    models = {dict(labels)["model"] for name, labels in samples if name == "spendbrake_calls_total"}
    assert models == {"gpt-4o", "claude-haiku-4-5", "gpt-4o-mini"}


def test_tokens_by_kind(reader: Reader) -> None:
    samples = scrape(reader)
    assert value(samples, "spendbrake_tokens_total", kind="input", **GPT_4O) == 80 + 100 + 30
    assert value(samples, "spendbrake_tokens_total", kind="output", **GPT_4O) == 40 + 10 + 5
    assert value(samples, "spendbrake_tokens_total", kind="input", **HAIKU) == 6000
    assert value(samples, "spendbrake_tokens_total", kind="reasoning", **HAIKU) == 0
    kinds = {dict(labels)["kind"] for name, labels in samples if name == "spendbrake_tokens_total"}
    assert kinds == {
        "input",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "output",
        "reasoning",
    }


def test_refusals_by_reason(reader: Reader) -> None:
    samples = scrape(reader)
    refusals = {
        (dict(labels)["agent"], dict(labels)["reason"]): count
        for (name, labels), count in samples.items()
        if name == "spendbrake_refusals_total"
    }
    assert refusals == {
        ("research-bot", "daily_budget_exceeded"): 1,
        ("summarizer", "agent_suspended"): 1,
    }
    assert (
        value(samples, "spendbrake_refusals_total", reason="daily_budget_exceeded", **GPT_4O) == 1
    )


def test_limits_remaining_month_burn_and_state_per_agent(reader: Reader) -> None:
    samples = scrape(reader)
    assert value(samples, "spendbrake_limit_usd", agent="research-bot") == 0.05
    assert value(samples, "spendbrake_limit_usd", agent="idle-bot") == 5.0  # the default
    # $0.05 - $0.017 spent - $0.004 held
    assert value(samples, "spendbrake_remaining_usd", agent="research-bot") == pytest.approx(
        0.029, abs=1e-12
    )
    assert value(samples, "spendbrake_month_spent_usd", agent="research-bot") == 0.02
    assert value(samples, "spendbrake_month_limit_usd", agent="research-bot") == 20.0
    assert ("spendbrake_month_limit_usd", frozenset({("agent", "idle-bot")})) not in samples
    assert value(samples, "spendbrake_burn_usd_per_minute", agent="summarizer", window="1m") == 0.1
    assert (
        value(samples, "spendbrake_burn_usd_per_minute", agent="summarizer", window="15m") == 0.02
    )
    states = {
        dict(labels)["agent"]: dict(labels)["state"]
        for (name, labels), on in samples.items()
        if name == "spendbrake_agent_state" and on == 1
    }
    assert states == {
        "research-bot": "exhausted",
        "summarizer": "suspended",
        "translator": "downgraded",
        "idle-bot": "ok",
    }


def test_the_added_latency_is_a_histogram_per_hook(reader: Reader) -> None:
    latency = AddedLatency()
    latency.observe("request", 0.0003)
    latency.observe("request", 0.004)
    latency.observe("response", 0.00004)
    samples = scrape(reader, latency)
    name = "spendbrake_added_latency_seconds"
    assert value(samples, f"{name}_count", hook="request") == 2
    assert value(samples, f"{name}_sum", hook="request") == pytest.approx(0.0043)
    assert value(samples, f"{name}_bucket", hook="request", le="0.0005") == 1
    assert value(samples, f"{name}_bucket", hook="request", le="0.005") == 2
    assert value(samples, f"{name}_bucket", hook="response", le="5e-05") == 1
    assert value(samples, f"{name}_count", hook="error") == 0  # present before any error
