"""Alerts end to end: ``spendbrake up``, the openai SDK, and webhook receivers on loopback.

Each threshold fires exactly once to every webhook; a receiver that refuses connections is
retried and then recorded as failed; one that never answers leaves its deliveries pending while
every call has long been answered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import TEST_ID_HEADER, Proxy, run_client, wait_for

from webhook_receiver import down_url, never_answering, receiving

pytestmark = pytest.mark.e2e

AGENT = "alert-bot"
TOKEN = "e2e-slack-token"


def deliveries(ledger: Path) -> list[tuple[int, str, str, int, str]]:
    """(webhook, threshold, state, attempts, last_error), oldest alert first."""
    conn = sqlite3.connect(ledger, timeout=5)
    try:
        return conn.execute(
            """
            SELECT d.webhook, a.threshold, d.state, d.attempts, d.last_error
            FROM alert_deliveries AS d JOIN alerts AS a ON a.id = d.alert_id
            WHERE a.agent = ? ORDER BY a.id, d.webhook
            """,
            (AGENT,),
        ).fetchall()
    finally:
        conn.close()


def calls(proxy: Proxy, test_id: str, count: int) -> list[int]:
    # "hi" with max_tokens 5 on gpt-4o-mini: held 4 200 nanos, billed 4 050.
    spec: dict[str, Any] = {
        "content": "hi",
        "max_tokens": 5,
        "calls": count,
        "headers": {TEST_ID_HEADER: test_id},
        "max_retries": 0,
    }
    report = run_client("sdk_chat.py", spec, proxy.client_env(AGENT))
    return [call["status"] for call in report["calls"]]


def test_each_threshold_fires_once_and_a_dead_receiver_slows_no_call(
    start_proxy: Callable[..., AbstractContextManager[Proxy]], test_id: str
) -> None:
    with receiving() as receiver, never_answering() as hanging:
        # $0.00002: the 3rd call passes 50 % ($0.00001215), the 4th 80 % ($0.0000162), and the
        # 5th does not fit ($0.0000162 + $0.0000042 held): the limit is reached.
        config = f"""
[agents.{AGENT}]
daily_usd = 0.00002

[alerts]
delivery_attempts = 3
retry_backoff_s = 0.05
webhooks = [
    {{ url = "{receiver.url}/json", format = "json" }},
    {{ url = "{receiver.url}/services/T0/B0/{TOKEN}", format = "slack" }},
    {{ url = "{down_url()}", format = "json" }},
    {{ url = "{hanging}", format = "json" }},
]
"""
        with start_proxy(config_toml=config) as proxy:
            assert calls(proxy, test_id, 6) == [200, 200, 200, 200, 402]

            def final() -> list[tuple[int, str, str, int, str]] | None:
                rows = deliveries(proxy.ledger)
                done = [row for row in rows if row[0] != 3 and row[2] != "pending"]
                return rows if len(done) == 9 else None

            rows = wait_for(final, timeout=30, what="the deliveries to be delivered or failed")
            # Every call was answered, and the receiver that never answers still holds all
            # three of its deliveries: they never stood in any call's way.
            assert [(t, state) for hook, t, state, *_ in rows if hook == 3] == [
                ("50%", "pending"),
                ("80%", "pending"),
                ("100%", "pending"),
            ]
            # More refused calls are no new alert: the limit was reached once.
            assert calls(proxy, test_id, 2) == [402]
            assert len(deliveries(proxy.ledger)) == 12
            output = proxy.output()

    by_hook = {hook: [(t, s, n) for h, t, s, n, _ in rows if h == hook] for hook in (0, 1, 2)}
    assert by_hook[0] == [
        ("50%", "delivered", 1),
        ("80%", "delivered", 1),
        ("100%", "delivered", 1),
    ]
    assert by_hook[1] == by_hook[0]
    assert by_hook[2] == [("50%", "failed", 3), ("80%", "failed", 3), ("100%", "failed", 3)]
    assert {error for hook, *_, error in rows if hook == 2} == {"Connection refused"}

    bodies = receiver.bodies
    assert len(bodies) == 6
    json_bodies = [b for p, b in zip(receiver.paths, bodies, strict=True) if p == "/json"]
    assert sorted((b["threshold"], b["spent_usd"]) for b in json_bodies) == [
        ("100%", "0.000016200"),
        ("50%", "0.000012150"),
        ("80%", "0.000016200"),
    ]
    assert {b["agent"] for b in json_bodies} == {AGENT}
    slack = [b["text"] for p, b in zip(receiver.paths, bodies, strict=True) if p != "/json"]
    assert len(slack) == 3
    assert all(text.startswith(f":money_with_wings: spendbrake: {AGENT} ") for text in slack)
    assert any(f"{AGENT} hit its daily limit (" in text for text in slack)

    assert output.count("spendbrake alert: ") == 3  # the log has each alert once too
    assert TOKEN not in output  # a webhook URL's secret part is never logged
