"""Daily budgets, end to end: a runaway agent is stopped, and limits change at run time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    background_client,
    ledger_calls,
    requests_of,
    run_client,
    settled_calls,
    spendbrake_cli,
    wait_for,
)

from spendbrake.ledger import TokenCounts
from spendbrake.money import format_usd_exact
from spendbrake.pricing import cost_nanos
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.runaway-bot]
daily_usd = 0.05

[agents.inflight-bot]
daily_usd = 0.006
"""

# Each call of the loop: gpt-4o ($2.50/M in, $10/M out), max_tokens 400, and the fake reports
# that all 400 were used. The prompt "Step NN: keep going." is 20 characters, which the fake
# bills as 7 + 20 // 4 = 12 tokens; spendbrake's estimate is 3 + 3 + 1 ("user") + 7 = 14.
#   actual = 12 * 2 500 + 400 * 10 000 = 4 030 000 nanos
#   hold   = 14 * 2 500 + 400 * 10 000 = 4 035 000 nanos
# After 12 calls $0.04836 is spent; 0.04836 + 0.004035 > 0.05, so the 13th call is refused.
RUNAWAY_MAX_TOKENS = 400
CALL_NANOS = 4_030_000
HOLD_NANOS = 4_035_000
EXPECTED_CALLS = 12
LIMIT_NANOS = 50_000_000


def test_runaway_loop_is_stopped_by_the_daily_budget(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    report = run_client(
        "sdk_chat.py",
        {
            "model": "gpt-4o",
            "content": "Step {i}: keep going.",
            "max_tokens": RUNAWAY_MAX_TOKENS,
            "headers": {
                "x-fake-usage-completion": str(RUNAWAY_MAX_TOKENS),
                TEST_ID_HEADER: test_id,
            },
            "calls": 100,  # the loop only ends when the SDK raises
        },
        proxy.client_env("runaway-bot", "loop-1"),
    )
    calls = report["calls"]
    succeeded, refused = calls[:-1], calls[-1]

    # The SDK (default max_retries=2) raised on the 402 and did not retry it.
    assert [c["ok"] for c in succeeded] == [True] * EXPECTED_CALLS
    assert refused["ok"] is False
    assert refused["error_class"] == "APIStatusError"
    assert refused["status"] == 402
    assert [a["status"] for a in report["requests"]] == [200] * EXPECTED_CALLS + [402]
    assert {a["retry_count"] for a in report["requests"]} == {"0"}

    error = refused["error_body"]["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == "daily_budget_exceeded"
    assert (
        "daily budget exceeded for agent 'runaway-bot': spent $0.04836 of $0.05 today"
        in error["message"]
    )
    assert "may cost up to $0.004035" in error["message"]
    assert "spendbrake limit set runaway-bot --daily 0.10" in error["message"]
    headers = refused["headers"]
    assert headers["x-should-retry"] == "false"
    assert headers["x-spendbrake-reason"] == "daily_budget_exceeded"
    assert headers["x-spendbrake-agent"] == "runaway-bot"
    # Seconds to the next midnight (UTC: the config sets no timezone), counted at the refusal,
    # a moment ago.
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    assert 0 <= int(headers["retry-after"]) - (midnight - now).total_seconds() <= 30

    # Every successful call was priced exactly as the SDK's usage says, and said so.
    expected = [
        cost_nanos(
            TokenCounts(
                input_tokens=c["usage"]["prompt_tokens"],
                output_tokens=c["usage"]["completion_tokens"],
            ),
            c["model"],
            provider_id="openai",
        )
        for c in succeeded
    ]
    assert expected == [CALL_NANOS] * EXPECTED_CALLS
    assert [c["headers"]["x-spendbrake-cost-usd"] for c in succeeded] == [
        format_usd_exact(CALL_NANOS)
    ] * EXPECTED_CALLS
    assert succeeded[-1]["headers"]["x-spendbrake-remaining-usd"] == format_usd_exact(
        LIMIT_NANOS - EXPECTED_CALLS * CALL_NANOS
    )

    rows = ledger_calls(proxy.ledger, "runaway-bot")
    settled = [r for r in rows if r["state"] == "settled"]
    refused_rows = [r for r in rows if r["state"] == "refused"]
    assert [r["state"] for r in rows] == ["settled"] * EXPECTED_CALLS + ["refused"]
    assert [r["actual_nanos"] for r in settled] == expected
    assert sum(r["actual_nanos"] for r in settled) == EXPECTED_CALLS * CALL_NANOS
    assert sum(r["actual_nanos"] for r in settled) <= LIMIT_NANOS
    assert all(r["held_nanos"] == HOLD_NANOS for r in rows)
    assert all(r["actual_nanos"] <= r["held_nanos"] for r in settled)  # the hold is a bound
    assert [(r["reason"], r["session"]) for r in refused_rows] == [
        ("daily_budget_exceeded", "loop-1")
    ]
    assert {(r["requested_model"], r["input_tokens"], r["output_tokens"]) for r in settled} == {
        ("gpt-4o", 12, RUNAWAY_MAX_TOKENS)
    }

    # The provider saw the successful calls and nothing else.
    assert len(requests_of(fake, test_id)) == EXPECTED_CALLS

    status = json.loads(spendbrake_cli("status", "--json", *proxy.cli_args()).stdout)
    (entry,) = [a for a in status["agents"] if a["agent"] == "runaway-bot"]
    assert entry == {
        "agent": "runaway-bot",
        "spent_usd": "0.048360000",
        "held_usd": "0.000000000",
        "limit_usd": "0.050000000",
        "remaining_usd": "0.001640000",
        "calls": EXPECTED_CALLS,
        "blocked": 1,
        "state": "exhausted",
    }


def test_a_call_in_flight_holds_its_worst_case(
    proxy: Proxy, fake: FakeProvider, test_id: str, tmp_path: Path
) -> None:
    """$0.006 a day fits one $0.004035 hold, not two: while the first call streams, the second
    is refused, though nothing has been spent yet."""
    agent = "inflight-bot"
    spec: dict[str, Any] = {
        "model": "gpt-4o",
        "content": "Step {i}: keep going.",
        "max_tokens": RUNAWAY_MAX_TOKENS,
        "max_retries": 0,
        "headers": {TEST_ID_HEADER: test_id},
    }
    slow = {**spec, "stream": True, "headers": {**spec["headers"], "x-fake-delay-ms": "1000"}}
    with background_client(
        "sdk_chat.py", slow, proxy.client_env(agent), log=tmp_path / "slow-client.log"
    ):
        wait_for(lambda: requests_of(fake, test_id), what="the first call to reach the provider")
        second = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"][0]

    assert second["status"] == 402
    assert second["error_body"]["error"]["code"] == "daily_budget_exceeded"
    assert (
        "spent $0.00 of $0.006 today (another $0.004035 is held by calls in flight)"
        in second["error_body"]["error"]["message"]
    )
    assert len(requests_of(fake, test_id)) == 1
    # The first call's client hung up mid-stream, before any usage: it is charged its prompt
    # (as estimated for the hold) and the text it had relayed, at gpt-4o's $2.50/M and $10/M.
    first, refused = settled_calls(proxy.ledger, agent, 2)
    assert (first["state"], first["outcome"]) == ("settled", "cut_short")
    assert first["actual_nanos"] == first["input_tokens"] * 2_500 + first["output_tokens"] * 10_000
    assert 0 < first["actual_nanos"] < HOLD_NANOS
    assert (refused["state"], refused["held_nanos"]) == ("refused", HOLD_NANOS)


def test_limit_set_applies_to_the_running_proxy(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "limit-bot"
    spec = {"max_tokens": 5, "headers": {TEST_ID_HEADER: test_id}}
    env = proxy.client_env(agent)

    spendbrake_cli("limit", "set", agent, "--daily", "0.000001", *proxy.cli_args())
    refused = run_client("sdk_chat.py", spec, env)["calls"][0]
    assert refused["status"] == 402
    assert refused["error_body"]["error"]["code"] == "daily_budget_exceeded"
    assert "spent $0.00 of $0.000001 today" in refused["error_body"]["error"]["message"]
    assert requests_of(fake, test_id) == []

    spendbrake_cli("limit", "set", agent, "--daily", "1.00", *proxy.cli_args())
    allowed = run_client("sdk_chat.py", spec, env)["calls"][0]
    assert allowed["ok"] is True
    # "Say hello." is 10 characters: the fake bills 7 + 2 prompt tokens and 5 completion tokens
    # on gpt-4o-mini: 9 * 150 + 5 * 600 = 4 350 nanos.
    assert allowed["headers"]["x-spendbrake-cost-usd"] == "0.000004350"
    assert allowed["headers"]["x-spendbrake-remaining-usd"] == "0.999995650"
    assert len(requests_of(fake, test_id)) == 1
    rows = ledger_calls(proxy.ledger, agent)
    assert [(r["state"], r["actual_nanos"]) for r in rows] == [("refused", None), ("settled", 4350)]
