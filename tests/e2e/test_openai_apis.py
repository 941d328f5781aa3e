"""OpenAI's Responses and Embeddings APIs through the proxy, with the openai SDK."""

from __future__ import annotations

import pytest
from e2e_support import TEST_ID_HEADER, Proxy, requests_of, run_client, settled_calls

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.responses-chain]
daily_usd = 0.01
"""

# 200 characters: the fake bills 7 + 200 // 4 = 57 input tokens and 9 output tokens.
# gpt-4.1: $2/M input, $8/M output -> 57 * 2 000 + 9 * 8 000 = 186 000 nanos.
INPUT = "word " * 40
RESPONSE_NANOS = 186_000


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_response_is_settled_at_the_published_price(
    proxy: Proxy, fake: FakeProvider, test_id: str, stream: bool
) -> None:
    agent = f"responses-{'stream' if stream else 'plain'}"
    spec = {"api": "responses", "model": "gpt-4.1", "input": INPUT, "stream": stream}
    report = run_client(
        "sdk_openai_apis.py",
        {**spec, "headers": {TEST_ID_HEADER: test_id}},
        proxy.client_env(agent),
    )
    assert report["ok"] is True, report
    assert report["text"] == "Hi there!"
    assert (report["usage"]["input_tokens"], report["usage"]["output_tokens"]) == (57, 9)
    if stream:
        assert report["events"][-1] == "response.completed"
    [row] = settled_calls(proxy.ledger, agent, 1)
    assert (row["endpoint"], row["stream"], row["outcome"]) == ("/v1/responses", int(stream), "ok")
    assert row["actual_nanos"] == RESPONSE_NANOS
    assert row["held_nanos"] >= row["actual_nanos"]
    assert len(requests_of(fake, test_id)) == 1


def test_a_continuation_is_held_for_the_history_the_proxy_has_seen(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    env = proxy.client_env("responses-chain")  # $0.01 a day
    base = {
        "api": "responses",
        "model": "gpt-4.1",
        "max_output_tokens": 20,
        "headers": {TEST_ID_HEADER: test_id},
    }
    first = run_client("sdk_openai_apis.py", {**base, "input": INPUT}, env)
    assert first["ok"] is True, first
    follow_up = run_client(
        "sdk_openai_apis.py", {**base, "input": "and?", "previous_response_id": first["id"]}, env
    )
    assert follow_up["ok"] is True, follow_up
    # History the proxy never saw is held as a full context window: $2.10 on gpt-4.1.
    unseen = run_client(
        "sdk_openai_apis.py", {**base, "input": "and?", "previous_response_id": "resp_unseen"}, env
    )
    assert unseen["ok"] is False
    assert unseen["status"] == 402
    assert len(requests_of(fake, test_id)) == 2


def test_embeddings_are_settled_at_their_input_price(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    spec = {
        "api": "embeddings",
        "model": "text-embedding-3-small",
        "input": ["hello world", "bye"],  # the fake bills (1 + 11 // 4) + (1 + 3 // 4) = 4
        "headers": {TEST_ID_HEADER: test_id},
    }
    report = run_client("sdk_openai_apis.py", spec, proxy.client_env("embedder"))
    assert report["ok"] is True, report
    assert (report["vectors"], report["usage"]["prompt_tokens"]) == (2, 4)
    [row] = settled_calls(proxy.ledger, "embedder", 1)
    assert (row["endpoint"], row["actual_nanos"]) == ("/v1/embeddings", 4 * 20)  # $0.02/M
    assert report["headers"]["x-spendbrake-cost-usd"] == "0.000000080"
