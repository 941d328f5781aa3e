"""The worst case held before a call, and the actual cost settled after it."""

from datetime import UTC, datetime

import pytest

from spendbrake.governor import actual_cost, estimate_call, hold_tier
from spendbrake.ledger import TokenCounts
from spendbrake.pricing import UnknownModel
from spendbrake.providers.base import CallRequest, MeteredUsage
from spendbrake.tokens import TokenEstimator

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def chat(**fields: object) -> CallRequest:
    defaults: dict[str, object] = {
        "model": "gpt-4o-mini",
        "stream": False,
        "max_output": 100,
        "choices": 1,
        "service_tier": None,
        "prompt_texts": ("Hello world",),  # 2 tokens in o200k
        "fixed_prompt_tokens": 7,
    }
    return CallRequest(**{**defaults, **fields})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def estimator() -> TokenEstimator:
    return TokenEstimator()


def test_the_hold_is_every_prompt_token_plus_the_full_max_output(estimator: TokenEstimator) -> None:
    estimate = estimate_call(chat(), estimator, provider_id="openai", at=NOW)
    assert (estimate.prompt_tokens, estimate.output_tokens) == (9, 100)
    assert estimate.cost_nanos == 9 * 150 + 100 * 600  # $0.15/M in, $0.60/M out


def test_every_choice_is_billed_output(estimator: TokenEstimator) -> None:
    estimate = estimate_call(chat(choices=3), estimator, provider_id="openai", at=NOW)
    assert estimate.output_tokens == 300


def test_without_max_output_the_models_maximum_is_held(estimator: TokenEstimator) -> None:
    estimate = estimate_call(chat(max_output=None), estimator, provider_id="openai", at=NOW)
    assert estimate.output_tokens == 16_384


def test_auto_tier_is_held_at_the_priority_price(estimator: TokenEstimator) -> None:
    standard = estimate_call(chat(), estimator, provider_id="openai", at=NOW).cost_nanos
    auto = estimate_call(chat(service_tier="auto"), estimator, provider_id="openai", at=NOW)
    assert auto.cost_nanos > standard
    assert hold_tier("auto") == "priority"
    assert hold_tier("flex") == "flex"


def test_a_model_without_a_price_or_bound_is_unknown(estimator: TokenEstimator) -> None:
    with pytest.raises(UnknownModel):
        estimate_call(chat(model="gpt-nonexistent"), estimator, provider_id="openai", at=NOW)


def test_the_hold_is_never_below_the_actual_cost(estimator: TokenEstimator) -> None:
    request = chat(max_output=9, prompt_texts=("hi",), fixed_prompt_tokens=7)
    hold = estimate_call(request, estimator, provider_id="openai", at=NOW).cost_nanos
    usage = MeteredUsage(TokenCounts(input_tokens=8, output_tokens=9), "gpt-4o-mini", "default")
    assert actual_cost(usage, "gpt-4o-mini", provider_id="openai", at=NOW) <= hold


def test_actual_cost_prefers_the_reported_snapshot_then_the_requested_model() -> None:
    tokens = TokenCounts(input_tokens=19, output_tokens=2)
    odd = MeteredUsage(tokens, "gpt-4o-mini-weird-snapshot-x", None)
    assert actual_cost(odd, "gpt-4o-mini", provider_id="openai", at=NOW) == 4_050
    with pytest.raises(UnknownModel):
        actual_cost(MeteredUsage(tokens, None, None), "gpt-nope", provider_id="openai", at=NOW)


def test_claude_prompts_are_bounded_above_tiktokens_count(estimator: TokenEstimator) -> None:
    # "Hello world": 2 o200k tokens x 1.6 -> 4; 11 characters / 2.3 -> 5; the larger wins.
    request = chat(
        model="claude-haiku-4-5",
        tokenizer="claude",
        prompt_texts=("Hello world",),
        fixed_prompt_tokens=0,
    )
    estimate = estimate_call(request, estimator, provider_id="anthropic", at=NOW)
    assert estimate.prompt_tokens == 5


def test_a_prompt_that_may_be_cached_is_held_as_a_cache_write(estimator: TokenEstimator) -> None:
    plain = chat(model="claude-haiku-4-5", tokenizer="claude", max_output=0)
    five = estimate_call(
        chat(model="claude-haiku-4-5", tokenizer="claude", max_output=0, cache_write="5m"),
        estimator,
        provider_id="anthropic",
        at=NOW,
    )
    hour = estimate_call(
        chat(model="claude-haiku-4-5", tokenizer="claude", max_output=0, cache_write="1h"),
        estimator,
        provider_id="anthropic",
        at=NOW,
    )
    base = estimate_call(plain, estimator, provider_id="anthropic", at=NOW)
    # claude-haiku-4-5: $1/M input, $1.25/M 5-minute writes, $2/M 1-hour writes
    assert (base.cost_nanos, five.cost_nanos, hour.cost_nanos) == (
        base.prompt_tokens * 1_000,
        base.prompt_tokens * 1_250,
        base.prompt_tokens * 2_000,
    )


def test_gemini_prompts_are_bounded_above_tiktokens_count(estimator: TokenEstimator) -> None:
    # "Hello world": 2 o200k tokens x 1.2 -> 3; 11 characters / 3.5 -> 4; the larger wins.
    request = chat(
        model="gemini-2.5-flash",
        tokenizer="gemini",
        prompt_texts=("Hello world",),
        fixed_prompt_tokens=0,
    )
    estimate = estimate_call(request, estimator, provider_id="google", at=NOW)
    assert estimate.prompt_tokens == 4


def test_the_hosts_own_max_output_is_held_there(estimator: TokenEstimator) -> None:
    request = chat(model="openai/gpt-oss-120b", max_output=None)
    at_groq = estimate_call(request, estimator, provider_id="groq", at=NOW)
    at_together = estimate_call(request, estimator, provider_id="together", at=NOW)
    assert (at_groq.output_tokens, at_together.output_tokens) == (65_536, 131_072)


def test_a_model_served_in_openais_dialect_is_counted_by_its_own_family() -> None:
    from spendbrake.governor import counting_tokenizer
    from spendbrake.pricing import OverridePrice, Pricer

    assert counting_tokenizer(chat(model="gpt-4o-mini")) == "openai"
    assert counting_tokenizer(chat(model="openai/gpt-oss-120b")) == "openai"
    assert counting_tokenizer(chat(model="anthropic/claude-sonnet-4.5")) == "claude"
    assert counting_tokenizer(chat(model="mistral-large-latest")) == "other"
    assert counting_tokenizer(chat(model="google/gemini-2.5-pro")) == "other"
    assert counting_tokenizer(chat(model="claude-haiku-4-5", tokenizer="claude")) == "claude"
    # An Azure deployment counts as the model it is priced as; one with its own rates is unknown.
    priced = Pricer({"prod-chat": OverridePrice(price_as="gpt-4o"), "mine": OverridePrice()})
    assert counting_tokenizer(chat(model="prod-chat"), priced) == "openai"
    assert counting_tokenizer(chat(model="mine"), priced) == "other"


def test_a_claude_prompt_through_a_router_is_held_at_claudes_bound(
    estimator: TokenEstimator,
) -> None:
    # "Hello world": 2 o200k tokens x 1.6 -> 4; 11 characters / 2.3 -> 5; the larger wins.
    request = chat(model="anthropic/claude-sonnet-4.5", fixed_prompt_tokens=0)
    estimate = estimate_call(request, estimator, provider_id="openrouter", at=NOW)
    assert estimate.prompt_tokens == 5
    # Mistral: x 1.2 -> 3; 11 / 3.5 -> 4.
    request = chat(model="mistral-small-latest", fixed_prompt_tokens=0)
    assert estimate_call(request, estimator, provider_id="mistral", at=NOW).prompt_tokens == 4
