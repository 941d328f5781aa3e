"""Google Gemini through the proxy with the official google-genai SDK, at pinned prices."""

from __future__ import annotations

import json
import ssl
import time

import httpx2
import pytest
from e2e_support import TEST_ID_HEADER, Proxy, requests_of, run_client, settled_calls

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.gemini-tight]
daily_usd = 0.00001
"""

# 200 characters: the fake bills 7 + 200 // 4 = 57 prompt tokens and 9 candidate tokens.
# gemini-2.5-flash: $0.30/M input, $2.50/M output (thoughts included).
CONTENT = "word " * 40


def test_a_plain_call_is_settled_at_the_published_price(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    spec = {"content": CONTENT, "max_output_tokens": 100, "headers": {TEST_ID_HEADER: test_id}}
    report = run_client("sdk_gemini.py", spec, proxy.client_env("gemini-plain"))
    assert report["ok"] is True, report
    assert report["usage"]["prompt_token_count"] == 57
    [row] = settled_calls(proxy.ledger, "gemini-plain", 1)
    assert (row["provider"], row["requested_model"], row["outcome"]) == (
        "google",
        "gemini-2.5-flash",
        "ok",
    )
    assert row["endpoint"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert row["actual_nanos"] == 57 * 300 + 9 * 2_500
    assert row["held_nanos"] >= row["actual_nanos"]
    [request] = requests_of(fake, test_id)
    assert "x-spendbrake-agent" not in request.headers


def test_a_stream_bills_thoughts_as_output_from_the_last_snapshot(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    spec = {
        "content": CONTENT,
        "stream": True,
        "max_output_tokens": 100,
        "headers": {TEST_ID_HEADER: test_id, "x-fake-usage-thoughts": "40"},
    }
    report = run_client("sdk_gemini.py", spec, proxy.client_env("gemini-stream"))
    assert report["ok"] is True, report
    assert report["text"] == "The sky is blue."
    [row] = settled_calls(proxy.ledger, "gemini-stream", 1)
    assert (row["stream"], row["outcome"]) == (1, "ok")
    assert (row["output_tokens"], row["reasoning_tokens"]) == (49, 40)
    assert row["actual_nanos"] == 57 * 300 + 49 * 2_500


def test_a_refusal_surfaces_as_the_sdks_error_with_the_message_intact(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    spec = {"content": CONTENT, "max_output_tokens": 100, "headers": {TEST_ID_HEADER: test_id}}
    report = run_client("sdk_gemini.py", spec, proxy.client_env("gemini-tight"))
    assert report["ok"] is False
    assert (report["error_class"], report["code"], report["status"]) == (
        "ClientError",
        402,
        "RESOURCE_EXHAUSTED",
    )
    assert report["message"].startswith(
        "spendbrake: daily budget exceeded for agent 'gemini-tight': spent $0.00 of $0.00001"
    )
    assert requests_of(fake, test_id) == []


def test_a_json_array_stream_passes_unbuffered_and_is_metered(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    """Without alt=sse Gemini streams a JSON array; the client must get it element by element."""
    context = ssl.create_default_context(cafile=str(proxy.certs.ca_cert))
    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    body = {
        "contents": [{"parts": [{"text": CONTENT}]}],
        "generationConfig": {"maxOutputTokens": 50},
    }
    arrivals: list[float] = []
    with (
        httpx2.Client(
            proxy=proxy.proxy_url("gemini-array"), verify=context, trust_env=False
        ) as client,
        client.stream(
            "POST", url, json=body, headers={TEST_ID_HEADER: test_id, "x-fake-delay-ms": "300"}
        ) as response,
    ):
        content = b""
        for piece in response.iter_raw():
            arrivals.append(time.monotonic())
            content += piece
    assert response.status_code == 200
    assert len(json.loads(content)) == 3
    assert arrivals[-1] - arrivals[0] >= 0.5  # the elements came apart, not in one buffer
    [row] = settled_calls(proxy.ledger, "gemini-array", 1)
    assert (row["stream"], row["outcome"]) == (1, "ok")
    assert row["actual_nanos"] == 57 * 300 + 9 * 2_500
