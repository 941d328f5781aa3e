"""Dollar figures are pinned: a price change in genai-prices must be a deliberate upgrade."""

import pytest

from spendbrake.ledger import TokenCounts
from spendbrake.pricing import UnknownModel, cost_nanos, max_output_tokens


def test_gpt_4o_mini_costs_15_and_60_cents_per_million_tokens() -> None:
    tokens = TokenCounts(input_tokens=19, output_tokens=2)
    assert cost_nanos(tokens, "gpt-4o-mini-2024-07-18", provider_id="openai") == 4_050


def test_cached_input_is_priced_at_the_cache_rate() -> None:
    tokens = TokenCounts(input_tokens=1117, cached_input_tokens=1024, output_tokens=9)
    # 93 at $2.50/M + 1024 at $1.25/M + 9 at $10/M
    assert cost_nanos(tokens, "gpt-4o-2024-08-06", provider_id="openai") == 1_602_500


def test_priority_tier_costs_more_than_standard() -> None:
    tokens = TokenCounts(input_tokens=19, output_tokens=2)
    priority = cost_nanos(tokens, "gpt-4o-mini", provider_id="openai", service_tier="priority")
    assert priority == 6_750
    assert cost_nanos(tokens, "gpt-4o-mini", provider_id="openai", service_tier="default") == 4_050


def test_an_unknown_model_cannot_be_priced() -> None:
    with pytest.raises(UnknownModel, match="gpt-nonexistent"):
        cost_nanos(TokenCounts(input_tokens=1), "gpt-nonexistent", provider_id="openai")


def test_max_output_comes_from_the_table_with_dated_ids_falling_back() -> None:
    assert max_output_tokens("gpt-4o") == 16_384
    assert max_output_tokens("gpt-4o-mini-2024-07-18") == 16_384
    assert max_output_tokens("gpt-5") == 128_000
    with pytest.raises(UnknownModel):
        max_output_tokens("gpt-nonexistent")


def test_anthropic_one_hour_cache_writes_cost_twice_the_input_rate() -> None:
    # shared/reference/providers.md §3.7: a 2,048-token 1-hour write, 12 input, 6 output.
    tokens = TokenCounts(
        input_tokens=12 + 2048, cache_write_tokens=2048, cache_write_1h_tokens=2048, output_tokens=6
    )
    assert cost_nanos(tokens, "claude-sonnet-4-5", provider_id="anthropic") == 12_414_000


def test_embeddings_cost_two_cents_per_million_tokens() -> None:
    assert (
        cost_nanos(TokenCounts(input_tokens=8), "text-embedding-3-small", provider_id="openai")
        == 160
    )


def test_the_responses_transcripts_model_is_priced() -> None:
    tokens = TokenCounts(input_tokens=328, output_tokens=552, reasoning_tokens=448)
    assert cost_nanos(tokens, "o4-mini-2025-04-16", provider_id="openai") == 2_789_600
