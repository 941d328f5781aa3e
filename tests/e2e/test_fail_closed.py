"""Fail closed: a call whose cost cannot be bounded or recorded never reaches the provider."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    ledger_calls,
    raw_client,
    requests_of,
    run_client,
)

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.fc-host-mismatch]
daily_usd = 0.000001
"""

CHAT_URL = "https://api.openai.com/v1/chat/completions"
LEDGER_BUSY_TIMEOUT_S = 2.0


def assert_refusal(status: int, headers: Any, body: Any, code: str, expected_status: int) -> None:
    assert status == expected_status, body
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["code"] == code
    assert headers["x-spendbrake-reason"] == code
    if expected_status in (400, 402):  # DESIGN: never retried
        assert headers["x-should-retry"] == "false"


def test_unreadable_request_is_refused(proxy: Proxy, fake: FakeProvider, test_id: str) -> None:
    agent = "fc-unreadable"
    with raw_client(proxy, agent) as client:
        response = client.post(
            CHAT_URL,
            content=b"this is not json",
            headers={"content-type": "application/json", TEST_ID_HEADER: test_id},
        )
    assert_refusal(
        response.status_code, response.headers, response.json(), "unreadable_request", 400
    )
    assert response.json()["error"]["message"] == (
        "spendbrake: the request body is not JSON (or nests too deeply)"
    )
    assert requests_of(fake, test_id) == []
    rows = ledger_calls(proxy.ledger, agent)
    assert [(r["state"], r["reason"], r["held_nanos"]) for r in rows] == [
        ("refused", "unreadable_request", 0)
    ]


def test_unknown_model_is_refused(proxy: Proxy, fake: FakeProvider, test_id: str) -> None:
    agent = "fc-unknown-model"
    report = run_client(
        "sdk_chat.py",
        {"model": "gpt-nonexistent", "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}},
        proxy.client_env(agent),
    )
    call = report["calls"][0]
    assert call["ok"] is False, call
    assert call["error_class"] == "BadRequestError"
    assert_refusal(call["status"], call["headers"], call["error_body"], "unknown_model", 400)
    assert "'gpt-nonexistent'" in call["error_body"]["error"]["message"]
    assert requests_of(fake, test_id) == []
    rows = ledger_calls(proxy.ledger, agent)
    assert [(r["state"], r["reason"], r["requested_model"]) for r in rows] == [
        ("refused", "unknown_model", "gpt-nonexistent")
    ]


def test_locked_ledger_refuses_then_recovers(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "fc-locked"
    spec = {"max_tokens": 5, "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}}
    lock = sqlite3.connect(proxy.ledger, isolation_level=None, timeout=5)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        locked = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"][0]
        lock.execute("ROLLBACK")
    finally:
        lock.close()

    assert locked["ok"] is False, locked
    assert locked["error_class"] == "InternalServerError"
    assert_refusal(
        locked["status"], locked["headers"], locked["error_body"], "ledger_unavailable", 503
    )
    # The proxy waited out the ledger's busy timeout before it gave up.
    assert locked["elapsed"] >= LEDGER_BUSY_TIMEOUT_S - 0.1
    assert requests_of(fake, test_id) == []

    recovered = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"][0]
    assert recovered["ok"] is True
    assert len(requests_of(fake, test_id)) == 1
    rows = ledger_calls(proxy.ledger, agent)
    assert [(r["state"], r["outcome"]) for r in rows] == [("settled", "ok")]


def test_unmetered_route_is_refused(proxy: Proxy, fake: FakeProvider, test_id: str) -> None:
    report = run_client(
        "sdk_chat.py",
        {"endpoint": "images", "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}},
        proxy.client_env("fc-images"),
    )
    call = report["calls"][0]
    assert call["ok"] is False, call
    assert call["error_class"] == "PermissionDeniedError"
    assert_refusal(call["status"], call["headers"], call["error_body"], "unmetered_route", 403)
    assert "POST /v1/images/generations" in call["error_body"]["error"]["message"]
    assert requests_of(fake, test_id) == []


def test_unusable_agent_name_is_refused(proxy: Proxy, fake: FakeProvider, test_id: str) -> None:
    with raw_client(proxy, None) as client:
        response = client.post(
            CHAT_URL,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-spendbrake-agent": "bad agent!", TEST_ID_HEADER: test_id},
        )
    assert_refusal(
        response.status_code, response.headers, response.json(), "unauthenticated_agent", 407
    )
    assert requests_of(fake, test_id) == []


def test_llm_tunnel_with_a_foreign_host_header_is_not_forwarded_unmetered(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    """The connection goes to api.openai.com whatever the Host header says, so it is an
    OpenAI call: it must be metered (here: refused, the agent's budget is $0.000001)."""
    agent = "fc-host-mismatch"
    with raw_client(proxy, agent) as client:
        response = client.post(
            CHAT_URL,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"host": "localhost", TEST_ID_HEADER: test_id},
        )
    assert requests_of(fake, test_id) == []
    assert_refusal(
        response.status_code, response.headers, response.json(), "daily_budget_exceeded", 402
    )
