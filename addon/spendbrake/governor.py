"""Deciding a call: its worst-case cost before it goes out, its actual cost after.

The worst case is an upper bound, never below what the provider will bill: every prompt token
at the full input rate (cache discounts only lower it), the request's max output (or the
model's) times the number of choices, priced at the most expensive tier the request may be
billed at. The hold is that amount; the daily check itself is one ledger transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from spendbrake.ledger import TokenCounts
from spendbrake.pricing import Pricer, UnknownModel
from spendbrake.providers.base import CallRequest, CountedPrompt, MeteredUsage
from spendbrake.quota import affordable_output
from spendbrake.tokens import TokenEstimator

_PUBLISHED_PRICES = Pricer()  # no overrides: genai-prices and pricing/ alone

# "auto" lets OpenAI pick the project's tier, which may be priority: hold for the dearest.
_HOLD_TIER: dict[str, str] = {"auto": "priority", "priority": "priority", "fast": "priority"}


# A worst case beyond this (nanos, $4.6 billion; or tokens) is held as this: it is above any limit
# anyway, and the ledger's 64-bit integers cannot hold more (max_tokens: 10**30 would overflow).
HOLD_CEILING = 2**62


@dataclass(frozen=True)
class Estimate:
    prompt_tokens: int
    output_tokens: int
    cost_nanos: int


def hold_tier(requested: str | None) -> str | None:
    if requested is None:
        return None
    return _HOLD_TIER.get(requested, requested)


def count_prompt(request: CallRequest, estimator: TokenEstimator) -> CountedPrompt:
    """The request's prompt texts counted by the tokenizer of its model."""
    texts = request.prompt_texts
    return CountedPrompt(
        tokens=sum(estimator.count(text, request.model) for text in texts),
        characters=sum(len(text) for text in texts),
    )


def prompt_upper_bound(
    request: CallRequest, estimator: TokenEstimator, tokenizer: str | None = None
) -> int:
    """Prompt tokens, never fewer than the provider will count.

    tiktoken is OpenAI's own tokenizer: exact there. Claude's tokenizer is private and counts
    more (about 1.0-1.45x of o200k on Opus 4.7+, more for repetitive text), so its bound is the
    larger of o200k x 1.6 and one token per 2.3 characters (reference §2.6). Every other family
    (Gemini, Mistral, DeepSeek, Llama, Grok...) is held at o200k x 1.2, or a token per 3.5
    characters. ``tokenizer`` overrides the request's (see ``counting_tokenizer``).
    """
    kind = tokenizer or request.tokenizer
    count = request.counted_prompt or count_prompt(request, estimator)
    counted, characters = count.tokens, count.characters
    if kind == "claude":
        counted = max(-(-counted * 16 // 10), -(-characters * 10 // 23))
    elif kind != "openai":
        # SentencePiece and other BPEs, no offline copy: o200k x 1.2, or a token per 3.5 chars.
        counted = max(-(-counted * 12 // 10), -(-characters * 10 // 35))
    return request.fixed_prompt_tokens + counted


# OpenAI's own models, by name: the only ones tiktoken counts exactly.
_OPENAI_MODELS = re.compile(
    r"^(?:ft:)?(?:gpt-|chatgpt-|o\d|codex-|text-embedding-|davinci|babbage)"
)


def counting_tokenizer(request: CallRequest, pricer: Pricer = _PUBLISHED_PRICES) -> str:
    """Whose tokenizer counts the prompt. Anthropic's and Google's adapters say so; a request in
    OpenAI's dialect may reach any family (OpenRouter serves Claude and Gemini that way, Groq
    Llama, Mistral its own), so there the model's name decides, or the published model an
    operator prices it as."""
    if request.tokenizer != "openai":
        return request.tokenizer
    own = pricer.overrides.get(request.model)
    name = (own.price_as if own is not None and own.price_as else request.model).lower()
    name = name.rpartition("/")[2]
    if _OPENAI_MODELS.match(name):
        return "openai"
    return "claude" if name.startswith("claude") else "other"


def estimate_call(
    request: CallRequest,
    estimator: TokenEstimator,
    *,
    provider_id: str,
    at: datetime,
    pricer: Pricer = _PUBLISHED_PRICES,
) -> Estimate:
    """The worst-case cost of a call. Raises UnknownModel."""
    prompt = prompt_upper_bound(request, estimator, counting_tokenizer(request, pricer))
    per_choice = max_output_per_choice(request, provider_id=provider_id, pricer=pricer)
    return estimate_with_output(
        request, prompt, per_choice, provider_id=provider_id, at=at, pricer=pricer
    )


def max_output_per_choice(
    request: CallRequest, *, provider_id: str, pricer: Pricer = _PUBLISHED_PRICES
) -> int:
    """The request's max output, else the model's. Raises UnknownModel."""
    if request.max_output is not None:
        return request.max_output
    return pricer.max_output_tokens(request.model, provider_id)


def estimate_with_output(
    request: CallRequest,
    prompt: int,
    per_choice: int,
    *,
    provider_id: str,
    at: datetime,
    pricer: Pricer = _PUBLISHED_PRICES,
) -> Estimate:
    """The worst case of a prompt already bounded, with ``per_choice`` output tokens per choice
    (what a lower max output would cost, without counting the prompt again)."""
    output = per_choice * request.choices
    # A prompt that may be written to the cache is held as if all of it were (1.25x, 2x for 1h).
    written = prompt if request.cache_write else 0
    cost = pricer.cost_nanos(
        TokenCounts(
            input_tokens=prompt,
            cache_write_tokens=written,
            cache_write_1h_tokens=written if request.cache_write == "1h" else 0,
            output_tokens=output,
        ),
        request.model,
        provider_id=provider_id,
        service_tier=hold_tier(request.service_tier),
        at=at,
    )
    return Estimate(
        prompt_tokens=min(prompt, HOLD_CEILING),
        output_tokens=min(output, HOLD_CEILING),
        cost_nanos=min(cost, HOLD_CEILING),
    )


def affordable_max_output(
    request: CallRequest,
    estimate: Estimate,
    room_nanos: int,
    minimum: int,
    *,
    provider_id: str,
    pricer: Pricer = _PUBLISHED_PRICES,
) -> int | None:
    """A lower max output per choice whose worst case fits ``room_nanos``, or None when the
    call already fits or not even ``minimum`` does (then it is held, or refused, as it is)."""
    wanted = max_output_per_choice(request, provider_id=provider_id, pricer=pricer)
    at = datetime.now(UTC)

    def cost(per_choice: int) -> int:
        return estimate_with_output(
            request, estimate.prompt_tokens, per_choice, provider_id=provider_id, at=at,
            pricer=pricer,
        ).cost_nanos  # fmt: skip

    capped = affordable_output(cost, room_nanos, wanted, minimum)
    return capped if capped is not None and capped < wanted else None


def actual_cost(
    usage: MeteredUsage,
    requested_model: str,
    *,
    provider_id: str,
    at: datetime,
    pricer: Pricer = _PUBLISHED_PRICES,
) -> int:
    """The exact cost of reported usage: the host's own figure where it gives one (OpenRouter,
    xAI), else the usage priced: by an operator's override for either model name, else the
    response's model id first (it names the snapshot actually billed), then the requested one.
    Raises UnknownModel."""
    if usage.reported_cost_nanos is not None:
        return usage.reported_cost_nanos
    candidates = list(dict.fromkeys(m for m in (usage.model, requested_model) if m))
    # An operator's own price for either name is what the operator pays: it goes first.
    candidates.sort(key=lambda model: model not in pricer.overrides)
    for model in candidates:
        try:
            return pricer.cost_nanos(
                usage.tokens, model, provider_id=provider_id, service_tier=usage.service_tier, at=at
            )
        except UnknownModel:
            continue
    raise UnknownModel(f"no price is known for model {usage.model or requested_model!r}")
