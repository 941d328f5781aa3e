"""Refusals by the windows besides the day, as an agent's SDK sees them: the code, status and
headers of DESIGN.md, and a message that names the window, the figures and the fix."""

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http

from ledger_hammer import intent
from spendbrake.mitm.state import flow_state
from test_mitm_enforcement import chat_body, chat_flow, completion, configured_proxy

# gpt-4o-mini: 150 nanos per input token, 600 per output token. chat_body() is 8 prompt tokens,
# so a call with max_tokens=10 holds 8*150 + 10*600 = 7,200 nanos and 18 tokens.
HOLD = 7_200

CONFIG = """
timezone = "Europe/Berlin"

[agents.bot]
daily_usd = 1.00
monthly_usd = 0.0000144
session_usd = 1.00

[agents.sessioned]
session_usd = 0.0000072

[agents.counted]
session_tokens = 30

[agents.teammate-a]
group = "team"

[agents.teammate-b]
group = "team"

[groups.team]
daily_usd = 0.0000072
"""


def error_of(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    body: dict[str, Any] = json.loads(flow.response.content or b"")["error"]
    return body


async def forwarded_and_settled(proxy: Any, flow: http.HTTPFlow) -> None:
    await proxy.send(flow)
    assert flow.response is None, error_of(flow)
    flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    proxy.enforcement.responseheaders(flow)
    await proxy.enforcement.response(flow)


async def test_the_month_refuses_with_402_until_the_next_local_month(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        for _ in range(2):
            await proxy.send(chat_flow())  # two holds of 7,200: the month's 14,400
        flow = await proxy.send(chat_flow())
    assert flow.response is not None
    assert flow.response.status_code == 402
    assert flow.response.headers["x-spendbrake-reason"] == "monthly_budget_exceeded"
    assert flow.response.headers["x-should-retry"] == "false"
    assert int(flow.response.headers["retry-after"]) > 0
    error = error_of(flow)
    assert error["code"] == "monthly_budget_exceeded"
    assert "monthly budget exceeded for agent 'bot'" in error["message"]
    assert "(another $0.0000144 is held by calls in flight)" in error["message"]
    assert "-01 00:00 CE" in error["message"]  # the first of a month, Berlin time
    assert "spendbrake limit set bot --monthly 0.01" in error["message"]


async def test_a_sessions_dollars_stop_that_session_only(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        await forwarded_and_settled(proxy, chat_flow(credentials=("sessioned", "run-1")))
        stopped = await proxy.send(chat_flow(credentials=("sessioned", "run-1")))
        other = await proxy.send(chat_flow(credentials=("sessioned", "run-2")))
    assert stopped.response is not None
    assert stopped.response.status_code == 402
    assert "retry-after" not in stopped.response.headers  # a session does not reset
    error = error_of(stopped)
    assert error["code"] == "session_budget_exceeded"
    assert "agent 'sessioned', session 'run-1'" in error["message"]
    assert "spendbrake limit set sessioned --session-usd" in error["message"]
    assert other.response is None  # the same agent's other session goes on


async def test_the_session_token_breaker_counts_holds_in_flight(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        first = await proxy.send(chat_flow(credentials=("counted", "s")))  # 18 tokens held
        second = await proxy.send(chat_flow(credentials=("counted", "s")))  # 36 > 30
        rows = proxy.rows()
    assert first.response is None
    assert second.response is not None
    assert second.response.status_code == 402
    error = error_of(second)
    assert error["code"] == "session_tokens_exceeded"
    assert "0 of 30 tokens used (another 18 held by calls in flight)" in error["message"]
    assert "may use up to 18" in error["message"]
    assert [r["reason"] for r in rows] == ["", "session_tokens_exceeded"]


async def test_agents_of_a_group_share_its_daily_budget(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        await proxy.send(chat_flow(credentials=("teammate-a", "")))
        flow = await proxy.send(chat_flow(credentials=("teammate-b", "")))
    error = error_of(flow)
    assert error["code"] == "daily_budget_exceeded"
    assert "group 'team' (agent 'teammate-b' is one of its agents)" in error["message"]
    assert "spendbrake limit set --group team --daily 0.01" in error["message"]


@pytest.mark.parametrize("window", ["monthly", "session_usd"])
async def test_a_run_time_limit_lifts_a_window_without_a_restart(
    tmp_path: Path, window: str
) -> None:
    agent = "bot" if window == "monthly" else "sessioned"
    with configured_proxy(tmp_path, CONFIG) as proxy:
        for _ in range(3):
            await proxy.send(chat_flow(chat_body(), credentials=(agent, "s")))
        assert proxy.enforcement.worker is not None
        proxy.enforcement.worker.run_blocking(
            lambda ledger: ledger.set_limit(window, agent, 1_000_000_000)
        )
        flow = await proxy.send(chat_flow(credentials=(agent, "s")))
    assert flow.response is None
    state = flow_state(flow)
    assert state is not None
    assert state.call is not None


async def test_block_all_refuses_every_metered_call_and_records_it(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        proxy.tctx.options.spendbrake_block_all = True
        flow = await proxy.send(chat_flow())
        rows = proxy.rows()
    assert flow.response is not None
    assert flow.response.status_code == 402
    assert flow.response.headers["x-spendbrake-reason"] == "llm_calls_blocked"
    assert flow.response.headers["x-should-retry"] == "false"
    assert "this run allows no LLM calls (agent 'bot')" in error_of(flow)["message"]
    assert [(r["state"], r["reason"]) for r in rows] == [("refused", "llm_calls_blocked")]


WEB_SEARCH = [{"type": "web_search_preview"}]


async def test_a_server_side_tool_is_refused_unless_the_operator_allows_it(
    tmp_path: Path,
) -> None:
    path = "/v1/responses"
    body = {"model": "gpt-4.1-mini", "input": "hi", "max_output_tokens": 10, "tools": WEB_SEARCH}
    with configured_proxy(tmp_path, CONFIG) as proxy:
        refused = await proxy.send(chat_flow(body, path=path, credentials=("researcher", "")))
        rows = proxy.rows()
    assert refused.response is not None
    assert refused.response.status_code == 403
    assert refused.response.headers["x-should-retry"] == "false"
    error = error_of(refused)
    assert error["code"] == "unmetered_tool"
    assert "server-side tools of openai (web_search)" in error["message"]
    assert 'allow_server_tools = ["web_search"]' in error["message"]
    assert [(r["state"], r["reason"]) for r in rows] == [("refused", "unmetered_tool")]

    allowing = CONFIG.replace('timezone = "Europe/Berlin"', 'allow_server_tools = ["web_search"]')
    (tmp_path / "allowed").mkdir()
    with configured_proxy(tmp_path / "allowed", allowing) as proxy:
        allowed = await proxy.send(chat_flow(body, path=path, credentials=("researcher", "")))
    assert allowed.response is None  # held and forwarded


BRAKES_CONFIG = """
[agents.looper]
loop_repeats = 3

[agents.hasty]
calls_per_minute = 1
"""


async def test_a_loop_is_answered_423_and_the_agent_stays_suspended(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, BRAKES_CONFIG) as proxy:
        for _ in range(2):
            await forwarded_and_settled(proxy, chat_flow(credentials=("looper", "")))
        looped = await proxy.send(chat_flow(credentials=("looper", "")))
        other = await proxy.send(chat_flow(chat_body(max_tokens=5), credentials=("looper", "")))
    assert looped.response is not None
    assert looped.response.status_code == 423
    assert looped.response.headers["x-should-retry"] == "false"
    assert looped.response.headers["x-spendbrake-reason"] == "loop_detected"
    assert "spendbrake resume looper" in error_of(looped)["message"]
    assert other.response is not None
    assert other.response.status_code == 423
    assert error_of(other)["code"] == "agent_suspended"
    assert "human intervention required" in error_of(other)["message"]


async def test_over_the_calls_per_minute_the_agent_is_told_when_to_retry(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, BRAKES_CONFIG) as proxy:
        await forwarded_and_settled(proxy, chat_flow(credentials=("hasty", "")))
        limited = await proxy.send(chat_flow(chat_body(max_tokens=5), credentials=("hasty", "")))
    assert limited.response is not None
    assert limited.response.status_code == 429
    headers = limited.response.headers
    assert "x-should-retry" not in headers  # the SDKs wait and retry by themselves
    assert 55 <= int(headers["retry-after"]) <= 60
    assert int(headers["retry-after-ms"]) == int(headers["retry-after"]) * 1000
    assert error_of(limited)["code"] == "rate_limited"
    assert "1 call in the last minute, the limit is 1" in error_of(limited)["message"]


async def test_in_throttle_mode_a_call_over_the_rate_waits_then_goes(tmp_path: Path) -> None:
    config = "[agents.patient]\ncalls_per_minute = 1\nthrottle = true\n"
    with configured_proxy(tmp_path, config) as proxy:
        # Its one call of the minute was made 58.5 s ago (by another proxy of the fleet).
        earlier = datetime.now(UTC) - timedelta(seconds=58.5)
        assert proxy.enforcement.worker is not None
        proxy.enforcement.worker.run_blocking(
            lambda ledger: ledger.hold(
                replace(intent("patient"), started_at=earlier, day=earlier.date().isoformat()),
                1,
                10**12,
            )
        )
        started = time.monotonic()
        flow = await proxy.send(chat_flow(credentials=("patient", "")))
        waited = time.monotonic() - started
        rows = proxy.rows()
        events = proxy.enforcement.worker.run_blocking(lambda ledger: ledger.events("patient"))
    assert flow.response is None  # forwarded, not refused
    assert 1.0 <= waited < 5
    assert [r["state"] for r in rows] == ["held", "held"]  # no refusal recorded
    assert [e.kind for e in events] == ["throttled"]
