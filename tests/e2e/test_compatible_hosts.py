"""The OpenAI-compatible hosts and Azure OpenAI through the proxy, with the official openai SDK.

Each host is called by its real name (``openai.OpenAI(base_url="https://api.mistral.ai/v1")``,
``openai.AzureOpenAI(azure_endpoint=...)``), routed only by HTTPS_PROXY; the fake answers in
that host's own dialect (reference §3.6). One client process makes every metered call of the
module (an SDK import costs about a second), each call for an agent of its own; the tests then
read what each call returned, what the fake received and what the ledger settled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from e2e_support import TEST_ID_HEADER, Proxy, requests_of, run_client, settled_calls

from spendbrake.money import format_usd_exact
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import AZURE_TEST_HOST

pytestmark = pytest.mark.e2e

AZURE_DEPLOYMENT = "chat-prod"
AZURE_API_VERSION = "2024-10-21"
SPENDBRAKE_CONFIG = f"""
[prices."{AZURE_DEPLOYMENT}"]
price_as = "gpt-4o"

[agents.tight-compatible]
daily_usd = 0.00001

[agents.tight-azure]
daily_usd = 0.00001
"""

# 4,000 characters: the fake bills 7 + 4000 // 4 = 1,007 prompt tokens and min(max_tokens, 9)
# = 9 completion tokens, plus what a case's headers add (cache hits, reasoning). The proxy counts
# 2,001 tokens in it, and holds MAX_TOKENS of output: every hold is an upper bound.
CONTENT = "a " * 2000
MAX_TOKENS = 300
FAKE_TEXT = "Hello! How can I help you today?"
FAKE_STREAM_TEXT = "Hello! How can I help?"


@dataclass(frozen=True)
class Host:
    """One host as an agent calls it, and what the published price list makes of the call."""

    provider: str  # spendbrake's provider id (the ledger's `provider`)
    sdk: dict[str, str]  # how the openai SDK is pointed at the host
    endpoint: str  # the path the SDK posts to
    model: str  # what the agent asks for (Azure: the deployment)
    nanos: int  # the call's price: genai-prices 0.2.3, or the operator's [prices]
    tokens: tuple[int, int, int] = (1007, 0, 9)  # input (cached included), cached, output
    headers: dict[str, str] = field(default_factory=dict)  # the fake's controls
    asks_for_stream_usage: bool = True  # the proxy adds stream_options.include_usage


# Prices per million tokens (input / cached input / output), from `spendbrake price MODEL
# --provider ID --input 1007 --output 9` with genai-prices 0.2.3; $1/M is 1,000 nanos a token.
HOSTS = [
    # $0.15 / $0.60: 1007 * 150 + 9 * 600. Usage comes in Mistral's last chunk unasked, so the
    # proxy adds nothing to its streams.
    Host(
        "mistral",
        {"base_url": "https://api.mistral.ai/v1"},
        "/v1/chat/completions",
        "mistral-small-latest",
        156_450,
        asks_for_stream_usage=False,
    ),
    # $0.59 / $0.79: 1007 * 590 + 9 * 790.
    Host(
        "groq",
        {"base_url": "https://api.groq.com/openai/v1"},
        "/openai/v1/chat/completions",
        "llama-3.3-70b-versatile",
        601_240,
    ),
    # $0.27 / $0.13 / $0.95, 512 prompt tokens from DeepSeek's cache (prompt_cache_hit_tokens):
    # 495 * 270 + 512 * 130 + 9 * 950. (deepseek-chat's price depends on the hour of the call in
    # genai-prices; this model's does not.)
    Host(
        "deepseek",
        {"base_url": "https://api.deepseek.com"},
        "/chat/completions",
        "deepseek-v3.1-terminus",
        208_760,
        tokens=(1007, 512, 9),
        headers={"x-fake-usage-cache-read": "512"},
    ),
    # $0.30 / $0.50, and 200 reasoning tokens that xAI leaves out of completion_tokens but
    # bills as output: 1007 * 300 + (9 + 200) * 500.
    Host(
        "x-ai",
        {"base_url": "https://api.x.ai/v1"},
        "/v1/chat/completions",
        "grok-3-mini",
        406_600,
        tokens=(1007, 0, 209),
        headers={"x-fake-usage-reasoning": "200"},
    ),
    # $0.15 / $0.60 (OpenRouter's own listing), when the response states no usage.cost:
    # 1007 * 150 + 9 * 600.
    Host(
        "openrouter",
        {"base_url": "https://openrouter.ai/api/v1"},
        "/api/v1/chat/completions",
        "openai/gpt-4o-mini",
        156_450,
    ),
    # $0.88 / $0.88: (1007 + 9) * 880.
    Host(
        "together",
        {"base_url": "https://api.together.xyz/v1"},
        "/v1/chat/completions",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        894_080,
    ),
    # $0.20 / $0.20: (1007 + 9) * 200.
    Host(
        "fireworks",
        {"base_url": "https://api.fireworks.ai/inference/v1"},
        "/inference/v1/chat/completions",
        "accounts/fireworks/models/llama-v3p1-8b-instruct",
        203_200,
    ),
    # $1 / $1 and $12 per thousand requests: (1007 + 9) * 1000 + 12_000_000. (`spendbrake
    # price` prices input and output apart, each with the request fee, so its "together" line
    # says $0.025016; a call pays the fee once.) Perplexity's stream is left as the agent wrote
    # it: it reports usage unasked.
    Host(
        "perplexity",
        {"base_url": "https://api.perplexity.ai"},
        "/chat/completions",
        "sonar",
        13_016_000,
        asks_for_stream_usage=False,
    ),
    # The deployment is priced as the configuration says: gpt-4o, $2.50 / $10.
    # 1007 * 2500 + 9 * 10_000.
    Host(
        "azure",
        {"azure_endpoint": f"https://{AZURE_TEST_HOST}", "api_version": AZURE_API_VERSION},
        f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions",
        AZURE_DEPLOYMENT,
        2_607_500,
    ),
]
HOSTS_BY_PROVIDER = {host.provider: host for host in HOSTS}


@dataclass(frozen=True)
class StatedCost:
    """A call to a host that states what the call cost (``headers`` make the fake say it)."""

    provider: str
    headers: dict[str, str]
    nanos: int  # what the call is charged: the host's figure, not the price list's


# Every figure differs from what the price list makes of the same call (HOSTS above).
STATED_COSTS = {
    # OpenRouter's usage.cost, in dollars.
    "openrouter": StatedCost("openrouter", {"x-fake-usage-cost": "0.000123456"}, 123_456),
    # On the caller's own provider key (is_byok), usage.cost is only OpenRouter's fee; the
    # provider bills cost_details.upstream_inference_cost to the key: $0.00001 + $0.0002.
    "openrouter-own-key": StatedCost(
        "openrouter",
        {"x-fake-usage-cost": "0.00001", "x-fake-usage-upstream-cost": "0.0002"},
        210_000,
    ),
    # xAI's cost_in_usd_ticks, 1e10 to the dollar: $0.00042 arrives as 4,200,000 ticks.
    "x-ai": StatedCost("x-ai", {"x-fake-usage-cost": "0.00042"}, 420_000),
}
STREAMS = [False, True]


def agent_of(provider: str, stream: bool, kind: str = "priced") -> str:
    return f"{kind}-{provider}-{'streamed' if stream else 'plain'}"


def call_spec(host: Host, agent: str, stream: bool, **headers: str) -> dict[str, Any]:
    return {
        "name": agent,
        **host.sdk,
        "model": host.model,
        "content": CONTENT,
        "max_tokens": MAX_TOKENS,
        "stream": stream,
        "headers": {
            "X-Spendbrake-Agent": agent,
            TEST_ID_HEADER: f"compatible-{agent}",
            **host.headers,
            **headers,
        },
    }


@pytest.fixture(scope="module")
def answered(proxy: Proxy) -> dict[str, dict[str, Any]]:
    """Every metered call of this module, made by one client process; results by agent."""
    calls = [
        call_spec(host, agent_of(host.provider, stream), stream)
        for host in HOSTS
        for stream in STREAMS
    ]
    calls += [
        call_spec(
            HOSTS_BY_PROVIDER[stated.provider],
            agent_of(case, stream, "stated"),
            stream,
            **stated.headers,
        )
        for case, stated in STATED_COSTS.items()
        for stream in STREAMS
    ]
    # The agent is named by a header here, so the proxy URL carries no credentials.
    report = run_client("sdk_compatible.py", {"calls": calls}, proxy.client_env(None))
    results: dict[str, dict[str, Any]] = report["calls"]
    return results


@pytest.mark.parametrize("stream", STREAMS, ids=["plain", "streamed"])
@pytest.mark.parametrize("host", HOSTS, ids=[host.provider for host in HOSTS])
def test_a_call_is_settled_at_the_published_price(
    proxy: Proxy, answered: dict[str, dict[str, Any]], host: Host, stream: bool
) -> None:
    agent = agent_of(host.provider, stream)
    result = answered[agent]
    assert result["ok"] is True, result
    assert result["content"] == (FAKE_STREAM_TEXT if stream else FAKE_TEXT)
    [row] = settled_calls(proxy.ledger, agent, 1)
    assert (row["provider"], row["endpoint"], row["requested_model"]) == (
        host.provider,
        host.endpoint,
        host.model,
    )
    assert (row["stream"], row["outcome"]) == (int(stream), "ok")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == host.tokens
    assert row["actual_nanos"] == host.nanos
    assert row["held_nanos"] >= row["actual_nanos"]
    if not stream:
        assert result["headers"]["x-spendbrake-cost-usd"] == format_usd_exact(host.nanos)


@pytest.mark.parametrize("host", HOSTS, ids=[host.provider for host in HOSTS])
def test_a_stream_asks_the_host_for_usage_only_where_the_host_needs_asking(
    fake: FakeProvider, answered: dict[str, dict[str, Any]], host: Host
) -> None:
    agent = agent_of(host.provider, stream=True)
    assert answered[agent]["ok"] is True, answered[agent]
    [forwarded] = requests_of(fake, f"compatible-{agent}")
    assert forwarded.path.split("?")[0] == host.endpoint
    body = json.loads(forwarded.body)
    if host.asks_for_stream_usage:
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in body
    # The agent did not ask for usage, and sees no usage-only chunk the proxy asked for.
    assert all(chunk["choices"] or not chunk["usage"] for chunk in answered[agent]["chunks"])


@pytest.mark.parametrize("stream", STREAMS, ids=["plain", "streamed"])
@pytest.mark.parametrize("case", list(STATED_COSTS))
def test_a_host_that_states_the_cost_of_a_call_is_charged_that_cost(
    proxy: Proxy, answered: dict[str, dict[str, Any]], case: str, stream: bool
) -> None:
    stated = STATED_COSTS[case]
    agent = agent_of(case, stream, "stated")
    assert answered[agent]["ok"] is True, answered[agent]
    [row] = settled_calls(proxy.ledger, agent, 1)
    assert row["actual_nanos"] == stated.nanos
    assert stated.nanos != HOSTS_BY_PROVIDER[stated.provider].nanos  # not the price list's
    assert row["held_nanos"] >= row["actual_nanos"]


def test_an_azure_deployment_is_priced_as_the_model_the_configuration_names(
    proxy: Proxy, answered: dict[str, dict[str, Any]]
) -> None:
    # Azure answers with the model behind the deployment; the ledger bills the deployment, at
    # the price of what [prices."chat-prod"] says it is priced as (gpt-4o, $2.50 / $10 per M).
    for stream in STREAMS:
        agent = agent_of("azure", stream)
        assert answered[agent]["model"] == "gpt-4o-2024-11-20"
        [row] = settled_calls(proxy.ledger, agent, 1)
        assert row["requested_model"] == AZURE_DEPLOYMENT
        assert row["actual_nanos"] == 2_607_500  # 1007 * 2,500 + 9 * 10,000


@pytest.mark.parametrize(
    ("provider", "agent"), [("mistral", "tight-compatible"), ("azure", "tight-azure")]
)
def test_a_refusal_surfaces_as_the_openai_sdks_402_with_the_message_intact(
    proxy: Proxy, fake: FakeProvider, test_id: str, provider: str, agent: str
) -> None:
    host = HOSTS_BY_PROVIDER[provider]  # the agent may spend $0.00001 a day
    spec = call_spec(host, agent, stream=False, **{TEST_ID_HEADER: test_id})
    del spec["headers"]["X-Spendbrake-Agent"]  # this agent is the proxy-auth user
    report = run_client("sdk_compatible.py", {"calls": [spec]}, proxy.client_env(agent))
    refused = report["calls"][agent]
    assert refused["ok"] is False
    assert (refused["error_class"], refused["status"]) == ("APIStatusError", 402)
    assert refused["attempts"] == [402]  # the SDK's default retries leave a 402 alone
    assert (refused["code"], refused["type"]) == ("daily_budget_exceeded", "insufficient_quota")
    message = refused["body"]["message"]
    assert message.startswith(
        f"spendbrake: daily budget exceeded for agent '{agent}': spent $0.00 of $0.00001 today"
    )
    assert message.endswith(f"To raise it: spendbrake limit set {agent} --daily 0.01")
    assert message in refused["message"]  # str(error) carries it whole
    assert refused["headers"]["x-spendbrake-reason"] == "daily_budget_exceeded"
    assert requests_of(fake, test_id) == []
