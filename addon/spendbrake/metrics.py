"""Prometheus metrics: the day's spend, holds, limits, calls, refusals and tokens per agent and
model, read from the ledger at each scrape, and the latency spendbrake's own hooks add.

The ledger figures are the ledger's, not this process's: every proxy sharing one ledger reports
the same values, so scrape one of them (or aggregate with ``max``). They cover the current
calendar day in the configured timezone, the window daily limits act on, so the ``_total``
counters start again from zero at local midnight; ``rate()`` and ``increase()`` take that drop
for a counter reset, as they do a process restart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spendbrake.money import NANOS_PER_USD
from spendbrake.status_facts import MetricFacts
from spendbrake.status_reads import TOKEN_KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HOOKS = ("request", "response", "error")  # admission; settlement of a finished or failed call
STATES = ("ok", "throttled", "downgraded", "exhausted", "suspended")
# From 50 µs (a hold in SQLite) to a second (a ledger another process holds locked).
_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0)  # fmt: skip


class AddedLatency:
    """How long spendbrake's hooks hold each metered call up, observed once per hook."""

    def __init__(self) -> None:
        # In no global registry: each addon instance (and each test) has its own.
        self.histogram = Histogram(
            "spendbrake_added_latency_seconds",
            "Time spendbrake's own hooks took per metered call (request: admission and hold; "
            "response, error: settlement), in this proxy process.",
            ["hook"],
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self._hooks = {hook: self.histogram.labels(hook) for hook in HOOKS}

    def observe(self, hook: str, seconds: float) -> None:
        self._hooks[hook].observe(seconds)


def _usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


class _LedgerCollector(Collector):
    """One scrape's worth of ledger facts, as metric families."""

    def __init__(self, facts: MetricFacts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self.facts
        agent_model = ["agent", "provider", "model"]
        spent = CounterMetricFamily(
            "spendbrake_spent_usd",
            "Actual cost of the day's settled calls, in USD.",
            labels=agent_model,
        )
        held = GaugeMetricFamily(
            "spendbrake_held_usd",
            "Worst-case cost held for calls in flight, in USD.",
            labels=agent_model,
        )
        calls = CounterMetricFamily(
            "spendbrake_calls", "Calls forwarded today.", labels=agent_model
        )
        tokens = CounterMetricFamily(
            "spendbrake_tokens",
            "Billed tokens today, by kind (the ledger's token columns).",
            labels=[*agent_model, "kind"],
        )
        held_by_agent: dict[str, int] = defaultdict(int)
        for use in facts.models:
            labels = [use.agent, use.provider, use.model]
            spent.add_metric(labels, _usd(use.spent_nanos))
            held.add_metric(labels, _usd(use.held_nanos))
            calls.add_metric(labels, use.calls)
            for kind in TOKEN_KINDS:
                tokens.add_metric([*labels, kind], use.tokens[kind])
            held_by_agent[use.agent] += use.held_nanos
        refusals = CounterMetricFamily(
            "spendbrake_refusals",
            "Calls refused today, by reason (the refusal code) and the model asked for.",
            labels=[*agent_model, "reason"],
        )
        for refused in facts.refusals:
            refusals.add_metric(
                [refused.agent, refused.provider, refused.model, refused.reason], refused.count
            )
        yield from (spent, held, calls, tokens, refusals)
        yield from self._per_agent(held_by_agent)

    def _per_agent(self, held_by_agent: dict[str, int]) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "spendbrake_limit_usd",
            "The agent's daily limit (run-time changes included), in USD.",
            labels=["agent"],
        )
        remaining = GaugeMetricFamily(
            "spendbrake_remaining_usd",
            "What the agent's day has left: limit - spent - held, in USD.",
            labels=["agent"],
        )
        month = GaugeMetricFamily(
            "spendbrake_month_spent_usd",
            "The agent's spend this calendar month (less what resets forgave), in USD.",
            labels=["agent"],
        )
        month_limit = GaugeMetricFamily(
            "spendbrake_month_limit_usd",
            "The agent's monthly limit, in USD (absent: none).",
            labels=["agent"],
        )
        burn = GaugeMetricFamily(
            "spendbrake_burn_usd_per_minute",
            "The agent's spend rate over the last minute or 15 minutes, in USD a minute.",
            labels=["agent", "window"],
        )
        state = GaugeMetricFamily(
            "spendbrake_agent_state",
            "1 for the agent's state (as 'spendbrake status' says it), 0 for the others.",
            labels=["agent", "state"],
        )
        for line in self.facts.lines:
            agent = line.agent
            limit.add_metric([agent], _usd(line.limit_today))
            held_now = held_by_agent.get(agent, 0)
            remaining.add_metric([agent], _usd(line.limit_today - line.spent_today - held_now))
            month.add_metric([agent], _usd(line.spent_month))
            if line.limit_month is not None:
                month_limit.add_metric([agent], _usd(line.limit_month))
            burn.add_metric([agent, "1m"], _usd(line.rate_1m))
            burn.add_metric([agent, "15m"], _usd(line.rate_15m))
            for name in STATES:
                state.add_metric([agent, name], 1 if line.state == name else 0)
        yield from (limit, remaining, month, month_limit, burn, state)


def exposition(facts: MetricFacts, latency: AddedLatency) -> bytes:
    """The text format Prometheus scrapes: the ledger's facts and this process's latency."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LedgerCollector(facts))
    registry.register(latency.histogram)
    return generate_latest(registry)
