"""Hosts that speak OpenAI's Chat Completions dialect, with their usage quirks (reference §3.6)."""

import json
from datetime import UTC, datetime

import pytest

from spendbrake.governor import actual_cost
from spendbrake.ledger import TokenCounts
from spendbrake.pricing import max_output_tokens
from spendbrake.providers import RouteKind, classify_route, provider_for_host
from spendbrake.providers.openai import usage_from_completion


@pytest.mark.parametrize(
    ("host", "path", "provider_id"),
    [
        ("api.mistral.ai", "/v1/chat/completions", "mistral"),
        ("api.groq.com", "/openai/v1/chat/completions", "groq"),
        ("api.deepseek.com", "/chat/completions", "deepseek"),
        ("api.x.ai", "/v1/chat/completions", "x-ai"),
        ("openrouter.ai", "/api/v1/chat/completions", "openrouter"),
        ("api.together.xyz", "/v1/chat/completions", "together"),
        ("api.fireworks.ai", "/inference/v1/chat/completions", "fireworks"),
        ("api.perplexity.ai", "/chat/completions", "perplexity"),
    ],
)
def test_each_host_meters_its_chat_route(host: str, path: str, provider_id: str) -> None:
    provider = provider_for_host(host)
    assert provider is not None
    assert provider.id == provider_id
    route = classify_route(provider, "POST", path)
    assert route.kind is RouteKind.METERED
    assert route.api is not None
    assert route.api.endpoint == path
    assert classify_route(provider, "POST", "/v1/unknown").kind is RouteKind.UNKNOWN


def test_streams_ask_for_usage_only_where_the_host_accepts_the_field() -> None:
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()

    def asks(host: str, path: str) -> bool:
        provider = provider_for_host(host)
        assert provider is not None
        api = classify_route(provider, "POST", path).api
        assert api is not None
        return api.parse(body).wants_usage_injection

    assert asks("api.groq.com", "/openai/v1/chat/completions")
    assert not asks("api.mistral.ai", "/v1/chat/completions")  # reports usage unasked


def test_older_groq_streams_carry_usage_in_x_groq() -> None:
    usage = usage_from_completion(
        {"x_groq": {"usage": {"prompt_tokens": 5, "completion_tokens": 2}}}
    )
    assert usage is not None
    assert usage.tokens == TokenCounts(input_tokens=5, output_tokens=2)


def test_deepseek_cache_hits_are_cached_input() -> None:
    usage = usage_from_completion(
        {"usage": {"prompt_tokens": 100, "prompt_cache_hit_tokens": 60, "completion_tokens": 4}}
    )
    assert usage is not None
    assert usage.tokens.cached_input_tokens == 60


@pytest.mark.parametrize(
    ("usage", "nanos"),
    [
        ({"cost": 0.0001234}, 123_400),  # OpenRouter: dollars
        ({"cost_in_usd_ticks": 12_345}, 1_235),  # xAI: 1e10 ticks to the dollar, rounded up
        ({"cost": -1}, None),
        ({}, None),
    ],
)
def test_a_hosts_own_cost_figure_is_read_exactly(
    usage: dict[str, object], nanos: int | None
) -> None:
    metered = usage_from_completion({"usage": {"prompt_tokens": 1, **usage}})
    assert metered is not None
    assert metered.reported_cost_nanos == nanos


@pytest.mark.parametrize(
    ("usage", "nanos"),
    [
        # Paid with OpenRouter credits: the provider's bill is already inside `cost`.
        (
            {"cost": 0.0002, "is_byok": False, "cost_details": {"upstream_inference_cost": 0.0002}},
            200_000,
        ),
        # On the caller's own provider key: OpenRouter's fee, and what the provider bills the key.
        (
            {"cost": 0.00001, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.0002}},
            210_000,
        ),
        # ... and without the provider's figure, the response does not say what the call cost.
        ({"cost": 0.00001, "is_byok": True, "cost_details": {}}, None),
    ],
    ids=["credits", "own-key", "own-key-without-the-providers-bill"],
)
def test_an_openrouter_call_on_the_callers_own_key_costs_the_fee_and_the_providers_bill(
    usage: dict[str, object], nanos: int | None
) -> None:
    metered = usage_from_completion({"usage": {"prompt_tokens": 10, **usage}})
    assert metered is not None
    assert metered.reported_cost_nanos == nanos


def test_the_hosts_own_figure_is_what_the_call_costs() -> None:
    metered = usage_from_completion(
        {
            "model": "unpriced/model",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.002},
        }
    )
    assert metered is not None
    at = datetime(2026, 11, 22, tzinfo=UTC)
    assert actual_cost(metered, "unpriced/model", provider_id="openrouter", at=at) == 2_000_000


def test_a_routers_vendor_prefixed_model_finds_its_maximum_output() -> None:
    assert max_output_tokens("openai/gpt-4o-mini") == 16_384
    assert max_output_tokens("anthropic/claude-sonnet-4-5") == 64_000
