"""Dollar figures are pinned: a price change in genai-prices must be a deliberate upgrade."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_a_hosts_own_limit_wins_at_that_host_only() -> None:
    # Groq caps gpt-oss-120b below its context window; other hosts, and the model itself, do not.
    assert max_output_tokens("openai/gpt-oss-120b", "groq") == 65_536
    assert max_output_tokens("openai/gpt-oss-120b", "together") == 131_072
    assert max_output_tokens("gpt-oss-120b", "openai") == 131_072
    assert max_output_tokens("openai/gpt-oss-120b") == 131_072  # no host named: the model's own
    assert (
        max_output_tokens("accounts/fireworks/models/deepseek-v4-flash", "fireworks") == 1_040_000
    )
    assert max_output_tokens("deepseek-v4-flash", "deepseek") == 393_216


def test_a_dated_id_borrows_only_its_own_models_limit() -> None:
    assert max_output_tokens("claude-opus-4-20250514", "anthropic") == 200_000
    assert max_output_tokens("gpt-5-2025-08-07", "openai") == 128_000
    assert max_output_tokens("o3-2025-04-16", "azure") == 100_000
    # gpt-5-pro is another model than gpt-5 (272k out, not 128k): its own entry, never gpt-5's.
    assert max_output_tokens("gpt-5-pro", "openai") == 400_000
    # No figure for these, and their prefixes are other models: refused, not guessed.
    for model in ("gpt-5.5-cyber", "gpt-4-32k", "gpt-4.5-preview"):
        with pytest.raises(UnknownModel):
            max_output_tokens(model, "openai")


def test_every_entry_names_its_source_and_date() -> None:
    import tomllib
    from datetime import date

    from spendbrake.pricing import pricing_dir

    data = tomllib.loads((pricing_dir() / "max_output.toml").read_text())
    entries = [
        *data["models"].items(),
        *(item for host in data["hosts"].values() for item in host.items()),
    ]
    for model, entry in entries:
        assert set(entry) - {"reasons_unseen"} == {"tokens", "source", "checked"}, model
        # Only "false" is written: a model not marked may reason unseen.
        assert entry.get("reasons_unseen", False) is False, model
        assert isinstance(entry["tokens"], int), model
        assert entry["tokens"] > 0, model
        assert entry["source"], model
        date.fromisoformat(entry["checked"])


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


def reference_cost(tokens: TokenCounts, model: str, provider_id: str, tier: str | None) -> int:
    """genai-prices itself, called the slow way: what the fast path must always agree with."""
    import warnings

    import genai_prices

    from spendbrake.money import usd_to_nanos
    from spendbrake.pricing import price_context

    usage = genai_prices.Usage(
        input_tokens=tokens.input_tokens,
        cache_read_tokens=tokens.cached_input_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        cache_write_1h_tokens=tokens.cache_write_1h_tokens,
        output_tokens=tokens.output_tokens,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculation = genai_prices.calc_price(
            usage, model, provider_id=provider_id, price_context=price_context(tier)
        )
    return usd_to_nanos(calculation.total_price)


MODELS = [
    ("gpt-4o-mini", "openai", None),
    ("gpt-4o-2024-08-06", "openai", "priority"),
    ("gpt-4o-mini", "openai", "flex"),
    ("o4-mini", "openai", None),
    ("gpt-5", "openai", "priority"),
    ("text-embedding-3-small", "openai", None),
    ("claude-haiku-4-5", "anthropic", None),
    ("claude-sonnet-4-5", "anthropic", None),  # tiered above 200k input tokens
    ("claude-opus-4-5", "anthropic", None),
]


@given(
    st.sampled_from(MODELS),
    st.integers(min_value=0, max_value=400_000),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=200_000),
)
def test_the_fast_path_always_agrees_with_genai_prices(
    model: tuple[str, str, str | None], prompt: int, read: int, write: int, hour: int, out: int
) -> None:
    # shares of the prompt, in percent: reads and writes never exceed it together
    reads = prompt * read // 100
    writes = (prompt - reads) * write // 100
    tokens = TokenCounts(
        input_tokens=prompt,
        cached_input_tokens=reads,
        cache_write_tokens=writes,
        cache_write_1h_tokens=writes * hour // 100,
        output_tokens=out,
    )
    name, provider_id, tier = model
    expected = reference_cost(tokens, name, provider_id, tier)
    assert cost_nanos(tokens, name, provider_id=provider_id, service_tier=tier) == expected


def test_flat_prices_take_the_fast_path_and_tiered_ones_genai_prices_every_time() -> None:
    from datetime import UTC, datetime

    from spendbrake.pricing import _affine, _model_price

    now = datetime.now(UTC)
    assert _affine(_model_price("gpt-4o-mini", "openai", None, now)) is not None
    assert _affine(_model_price("claude-sonnet-4-5", "anthropic", None, now)) is None  # > 200k


def test_an_operators_price_wins_and_the_fallback_prices_only_the_unknown() -> None:
    from decimal import Decimal

    from spendbrake.pricing import OverridePrice, Pricer

    pricer = Pricer(
        {
            "gpt-4o-mini": OverridePrice(Decimal("0.10"), Decimal("0.40"), Decimal("0.05")),
            "*": OverridePrice(Decimal(15), Decimal(75), max_output_tokens=8192),
        }
    )
    tokens = TokenCounts(input_tokens=1000, cached_input_tokens=400, output_tokens=100)
    # negotiated: 600 x $0.10/M + 400 x $0.05/M + 100 x $0.40/M
    assert pricer.cost_nanos(tokens, "gpt-4o-mini", provider_id="openai") == 120_000
    assert pricer.cost_nanos(tokens, "gpt-4o", provider_id="openai") == cost_nanos(
        tokens, "gpt-4o", provider_id="openai"
    )  # published prices still apply to models without an override
    assert pricer.cost_nanos(tokens, "private-model", provider_id="openai") == 22_500_000
    assert pricer.max_output_tokens("private-model") == 8192
    assert pricer.max_output_tokens("gpt-4o") == 16_384
    with pytest.raises(UnknownModel):
        Pricer().cost_nanos(tokens, "private-model", provider_id="openai")


def test_a_deployment_priced_as_a_published_model_costs_what_that_model_costs() -> None:
    from spendbrake.pricing import OverridePrice, Pricer

    pricer = Pricer({"my-gpt4o": OverridePrice(price_as="gpt-4o")})
    tokens = TokenCounts(input_tokens=1000, output_tokens=100)
    published = cost_nanos(tokens, "gpt-4o", provider_id="openai")
    # Azure's price list in genai-prices lacks gpt-4o: its global price is OpenAI's.
    assert pricer.cost_nanos(tokens, "my-gpt4o", provider_id="azure") == published
    assert pricer.max_output_tokens("my-gpt4o") == 16_384
    assert pricer.source("my-gpt4o", "azure").endswith("priced as gpt-4o")


def test_a_batch_result_is_priced_at_the_batch_rate() -> None:
    tokens = TokenCounts(input_tokens=100_000, output_tokens=100_000)
    standard = cost_nanos(tokens, "claude-sonnet-4-5", provider_id="anthropic")
    batch = cost_nanos(tokens, "claude-sonnet-4-5", provider_id="anthropic", service_tier="batch")
    assert (standard, batch) == (1_800_000_000, 900_000_000)  # $3 and $15 per M, then half
