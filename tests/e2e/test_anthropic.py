"""Anthropic Messages through the proxy with the official anthropic SDK, at pinned prices."""

from __future__ import annotations

import pytest
from e2e_support import TEST_ID_HEADER, Proxy, requests_of, run_client, settled_calls

from spendbrake.money import format_usd_exact
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.claude-tight]
daily_usd = 0.00001
"""

# claude-haiku-4-5: $1/M input, $0.10/M cache reads, $1.25/M 5-minute cache writes, $5/M output.
MODEL = "claude-haiku-4-5-20251001"


def test_a_plain_call_is_settled_at_the_published_price(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    content = "word " * 800  # 4,000 characters: the fake bills 7 + 4000 // 4 = 1,007 tokens
    report = run_client(
        "sdk_messages.py",
        {"model": MODEL, "content": content, "headers": {TEST_ID_HEADER: test_id}},
        proxy.client_env("claude-plain"),
    )
    assert report["ok"] is True, report
    assert report["content"] == "Hello! How can I help?"
    assert (report["usage"]["input_tokens"], report["usage"]["output_tokens"]) == (1007, 9)
    [row] = settled_calls(proxy.ledger, "claude-plain", 1)
    assert (row["provider"], row["endpoint"], row["outcome"]) == ("anthropic", "/v1/messages", "ok")
    assert row["actual_nanos"] == 1007 * 1_000 + 9 * 5_000
    assert report["headers"]["x-spendbrake-cost-usd"] == format_usd_exact(1_052_000)
    assert row["held_nanos"] >= row["actual_nanos"]
    assert len(requests_of(fake, test_id)) == 1


def test_a_stream_with_cache_reads_and_writes_is_priced_per_kind(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    headers = {
        TEST_ID_HEADER: test_id,
        "x-fake-usage-prompt": "12",
        "x-fake-usage-cache-read": "2048",
        "x-fake-usage-cache-write": "100",
    }
    # The prompt is long enough to hold the 2,160 input tokens the fake reports for it.
    spec = {"model": MODEL, "stream": True, "headers": headers, "content": "word " * 1700}
    report = run_client("sdk_messages.py", spec, proxy.client_env("claude-stream"))
    assert report["ok"] is True, report
    assert report["content"] == "Hello! How can I help?"
    assert "x-spendbrake-held-usd" in report["headers"]
    [row] = settled_calls(proxy.ledger, "claude-stream", 1)
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"]) == (
        2160,
        2048,
        100,
    )
    assert row["actual_nanos"] == 12 * 1_000 + 2048 * 100 + 100 * 1_250 + 9 * 5_000
    assert row["held_nanos"] >= row["actual_nanos"]


def test_a_refusal_surfaces_as_the_sdks_error_with_the_message_intact(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    report = run_client(
        "sdk_messages.py",
        {"model": MODEL, "max_tokens": 100, "headers": {TEST_ID_HEADER: test_id}},
        proxy.client_env("claude-tight"),
    )
    assert report["ok"] is False
    assert (report["status"], report["error_class"]) == (402, "PaymentRequiredError")
    assert report["attempts"] == [402]  # x-should-retry: false is obeyed
    error = report["error_body"]["error"]
    assert error["type"] == "billing_error"
    assert error["message"].startswith(
        "spendbrake: daily budget exceeded for agent 'claude-tight': spent $0.00 of $0.00001"
    )
    assert report["headers"]["x-spendbrake-reason"] == "daily_budget_exceeded"
    assert requests_of(fake, test_id) == []


def test_a_stream_broken_by_an_upstream_error_is_charged_what_was_reported(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    headers = {TEST_ID_HEADER: test_id, "x-fake-stream-error": "overloaded"}
    report = run_client(
        "sdk_messages.py",
        {"model": MODEL, "stream": True, "headers": headers, "content": "Say hello."},
        proxy.client_env("claude-broken"),
    )
    assert report["ok"] is False
    [row] = settled_calls(proxy.ledger, "claude-broken", 1)
    # message_start reported the whole input ("Say hello." -> 7 + 10 // 4) and 1 output token;
    # the client had received "Hello" and "!" (6 bytes) before the error: at most 6 tokens.
    assert row["outcome"] == "cut_short"
    assert (row["input_tokens"], row["output_tokens"]) == (9, 6)
    assert row["actual_nanos"] == 9 * 1_000 + 6 * 5_000
