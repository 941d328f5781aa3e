"""OpenAI's Responses, Embeddings and legacy Completions APIs through the proxy, with the
openai SDK."""

from __future__ import annotations

import json

import pytest
from e2e_support import TEST_ID_HEADER, Proxy, requests_of, run_client, settled_calls

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

SPENDBRAKE_CONFIG = """
[agents.responses-chain]
daily_usd = 0.01

[agents.completions-tight]
daily_usd = 0.00001
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


# Legacy Completions on gpt-3.5-turbo-instruct: $1.50/M input, $2/M output (genai-prices 0.2.3),
# so 1 500 nanos an input token and 2 000 an output token; the fake answers with the snapshot
# gpt-3.5-turbo-instruct:20230824-v2, priced the same.
INSTRUCT = "gpt-3.5-turbo-instruct"
# 38 characters: the fake bills 7 + 38 // 4 = 16 input tokens and min(16, 9) = 9 output tokens
# (max_tokens unset: OpenAI's default is 16) -> 16 * 1 500 + 9 * 2 000 = 42 000 nanos.
PROMPT = "Write a tagline for an ice cream shop."
COMPLETION_NANOS = 42_000
COMPLETION_TEXT = "\n\nScoops of happiness."


@pytest.mark.parametrize(
    ("stream", "include_usage"),
    [(False, False), (True, False), (True, True)],
    ids=["plain", "streamed", "streamed-asking-usage"],
)
def test_a_completion_is_settled_at_the_published_price(
    proxy: Proxy, fake: FakeProvider, test_id: str, stream: bool, include_usage: bool
) -> None:
    agent = f"completions-{'stream' if stream else 'plain'}{'-usage' if include_usage else ''}"
    spec = {
        "api": "completions",
        "model": INSTRUCT,
        "prompt": PROMPT,
        "stream": stream,
        "include_usage": include_usage,
        "headers": {TEST_ID_HEADER: test_id},
    }
    report = run_client("sdk_openai_apis.py", spec, proxy.client_env(agent))
    assert report["ok"] is True, report
    assert report["attempts"] == [200]
    assert report["texts"] == [COMPLETION_TEXT]
    assert report["model"] == "gpt-3.5-turbo-instruct:20230824-v2"
    [row] = settled_calls(proxy.ledger, agent, 1)
    assert (row["endpoint"], row["stream"]) == ("/v1/completions", int(stream))
    assert (row["outcome"], row["input_tokens"], row["output_tokens"]) == ("ok", 16, 9)
    assert row["actual_nanos"] == COMPLETION_NANOS
    assert row["held_nanos"] >= row["actual_nanos"]
    [sent] = requests_of(fake, test_id)
    assert sent.path == "/v1/completions"
    if not stream:
        assert report["usage"] == {"prompt_tokens": 16, "completion_tokens": 9, "total_tokens": 25}
        assert report["headers"]["x-spendbrake-cost-usd"] == "0.000042000"
        return
    # The proxy asked the fake for the stream's usage either way...
    assert json.loads(sent.body)["stream_options"] == {"include_usage": True}
    chunks = report["chunks"]
    if include_usage:
        # ...and a client that asked for it gets it, once, at the end.
        assert chunks[-1] == {"choices": 0, "usage": True}
        assert not any(chunk["usage"] for chunk in chunks[:-1])
        assert report["usage"]["total_tokens"] == 25
    else:
        # ...but a client that did not never sees it: every chunk has its choice, none usage.
        assert chunks == [{"choices": 1, "usage": False}] * len(chunks)
        assert report["usage"] is None


def test_a_batch_of_prompts_is_held_for_every_answer(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    # Two prompts (38 + 29 characters), two answers to each: the fake bills 7 + 67 // 4 = 23
    # input tokens and 2 * 2 * 9 = 36 output tokens -> 23 * 1 500 + 36 * 2 000 = 106 500 nanos.
    # The hold must cover all four answers of up to 16 tokens, not one.
    spec = {
        "api": "completions",
        "model": INSTRUCT,
        "prompt": [PROMPT, "Write a tagline for a bakery."],
        "n": 2,
        "headers": {TEST_ID_HEADER: test_id},
    }
    report = run_client("sdk_openai_apis.py", spec, proxy.client_env("completions-batch"))
    assert report["ok"] is True, report
    assert report["texts"] == [COMPLETION_TEXT] * 4
    [row] = settled_calls(proxy.ledger, "completions-batch", 1)
    assert (row["input_tokens"], row["output_tokens"]) == (23, 36)
    assert row["actual_nanos"] == 106_500
    assert row["held_nanos"] >= row["actual_nanos"]
    assert len(requests_of(fake, test_id)) == 1


def test_a_refused_completion_surfaces_as_the_sdks_402_with_the_message_intact(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "completions-tight"  # $0.00001 a day, less than any call's hold
    spec = {
        "api": "completions",
        "model": INSTRUCT,
        "prompt": PROMPT,
        "headers": {TEST_ID_HEADER: test_id},
        "max_retries": 2,  # the SDK's default: it must leave a 402 alone
    }
    report = run_client("sdk_openai_apis.py", spec, proxy.client_env(agent))
    assert report["ok"] is False
    assert (report["error_class"], report["status"]) == ("APIStatusError", 402)
    assert report["attempts"] == [402]
    error = report["error_body"]["error"]
    assert (error["code"], error["type"]) == ("daily_budget_exceeded", "insufficient_quota")
    # Held for max_tokens' default of 16: 10 prompt tokens * 1 500 + 16 * 2 000 = 47 000 nanos.
    assert error["message"].startswith(
        f"spendbrake: daily budget exceeded for agent '{agent}': spent $0.00 of $0.00001 today, "
        "and this call may cost up to $0.000047. The limit resets at "
    )
    assert error["message"].endswith(f"To raise it: spendbrake limit set {agent} --daily 0.01")
    assert error["message"] in report["message"]  # str(error) carries it whole
    assert requests_of(fake, test_id) == []
