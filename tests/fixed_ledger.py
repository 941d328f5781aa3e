"""One ledger with known calls at known times, for the tests of top, report and export.

Written through the ledger's own hold, settle and refuse, as the proxy writes it; only the
clock is fixed, so every figure the views show can be worked out by hand (see the comments).
``write`` takes a SQLite path or a PostgreSQL location: the same calls go into either, so the
views must show the same on both.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from spendbrake import postgres_brakes, sqlite_brakes
from spendbrake.brakes import Brake
from spendbrake.config import Config, parse_config
from spendbrake.ledger import CallIntent, HoldGranted, Settlement, TokenCounts
from spendbrake.ledger_url import LedgerLocation, open_ledger
from spendbrake.money import parse_usd
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)
CONFIG_TOML = """
timezone = "UTC"

[agents.research-bot]
daily_usd = 0.05
monthly_usd = 20.00

[agents.summarizer]
burn_usd_per_min = 0.05

[agents.translator]

[agents.idle-bot]
"""
UNLIMITED = 10**15


def config() -> Config:
    import tomllib

    return parse_config(tomllib.loads(CONFIG_TOML))


def _at(clock: str, day: str = "2026-03-14") -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}+00:00")


def _call(agent: str, clock: str, *, day: str = "2026-03-14", **fields: object) -> CallIntent:
    base = CallIntent(
        agent=agent,
        session="",
        provider="openai",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        forwarded_model="gpt-4o",
        stream=False,
        day=day,
        started_at=_at(clock, day),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def _settled(
    ledger: SQLiteLedger | PostgresLedger,
    intent: CallIntent,
    usd: str,
    input_tokens: int,
    output_tokens: int,
) -> None:
    cost = parse_usd(usd)
    hold = ledger.hold(intent, cost * 2, UNLIMITED)  # a hold is the worst case: twice the bill
    assert isinstance(hold, HoldGranted), hold
    tokens = TokenCounts(input_tokens=input_tokens, output_tokens=output_tokens)
    ledger.settle(hold.call_id, Settlement(cost, tokens, "ok"), UNLIMITED)


def _suspend(ledger: SQLiteLedger | PostgresLedger, agent: str, brake: Brake, at: datetime) -> None:
    """What a burn brake does when it trips (the hold that tripped it is not part of this)."""
    if isinstance(ledger, PostgresLedger):
        with ledger.write_transaction() as conn:
            postgres_brakes.suspend(conn, agent, brake, at)
    else:
        with ledger.db.conn:
            sqlite_brakes.suspend(ledger.db.conn, agent, brake, at)


def write(location: LedgerLocation) -> None:
    ledger = open_ledger(location)
    try:
        # research-bot: $0.05 a day. Today $0.017 spent and $0.004 in flight, $0.01 of it in
        # the last minute and $0.015 in the last 15 (11:30 is older); yesterday $0.003.
        estimated = {"estimated_input_tokens": 100, "estimated_output_tokens": 50}
        _settled(ledger, _call("research-bot", "11:59:30", **estimated), "0.01", 80, 40)
        _settled(ledger, _call("research-bot", "11:50:00", **estimated), "0.005", 100, 10)
        _settled(ledger, _call("research-bot", "11:30:00"), "0.002", 30, 5)
        _settled(ledger, _call("research-bot", "18:00:00", day="2026-03-13"), "0.003", 40, 8)
        in_flight = ledger.hold(_call("research-bot", "11:59:55"), parse_usd("0.004"), UNLIMITED)
        assert isinstance(in_flight, HoldGranted)
        ledger.refuse(_call("research-bot", "11:59:58"), "daily_budget_exceeded")

        # summarizer: session run-42 on Anthropic, $0.10 in the last minute and $0.30 in the
        # last 15; its burn brake ($0.05 a minute) suspended it, and a call was refused since.
        claude = {
            "provider": "anthropic",
            "endpoint": "/v1/messages",
            "requested_model": "claude-haiku-4-5",
            "forwarded_model": "claude-haiku-4-5",
            "session": "run-42",
        }
        _settled(ledger, _call("summarizer", "11:59:10", **claude), "0.10", 2000, 500)
        _settled(ledger, _call("summarizer", "11:48:00", **claude), "0.20", 4000, 1000)
        brake = Brake("agent_suspended", "$0.10 spent in the last minute", suspends=True)
        _suspend(ledger, "summarizer", brake, _at("11:59:20"))
        ledger.refuse(_call("summarizer", "11:59:40", **claude), "agent_suspended")

        # translator: asked for gpt-4o, sent to gpt-4o-mini this morning.
        mini = {"forwarded_model": "gpt-4o-mini"}
        _settled(ledger, _call("translator", "09:00:00", **mini), "0.0012", 1000, 200)
        # idle-bot: configured, never called.
    finally:
        ledger.close()
