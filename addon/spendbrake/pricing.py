"""Prices in nanos: genai-prices (pinned) for rates, ``pricing/`` for what it does not carry."""

from __future__ import annotations

import tomllib
import warnings
from datetime import datetime
from functools import cache
from pathlib import Path

import genai_prices
from genai_prices.types import PriceContext

from spendbrake.ledger import TokenCounts
from spendbrake.money import usd_to_nanos

# Service tiers that genai-prices prices; "auto" may be billed at priority, so it is held there.
_TIER_CONTEXT: dict[str, str] = {"flex": "flex", "priority": "priority", "fast": "priority"}


class UnknownModel(LookupError):
    """No price (or no output bound) is known for this model: its cost cannot be bounded."""


def pricing_dir() -> Path:
    """``pricing/`` of a source checkout, else the copy bundled into the wheel."""
    package = Path(__file__).resolve().parent
    checkout = package.parent.parent / "pricing"
    return checkout if checkout.is_dir() else package / "_pricing"


@cache
def _max_output_table() -> dict[str, int]:
    with (pricing_dir() / "max_output.toml").open("rb") as f:
        data = tomllib.load(f)
    return {model: int(entry["tokens"]) for model, entry in data["models"].items()}


def max_output_tokens(model: str) -> int:
    """The model's maximum output; a dated id falls back to the longest listed prefix."""
    table = _max_output_table()
    if model in table:
        return table[model]
    prefixes = [m for m in table if model.startswith(m + "-")]
    if not prefixes:
        raise UnknownModel(f"no maximum output is known for model {model!r}")
    return table[max(prefixes, key=len)]


def price_context(service_tier: str | None) -> PriceContext | None:
    tier = _TIER_CONTEXT.get(service_tier or "")
    return {"service_tier": tier} if tier else None


def cost_nanos(
    tokens: TokenCounts,
    model: str,
    *,
    provider_id: str,
    service_tier: str | None = None,
    at: datetime | None = None,
) -> int:
    """The price of ``tokens`` on ``model`` in nanos, rounded up. Raises UnknownModel."""
    usage = genai_prices.Usage(
        input_tokens=tokens.input_tokens,
        cache_read_tokens=tokens.cached_input_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        cache_write_1h_tokens=tokens.cache_write_1h_tokens,
        output_tokens=tokens.output_tokens,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # genai-prices warns on zero-price keys; not ours to show
            calculation = genai_prices.calc_price(
                usage,
                model,
                provider_id=provider_id,
                genai_request_timestamp=at,
                price_context=price_context(service_tier),
            )
    except LookupError:
        raise UnknownModel(f"no price is known for model {model!r} at {provider_id}") from None
    return usd_to_nanos(calculation.total_price)


def warm_up() -> None:
    """Load the price snapshot and the max-output table now, not on the first agent's call."""
    _max_output_table()
    cost_nanos(TokenCounts(input_tokens=1), "gpt-4o-mini", provider_id="openai")
