"""Metering through the proxy: streamed and plain calls, who is billed, what the provider sees."""

from __future__ import annotations

import itertools
import json
import statistics

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    basic_auth,
    requests_of,
    run_client,
    settled_calls,
)

from spendbrake.money import format_usd_exact
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

DEFAULT_LIMIT_NANOS = 5_000_000_000  # no config: every agent has $5.00 a day

# "Stream a greeting please." is 25 characters: the fake bills 7 + 25 // 4 = 13 prompt tokens
# and min(max_tokens, 9) = 9 completion tokens. gpt-4o-mini: 13 * 150 + 9 * 600 = 7 350 nanos.
STREAM_CONTENT = "Stream a greeting please."
STREAM_USAGE = {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22}
STREAM_NANOS = 7_350
FAKE_TEXT = "Hello! How can I help?"
# The fake's events: role, six deltas, finish_reason "stop" (then usage, when asked for).
CHOICE_CHUNKS = 8

IDENTIFYING_HEADERS = {"proxy-authorization", "x-spendbrake-agent", "x-spendbrake-session"}


def stream_spec(test_id: str, *, include_usage: bool) -> dict[str, object]:
    return {
        "content": STREAM_CONTENT,
        "max_tokens": 20,
        "stream": True,
        "include_usage": include_usage,
        "headers": {TEST_ID_HEADER: test_id},
    }


def test_stream_without_include_usage_is_metered_and_the_usage_chunk_hidden(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "stream-plain"
    report = run_client(
        "sdk_chat.py",
        stream_spec(test_id, include_usage=False),
        proxy.client_env(agent, "sp-1"),
    )
    call = report["calls"][0]
    assert call["ok"] is True
    assert call["content"] == FAKE_TEXT
    # What the client asked for: no usage-only chunk (empty choices), no usage anywhere.
    assert [c["choices"] for c in call["chunks"]] == [1] * CHOICE_CHUNKS
    assert [c["usage"] for c in call["chunks"]] == [None] * CHOICE_CHUNKS

    # The proxy asked the provider for usage on the client's behalf, and changed nothing else.
    (forwarded,) = requests_of(fake, test_id)
    body = json.loads(forwarded.body)
    assert body["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in body.items() if k != "stream_options"} == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": STREAM_CONTENT}],
        "max_tokens": 20,
        "stream": True,
    }

    (row,) = settled_calls(proxy.ledger, agent, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (13, 9)
    assert row["actual_nanos"] == STREAM_NANOS
    assert (row["outcome"], row["stream"], row["session"]) == ("ok", 1, "sp-1")
    # A stream's cost is unknown when its headers leave: the hold is announced instead.
    headers = call["headers"]
    assert headers["x-spendbrake-agent"] == agent
    assert headers["x-spendbrake-held-usd"] == format_usd_exact(row["held_nanos"])
    assert headers["x-spendbrake-remaining-usd"] == format_usd_exact(
        DEFAULT_LIMIT_NANOS - row["held_nanos"]
    )
    assert "x-spendbrake-cost-usd" not in headers


def test_stream_with_include_usage_keeps_the_usage_chunk(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "stream-usage"
    report = run_client(
        "sdk_chat.py", stream_spec(test_id, include_usage=True), proxy.client_env(agent)
    )
    call = report["calls"][0]
    assert call["ok"] is True
    assert [c["choices"] for c in call["chunks"]] == [1] * CHOICE_CHUNKS + [0]
    usage = call["chunks"][-1]["usage"]
    assert {k: usage[k] for k in STREAM_USAGE} == STREAM_USAGE

    (forwarded,) = requests_of(fake, test_id)
    assert json.loads(forwarded.body)["stream_options"] == {"include_usage": True}
    (row,) = settled_calls(proxy.ledger, agent, 1)
    assert (row["input_tokens"], row["output_tokens"], row["actual_nanos"]) == (
        13,
        9,
        STREAM_NANOS,
    )


@pytest.mark.parametrize(
    ("proxy_user", "proxy_password", "headers", "expected_agent", "expected_session"),
    [
        pytest.param(
            "attr-auth",
            "sess-auth",
            {"X-Spendbrake-Agent": "attr-header", "X-Spendbrake-Session": "sess-header"},
            "attr-auth",
            "sess-auth",
            id="proxy-auth-wins",
        ),
        pytest.param(
            None,
            None,
            {"X-Spendbrake-Agent": "attr-header", "X-Spendbrake-Session": "sess-header"},
            "attr-header",
            "sess-header",
            id="header",
        ),
        pytest.param(
            None,
            None,
            {
                "Proxy-Authorization": basic_auth("attr-inner", "sess-inner"),
                "X-Spendbrake-Agent": "attr-header-2",
            },
            "attr-inner",
            "sess-inner",
            id="in-tunnel-proxy-authorization",
        ),
        pytest.param(None, None, {}, "default", "", id="default"),
        pytest.param(
            "",
            "sess-url",
            {"X-Spendbrake-Agent": "attr-header-3", "X-Spendbrake-Session": "sess-header"},
            "attr-header-3",
            "sess-url",
            id="session-in-proxy-url-without-user",
        ),
    ],
)
def test_agent_attribution_and_identifying_headers_stay_local(
    proxy: Proxy,
    fake: FakeProvider,
    test_id: str,
    proxy_user: str | None,
    proxy_password: str | None,
    headers: dict[str, str],
    expected_agent: str,
    expected_session: str,
) -> None:
    report = run_client(
        "sdk_chat.py",
        {"max_tokens": 5, "headers": {**headers, TEST_ID_HEADER: test_id}},
        proxy.client_env(proxy_user, proxy_password),
    )
    call = report["calls"][0]
    assert call["ok"] is True
    assert call["headers"]["x-spendbrake-agent"] == expected_agent

    (row,) = settled_calls(proxy.ledger, expected_agent, 1)
    assert (row["agent"], row["session"]) == (expected_agent, expected_session)
    assert call["headers"]["x-spendbrake-cost-usd"] == format_usd_exact(row["actual_nanos"])
    assert call["headers"]["x-spendbrake-remaining-usd"] == format_usd_exact(
        DEFAULT_LIMIT_NANOS - row["actual_nanos"]
    )

    (forwarded,) = requests_of(fake, test_id)
    assert IDENTIFYING_HEADERS.isdisjoint(forwarded.headers)
    assert forwarded.headers["authorization"] == "Bearer sk-e2e-test-key"  # the client's own


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-added", "usage-asked"])
def test_stream_reaches_the_client_event_by_event(
    proxy: Proxy, fake: FakeProvider, test_id: str, include_usage: bool
) -> None:
    """The fake sends an event every 200 ms; a buffering proxy would deliver them all at once."""
    agent = f"unbuffered-{'asked' if include_usage else 'added'}"
    spec = stream_spec(test_id, include_usage=include_usage)
    spec["headers"] = {TEST_ID_HEADER: test_id, "x-fake-delay-ms": "200"}
    call = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"][0]
    assert call["ok"] is True
    assert call["content"] == FAKE_TEXT

    times = [c["t"] for c in call["chunks"]]
    first_content = next(c["t"] for c in call["chunks"] if c["content"])
    assert times[-1] - first_content >= 1.0, times
    assert statistics.median(b - a for a, b in itertools.pairwise(times)) >= 0.1, times
    settled_calls(proxy.ledger, agent, 1)
