"""Prices in nanos: genai-prices (pinned) for rates, ``pricing/`` for what it does not carry."""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

import genai_prices
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, PriceContext

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


@dataclass(frozen=True)
class OutputBound:
    """What ``pricing/max_output.toml`` says of a model's output."""

    tokens: int  # the most it can generate in one answer
    # Whether it may spend output tokens on reasoning a stream does not show (OpenAI's
    # reasoning models, Gemini's thinking): unless the table says no, it may.
    reasons_unseen: bool = True


type _Bounds = dict[str, OutputBound]


@cache
def _max_output_table() -> tuple[_Bounds, dict[str, _Bounds]]:
    """``[models]`` (a model under its maker's name, at any host) and ``[hosts.<provider>]`` (a
    model as that host names it, where its limit there differs)."""
    with (pricing_dir() / "max_output.toml").open("rb") as f:
        data = tomllib.load(f)

    def bounds(entries: dict[str, dict[str, object]]) -> _Bounds:
        return {
            model: OutputBound(int(str(entry["tokens"])), entry.get("reasons_unseen") is not False)
            for model, entry in entries.items()
        }

    hosts = {provider: bounds(models) for provider, models in data.get("hosts", {}).items()}
    return bounds(data["models"]), hosts


def max_output_tokens(model: str, provider_id: str | None = None) -> int:
    """The model's maximum output: the host's own figure where the table has one, else the
    model's. A dated id falls back to the longest listed prefix that genai-prices prices as the
    same model (never to another model's figure), and a router's "vendor/model" to the model's
    own name."""
    bound = _output_bound(model, provider_id)
    if bound is None:
        raise UnknownModel(f"no maximum output is known for model {model!r}")
    return bound.tokens


def reasons_unseen(model: str, provider_id: str | None = None) -> bool:
    """Whether the model may reason without showing it in its stream, so that a stream cut
    before its usage may have cost more output than it relayed. A model the table does not
    list may."""
    bound = _output_bound(model, provider_id)
    return bound is None or bound.reasons_unseen


def _output_bound(model: str, provider_id: str | None) -> OutputBound | None:
    general, hosts = _max_output_table()
    tables = (hosts.get(provider_id, {}), general) if provider_id else (general,)
    for table in tables:
        # Routers name models by vendor ("openai/gpt-4o"); the table names them as their makers do.
        for name in dict.fromkeys((model, model.rpartition("/")[2])):
            if name in table:
                return table[name]
            prefixes = [
                m
                for m in table
                if name.startswith(m + "-") and _priced_as_one(name, m, provider_id)
            ]
            if prefixes:
                return table[max(prefixes, key=len)]
    return None


def _priced_as_one(model: str, listed: str, provider_id: str | None) -> bool:
    """Whether genai-prices takes ``model`` for the same model as ``listed`` ("gpt-4o-2024-08-06"
    is gpt-4o; "gpt-5-pro" is not gpt-5, and must not borrow its smaller limit)."""
    found = _priced_model(model, provider_id)
    return found is not None and found is _priced_model(listed, provider_id)


def _priced_model(model: str, provider_id: str | None) -> ModelInfo | None:
    snapshot = get_snapshot()
    for provider in dict.fromkeys((provider_id, None)):
        try:
            return snapshot.find_provider_model(model, None, provider, None)[1]
        except LookupError:
            continue
    return None


def price_context(service_tier: str | None) -> PriceContext | None:
    if service_tier == "batch":  # a batch result says so (Anthropic): about half price
        return {"processing": "batch"}
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
    """The price of ``tokens`` on ``model`` in nanos, rounded up. Raises UnknownModel.

    genai-prices re-resolves and re-validates a model's price units on every calculation (about
    0.1 ms, twice per call on the event loop). A price is affine in the token counts unless it is
    tiered, so each distinct price set is measured once through genai-prices itself, checked to
    be affine at probe points, and then evaluated with exact Decimal arithmetic; anything that
    fails the check (tiered prices) keeps going through genai-prices every time.
    """
    price = _model_price(model, provider_id, service_tier, at or datetime.now(UTC))
    counts = _counts(tokens)
    line = _affine(price)
    total = line(counts) if line is not None else _exact(price, counts)
    return usd_to_nanos(total)


type _Counts = tuple[int, ...]  # input, cache read, cache write, of which 1 h, output
_MTOK = 1_000_000
_BASE: _Counts = (8 * _MTOK, _MTOK, 2 * _MTOK, _MTOK, _MTOK)
_STEPS: tuple[_Counts, ...] = (  # each stays a valid usage when added to _BASE
    (_MTOK, 0, 0, 0, 0),
    (_MTOK, _MTOK, 0, 0, 0),
    (_MTOK, 0, _MTOK, 0, 0),
    (_MTOK, 0, _MTOK, _MTOK, 0),
    (0, 0, 0, 0, _MTOK),
)
_PROBES: tuple[_Counts, ...] = (
    (0, 0, 0, 0, 0),
    (1, 0, 0, 0, 1),
    (123_457, 2_345, 678, 91, 9_876),
    (3_000_001, 1_000_000, 500_000, 250_000, 200_000),
    (999_999_999, 0, 0, 0, 100_000),
)
_affine_cache: dict[str, Callable[[_Counts], Decimal] | None] = {}
_affine_by_identity: dict[int, tuple[ModelPrice, Callable[[_Counts], Decimal] | None]] = {}
_IDENTITY_CACHE_SIZE = 1_000  # service-tier variants are new objects each time: keep it bounded


def _counts(tokens: TokenCounts) -> _Counts:
    return (
        tokens.input_tokens,
        tokens.cached_input_tokens,
        tokens.cache_write_tokens,
        tokens.cache_write_1h_tokens,
        tokens.output_tokens,
    )


def _model_price(
    model: str, provider_id: str, service_tier: str | None, at: datetime
) -> ModelPrice:
    """The price set genai_prices.calc_price would use (ModelInfo.calc_price's own rules)."""
    try:
        provider, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        raise UnknownModel(f"no price is known for model {model!r} at {provider_id}") from None
    context = price_context(service_tier)
    if context and not any(info is m for m in provider.models):
        return info.get_prices(at)
    return info.get_prices(at, context)


def _exact(price: ModelPrice, counts: _Counts) -> Decimal:
    usage = genai_prices.Usage(
        input_tokens=counts[0],
        cache_read_tokens=counts[1],
        cache_write_tokens=counts[2],
        cache_write_1h_tokens=counts[3],
        output_tokens=counts[4],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genai-prices warns on zero-price keys; not ours to show
        return price.calc_price(usage)["total_price"]


def _affine(price: ModelPrice) -> Callable[[_Counts], Decimal] | None:
    # Most price sets are the same object call after call: recognise them without repr(), which
    # costs more than the pricing itself. The entry keeps the object alive, so its id stays its.
    known = _affine_by_identity.get(id(price))
    if known is not None and known[0] is price:
        return known[1]
    key = repr(price)  # every price of the set, so equal keys price alike
    if key not in _affine_cache:
        _affine_cache[key] = _measure(price)
    if len(_affine_by_identity) < _IDENTITY_CACHE_SIZE:
        _affine_by_identity[id(price)] = (price, _affine_cache[key])
    return _affine_cache[key]


def _measure(price: ModelPrice) -> Callable[[_Counts], Decimal] | None:
    try:
        at_base = _exact(price, _BASE)
        steps = [
            _exact(price, tuple(b + d for b, d in zip(_BASE, step, strict=True))) - at_base
            for step in _STEPS
        ]
        # per-token rates (per million): input, read, write, 1 h write, output
        rates = (
            steps[0],
            steps[1] - steps[0],
            steps[2] - steps[0],
            steps[3] - steps[2],
            steps[4],
        )
        constant = (
            at_base - sum((r * c for r, c in zip(rates, _BASE, strict=True)), Decimal(0)) / _MTOK
        )

        def line(counts: _Counts) -> Decimal:
            return (
                constant
                + sum((r * c for r, c in zip(rates, counts, strict=True)), Decimal(0)) / _MTOK
            )

        if all(line(p) == _exact(price, p) for p in _PROBES):
            return line
    except (ArithmeticError, LookupError, ValueError, TypeError):
        pass
    return None  # tiered, or not affine for another reason: genai-prices prices every call


def warm_up() -> None:
    """Load the price snapshot and the max-output table now, not on the first agent's call."""
    _max_output_table()
    cost_nanos(TokenCounts(input_tokens=1), "gpt-4o-mini", provider_id="openai")


_MILLION = Decimal(1_000_000)
_PRICED_LIKE = {"azure": "openai"}
FALLBACK_MODEL = "*"  # the override that prices models nothing else knows


@dataclass(frozen=True)
class OverridePrice:
    """An operator's price for a model (negotiated rates, private or fine-tuned models), in
    dollars per million tokens, or the published model it is priced as. Cached and cache-write
    rates default to the input rate."""

    input_per_mtok: Decimal = Decimal(0)
    output_per_mtok: Decimal = Decimal(0)
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    max_output_tokens: int | None = None
    price_as: str | None = None  # priced as this published model instead (an Azure deployment)
    # Whether the model may reason unseen; None: as pricing/max_output.toml says of the model
    # (or of price_as), and yes for a model it does not list.
    reasons_unseen: bool | None = None

    def cost_nanos(self, tokens: TokenCounts) -> int:
        cached_rate = self.cached_input_per_mtok
        write_rate = self.cache_write_per_mtok
        uncached = tokens.input_tokens - tokens.cached_input_tokens - tokens.cache_write_tokens
        total = (
            max(uncached, 0) * self.input_per_mtok
            + tokens.cached_input_tokens
            * (self.input_per_mtok if cached_rate is None else cached_rate)
            + tokens.cache_write_tokens
            * (self.input_per_mtok if write_rate is None else write_rate)
            + tokens.output_tokens * self.output_per_mtok
        )
        return usd_to_nanos(total / _MILLION)


@dataclass(frozen=True)
class Pricer:
    """Prices with the operator's overrides first, then genai-prices, then the fallback
    (``"*"``), if the operator chose one; otherwise an unknown model stays unknown."""

    overrides: Mapping[str, OverridePrice] = field(default_factory=dict)

    def cost_nanos(
        self,
        tokens: TokenCounts,
        model: str,
        *,
        provider_id: str,
        service_tier: str | None = None,
        at: datetime | None = None,
    ) -> int:
        own = self.overrides.get(model)
        if own is not None and own.price_as is None:
            return own.cost_nanos(tokens)
        published = own.price_as if own is not None and own.price_as else model
        try:
            return self._published(tokens, published, provider_id, service_tier, at)
        except UnknownModel:
            if (fallback := self.overrides.get(FALLBACK_MODEL)) is not None:
                return fallback.cost_nanos(tokens)
            raise

    @staticmethod
    def _published(
        tokens: TokenCounts,
        model: str,
        provider_id: str,
        service_tier: str | None,
        at: datetime | None,
    ) -> int:
        try:
            return cost_nanos(
                tokens, model, provider_id=provider_id, service_tier=service_tier, at=at
            )
        except UnknownModel:
            # Azure lists few models in genai-prices; its global prices are OpenAI's.
            if provider_id not in _PRICED_LIKE:
                raise
            return cost_nanos(
                tokens,
                model,
                provider_id=_PRICED_LIKE[provider_id],
                service_tier=service_tier,
                at=at,
            )

    def max_output_tokens(self, model: str, provider_id: str | None = None) -> int:
        own = self.overrides.get(model)
        if own is not None and own.max_output_tokens is not None:
            return own.max_output_tokens
        if own is not None and own.price_as:
            model = own.price_as
        try:
            return max_output_tokens(model, provider_id)
        except UnknownModel:
            fallback = self.overrides.get(FALLBACK_MODEL)
            if fallback is not None and fallback.max_output_tokens is not None:
                return fallback.max_output_tokens
            raise

    def reasons_unseen(self, model: str, provider_id: str | None = None) -> bool:
        """Whether a stream of ``model`` cut before its usage may have cost output it never
        showed: the operator's word where [prices] gives it, else the published table's."""
        own = self.overrides.get(model)
        if own is not None and own.reasons_unseen is not None:
            return own.reasons_unseen
        published = own.price_as if own is not None and own.price_as else model
        return reasons_unseen(published, provider_id)

    def source(self, model: str, provider_id: str) -> str:
        """Where the price of ``model`` comes from, for ``spendbrake price``."""
        own = self.overrides.get(model)
        if own is not None and own.price_as:
            return f"the configuration's [prices] override: priced as {own.price_as}"
        if own is not None:
            return "the configuration's [prices] override"
        try:
            _model_price(model, provider_id, None, datetime.now(UTC))
        except UnknownModel:
            if FALLBACK_MODEL in self.overrides:
                return 'the configuration\'s fallback price [prices."*"]'
            raise
        return f"genai-prices {genai_prices.__version__} ({provider_id})"
