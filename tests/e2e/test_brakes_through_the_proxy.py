"""The brakes through a real proxy, as an agent built on the openai SDK meets them."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    ledger_calls,
    requests_of,
    run_client,
    spendbrake_cli,
)

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.looping-bot]
loop_repeats = 3

[agents.steady-bot]
calls_per_minute = 1
loop_repeats = 0

[agents.thrifty-bot]
monthly_tokens = 40
downgrade_below = 0.9
downgrade = { "gpt-4o" = "gpt-4o-mini" }
"""


def spec(test_id: str, **fields: Any) -> dict[str, Any]:
    return {"max_tokens": 5, "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}, **fields}


def test_a_loop_of_identical_requests_is_suspended_until_resumed(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    env = proxy.client_env("looping-bot")
    report = run_client("sdk_chat.py", spec(test_id, content="Same again", calls=5), env)
    statuses = [call["status"] for call in report["calls"]]
    assert statuses == [200, 200, 423]  # the client stops at its first error
    looped = report["calls"][2]
    assert looped["error_class"] == "APIStatusError"
    assert looped["error_body"]["error"]["code"] == "loop_detected"
    assert len(report["requests"]) == 3  # 423 is never retried
    assert len(requests_of(fake, test_id)) == 2

    different = run_client("sdk_chat.py", spec(test_id, content="Something else"), env)
    assert different["calls"][0]["error_body"]["error"]["code"] == "agent_suspended"

    spendbrake_cli("resume", "looping-bot", *proxy.cli_args())
    resumed = run_client("sdk_chat.py", spec(test_id, content="Same again"), env)
    assert resumed["calls"][0]["status"] == 200
    assert len(requests_of(fake, test_id)) == 3


def test_over_its_calls_per_minute_an_agent_waits_and_succeeds_without_an_error(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    # Another process of the fleet made this agent's one call of the minute 57 s ago.
    earlier = (datetime.now(UTC) - timedelta(seconds=57)).isoformat(timespec="microseconds")
    with sqlite3.connect(proxy.ledger) as db:
        db.execute(
            """
            INSERT INTO calls (started_at, day, agent, session, provider, endpoint,
                requested_model, forwarded_model, stream, held_nanos, actual_nanos, state, owner)
            VALUES (?, ?, 'steady-bot', '', 'openai', '/v1/chat/completions', 'gpt-4o-mini',
                'gpt-4o-mini', 0, 1, 1, 'settled', 'elsewhere:1:1')
            """,
            (earlier, earlier[:10]),
        )
    report = run_client("sdk_chat.py", spec(test_id, max_retries=2), proxy.client_env("steady-bot"))
    [call] = report["calls"]
    assert call["ok"] is True, call
    assert [attempt["status"] for attempt in report["requests"]] == [429, 200]
    assert len(requests_of(fake, test_id)) == 1
    rows = ledger_calls(proxy.ledger, "steady-bot")
    assert [(r["state"], r["reason"]) for r in rows[1:]] == [
        ("refused", "rate_limited"),
        ("settled", ""),
    ]


def test_a_downgrade_is_visible_in_the_response_and_the_ledger(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    env = proxy.client_env("thrifty-bot")
    first = run_client("sdk_chat.py", spec(test_id, model="gpt-4o", content="Plan {i}"), env)
    assert first["calls"][0]["ok"] is True
    assert "x-spendbrake-model" not in first["calls"][0]["headers"]
    second = run_client("sdk_chat.py", spec(test_id, model="gpt-4o", content="Next {i}"), env)
    [call] = second["calls"]
    assert call["ok"] is True, call
    assert call["headers"]["x-spendbrake-model"] == "gpt-4o-mini"
    assert call["model"].startswith("gpt-4o-mini")  # the provider answered as the cheaper model
    [_, sent] = requests_of(fake, test_id)
    assert json.loads(sent.body)["model"] == "gpt-4o-mini"
    rows = ledger_calls(proxy.ledger, "thrifty-bot")
    assert [(r["requested_model"], r["forwarded_model"]) for r in rows] == [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o", "gpt-4o-mini"),
    ]
