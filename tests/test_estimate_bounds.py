"""For every model in pricing/max_output.toml, the hold is never below the worst bill.

Each case is a realistic request (a system prompt, a tool, with and without a max output) parsed
by the host's own adapter and estimated by the governor, then the worst response that host could
send for it, in its own usage JSON, metered by the same adapter and priced as a settlement is:

- output at the full max output: the request's, or else the model's documented limit, which is
  read independently of the table (pinned below, or genai-prices' context window), so an entry
  lowered below what the model can bill fails here;
- reasoning or thought tokens inside that output, as every one of these APIs counts them;
- the prompt as the host counts it: tiktoken's count for OpenAI's models, more for the others,
  by the ratios of shared/reference/providers.md §2.6 (Claude up to 1.45x, 2.99x on a run of one
  letter; Gemini and the other families 1.2x);
- with a cache_control, every prompt token written to the cache.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendbrake import governor
from spendbrake.ledger import TokenCounts
from spendbrake.money import usd_to_nanos
from spendbrake.pricing import pricing_dir
from spendbrake.providers import PROVIDERS, RouteKind, classify_route
from spendbrake.providers.base import Api, CallRequest
from spendbrake.tokens import TokenEstimator, encoding_for_model

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
TABLE = tomllib.loads((pricing_dir() / "max_output.toml").read_text())
REGISTRY = {provider.id: provider for provider in PROVIDERS}
SNAPSHOT = get_snapshot()

# Output limits whose source is not genai-prices' data, as documented (reference §4, OpenAI's model
# pages): an entry below its figure here under-holds. A new entry from such a source is pinned here.
DOCUMENTED: dict[str, int] = {
    **dict.fromkeys(("gpt-4o", "gpt-4o-mini", "chatgpt-4o-latest"), 16_384),
    **dict.fromkeys(("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"), 32_768),
    **dict.fromkeys(("o1", "o3", "o3-mini", "o4-mini"), 100_000),
    **dict.fromkeys(
        (
            *("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.1-codex-mini", "gpt-5.2"),
            *("gpt-5.3", "gpt-5.3-codex", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.5"),
            *("gpt-5.6-luna", "gpt-5.6-sol", "gpt-5.6-terra"),
        ),
        128_000,
    ),
    "gpt-4-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 4_096,
    **dict.fromkeys(("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"), 64_000),
    **dict.fromkeys(
        (
            *("anthropic/claude-haiku-4.5", "anthropic/claude-sonnet-4.5"),
            "anthropic/claude-opus-4.5",
        ),
        64_000,
    ),
    **dict.fromkeys(
        (
            *("claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8"),
            *("claude-sonnet-5", "claude-opus-5", "anthropic/claude-sonnet-4.6"),
            *("anthropic/claude-opus-4.6", "anthropic/claude-opus-4.7"),
            "anthropic/claude-opus-4.8",
        ),
        128_000,
    ),
    **dict.fromkeys(
        (
            *(
                "gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-2.5-flash-lite",
                "gemini-3-pro-preview",
            ),
            *("gemini-3-flash-preview", "gemini-3.1-pro-preview", "gemini-3.1-flash-lite"),
            *("gemini-3.5-flash", "gemini-3.5-flash-lite", "gemini-3.6-flash", "gemini-3.7-flash"),
            "gemini-3.8-flash",
        ),
        65_536,
    ),
    "gemini-2.0-flash": 8_192,
    **dict.fromkeys(("mistral-large-latest", "mistral-small-latest"), 262_144),
    **dict.fromkeys(("deepseek-v4-pro", "deepseek-v4-flash"), 393_216),
    **dict.fromkeys(("grok-4", "grok-4.20", "grok-4.20-multi-agent-0309", "grok-4.3"), 1_000_000),
    "openai/gpt-oss-120b": 65_536,  # at Groq
}

_OPENAI_FAMILY = re.compile(r"^(?:gpt-|chatgpt-|o\d|codex-)")


@dataclass(frozen=True)
class Case:
    provider_id: str
    model: str  # as the request names it
    api: str  # "chat", "responses", "messages" or "generate"
    documented_max: int  # the most output the model can bill

    def __str__(self) -> str:
        return f"{self.provider_id}:{self.model}:{self.api}"


def context_window(model: str, provider_id: str) -> int | None:
    """genai-prices' context window for the model at the host, else under its maker's name."""
    for name, provider in ((model, provider_id), (model.rpartition("/")[2], None)):
        try:
            window = SNAPSHOT.find_provider_model(name, None, provider, None)[1].context_window
        except LookupError:
            continue
        if window:
            return window
    return None


def documented_max(key: str, entry: dict[str, Any], provider_id: str) -> int:
    if str(entry["source"]).startswith("genai-prices"):
        window = context_window(key, provider_id)
        assert window, f"{key}: its source is genai-prices' context window, which has none for it"
        return window
    assert key in DOCUMENTED, f"{key}: pin its documented max output in DOCUMENTED"
    return DOCUMENTED[key]


def own_list_has(provider_id: str, model: str) -> bool:
    provider = next(p for p in SNAPSHOT.providers if p.id == provider_id)
    return provider.find_model(model) is not None  # without other providers' fallbacks


def home_of(model: str) -> str:
    """The registry provider that serves ``model`` under this name: its maker."""
    try:
        maker = SNAPSHOT.find_provider_model(model, None, None, None)[0].id
    except LookupError:
        maker = None
    if maker in REGISTRY and (maker != "google" or model.startswith(("gemini", "gemma"))):
        return maker
    homes = [p for p in REGISTRY if p not in ("azure", "openrouter") and own_list_has(p, model)]
    assert homes, f"{model}: no registry provider's genai-prices list has it"
    return homes[0]


def router_names() -> dict[str, str]:
    """OpenRouter's "vendor/model" ids by the model's own name."""
    router = next(p for p in SNAPSHOT.providers if p.id == "openrouter")
    return {m.id.rpartition("/")[2]: m.id for m in router.models if m.is_match(m.id)}


APIS = {"openai": ("chat", "responses"), "anthropic": ("messages",), "google": ("generate",)}


def cases() -> list[Case]:
    found: list[Case] = []
    routed = router_names()
    router_own = TABLE["hosts"].get("openrouter", {})
    for key, entry in TABLE["models"].items():
        home = home_of(key)
        limit = documented_max(key, entry, home)
        found += [Case(home, key, api, limit) for api in APIS.get(home, ("chat",))]
        if own_list_has("azure", key):
            found.append(Case("azure", key, "chat", limit))  # a deployment named after it
        if key in routed and routed[key] not in router_own:
            found.append(Case("openrouter", routed[key], "chat", limit))
    for provider_id, entries in TABLE["hosts"].items():
        for key, entry in entries.items():
            limit = documented_max(key, entry, provider_id)
            found.append(Case(provider_id, key, "chat", limit))
    return found


CASES = cases()

SYSTEM = "You are a careful assistant. Answer in the user's language and cite your sources."
TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "e.g. Zürich"}},
        "required": ["city"],
    },
}
TEXTS = (
    "What should I pack for three days in Lisbon in March? Keep it short.",
    "a" * 3000,  # one letter repeated: Claude's tokenizer counts ~3x tiktoken here
    "東京の天気はどうですか。明日の予定を教えてください。" * 20,
    "Какая погода будет завтра в Москве? Ответь подробно. " * 20,
    "def f(x):\n    return [i * i for i in range(x) if i % 3]\n" * 30,
)


def build_request(
    case: Case, text: str, max_output: int | None, cache_ttl: str | None
) -> tuple[Api, bytes, str]:
    """The body an SDK sends for ``case``, its path, and the adapter the registry routes it to."""
    body: dict[str, Any]
    if case.api == "messages":
        system: dict[str, Any] = {"type": "text", "text": SYSTEM}
        if cache_ttl:
            system["cache_control"] = {"type": "ephemeral", "ttl": cache_ttl}
        tool = {k: v for k, v in TOOL.items() if k != "parameters"}
        body = {
            "model": case.model,
            "max_tokens": max_output,
            "system": [system],
            "messages": [{"role": "user", "content": text}],
            "tools": [{**tool, "input_schema": TOOL["parameters"]}],
        }
        path = "/v1/messages"
    elif case.api == "generate":
        body = {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "tools": [{"functionDeclarations": [TOOL]}],
        }
        if max_output is not None:
            body["generationConfig"] = {"maxOutputTokens": max_output}
        path = f"/v1beta/models/{case.model}:generateContent"
    elif case.api == "responses":
        body = {
            "model": case.model,
            "instructions": SYSTEM,
            "input": text,
            "tools": [{"type": "function", **TOOL}],
        }
        if max_output is not None:
            body["max_output_tokens"] = max_output
        path = "/v1/responses"
    else:
        body = {
            "model": case.model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            "tools": [{"type": "function", "function": TOOL}],
        }
        if max_output is not None:
            body["max_completion_tokens" if case.provider_id == "openai" else "max_tokens"] = (
                max_output
            )
        provider = REGISTRY[case.provider_id]
        path = next(iter(provider.metered), "")
        if case.provider_id == "azure":
            del body["model"]
            path = f"/openai/deployments/{case.model}/chat/completions?api-version=2024-10-21"
    route = classify_route(REGISTRY[case.provider_id], "POST", path)
    assert route.kind is RouteKind.METERED, path
    assert route.api is not None
    return route.api, json.dumps(body, ensure_ascii=False).encode(), path


def _letter_run(text: str) -> bool:
    return len(set(text)) == 1 and text[0].isascii() and text[0].isalpha()


def host_prompt_tokens(request: CallRequest, estimator: TokenEstimator, host_model: str) -> int:
    """The prompt as the host's own tokenizer counts it (reference §2.6)."""
    name = host_model.rpartition("/")[2].lower()
    total = Fraction(0)
    for text in request.prompt_texts:
        counted = estimator.count(text, request.model)
        if request.tokenizer == "claude" or name.startswith("claude"):
            ratio = Fraction(299, 100) if _letter_run(text) else Fraction(145, 100)
        elif request.tokenizer == "openai" and _OPENAI_FAMILY.match(name):
            ratio = Fraction(1)  # tiktoken is OpenAI's own tokenizer
        else:
            ratio = Fraction(6, 5)  # Gemini, Mistral, DeepSeek, Llama, Grok, Qwen...
        total += counted * ratio
    return request.fixed_prompt_tokens + math.ceil(total)


def listed_price_nanos(tokens: TokenCounts, model: str, provider_id: str) -> int:
    """What a host that reports its own cost (OpenRouter, xAI) bills: its listed price, read the
    slow way through genai-prices."""
    usage = genai_prices.Usage(input_tokens=tokens.input_tokens, output_tokens=tokens.output_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return usd_to_nanos(
            genai_prices.calc_price(usage, model, provider_id=provider_id).total_price
        )


def worst_response(
    case: Case, prompt: int, output: int, cache_ttl: str | None
) -> dict[str, Any] | list[Any]:
    """The response billing the most ``case``'s host can bill, in its own JSON."""
    reasoning = output // 2
    if case.api == "messages":
        written = prompt if cache_ttl else 0
        return {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": case.model,
            "content": [{"type": "text", "text": "…"}],
            "stop_reason": "max_tokens",
            "usage": {
                "input_tokens": prompt - written,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": 0,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written if cache_ttl == "5m" else 0,
                    "ephemeral_1h_input_tokens": written if cache_ttl == "1h" else 0,
                },
                "output_tokens": output,  # thinking included: it is part of max_tokens
            },
        }
    if case.api == "generate":
        return [  # as a streamed JSON array, buffered: the last usageMetadata is the total
            {"candidates": [{"content": {"parts": [{"text": "…"}], "role": "model"}}]},
            {
                "candidates": [
                    {"content": {"parts": [{"text": "…"}]}, "finishReason": "MAX_TOKENS"}
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": output - reasoning,
                    "thoughtsTokenCount": reasoning,  # thoughts count against maxOutputTokens
                    "totalTokenCount": prompt + output,
                },
                "modelVersion": case.model,
            },
        ]
    if case.api == "responses":
        return {
            "id": "resp_0bounds",
            "object": "response",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "model": case.model,
            "service_tier": "default",
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + output,
            },
        }
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    billed = TokenCounts(input_tokens=prompt, output_tokens=output)
    if case.provider_id == "x-ai":
        usage["completion_tokens"] = output - reasoning  # xAI counts reasoning apart
        nanos = listed_price_nanos(billed, case.model, "x-ai")
        usage["cost_in_usd_ticks"] = nanos * 10
    elif case.provider_id == "openrouter":
        nanos = listed_price_nanos(billed, case.model, "openrouter")
        usage["cost"] = float(Decimal(nanos) / 1_000_000_000)
        usage["is_byok"] = False
    elif case.provider_id == "deepseek":
        usage["prompt_cache_hit_tokens"] = 0
        usage["prompt_cache_miss_tokens"] = prompt
    return {
        "id": "chatcmpl-bounds",
        "object": "chat.completion",
        "model": case.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "…"},
                "finish_reason": "length",
            }
        ],
        "usage": usage,
        "service_tier": "default",
    }


class RememberingEstimator(TokenEstimator):
    """The real estimator, remembering its counts: the same texts come back for every model."""

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[tuple[str, str], int] = {}

    def count(self, text: str, model: str) -> int:
        key = (text, encoding_for_model(model))
        if key not in self._counts:
            self._counts[key] = super().count(text, model)
        return self._counts[key]


@pytest.fixture(scope="module")
def estimator() -> TokenEstimator:
    return RememberingEstimator()


def check(
    case: Case,
    estimator: TokenEstimator,
    text: str,
    *,
    explicit: bool,
    cache_ttl: str | None = None,
) -> None:
    max_output = case.documented_max if explicit or case.api == "messages" else None
    api, body, path = build_request(case, text, max_output, cache_ttl)
    request = api.parse(body, path)
    hold = governor.estimate_call(request, estimator, provider_id=case.provider_id, at=NOW)

    prompt = host_prompt_tokens(request, estimator, case.model)
    response = worst_response(case, prompt, case.documented_max, cache_ttl)
    usage = api.usage_from_json(response)
    assert usage is not None
    actual = governor.actual_cost(usage, request.model, provider_id=case.provider_id, at=NOW)
    assert hold.cost_nanos >= actual, (
        f"{case} holds {hold.cost_nanos} nanos ({hold.prompt_tokens} prompt, "
        f"{hold.output_tokens} output) for a bill of {actual} ({prompt} prompt, "
        f"{case.documented_max} output)"
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_hold_covers_the_worst_bill(case: Case, estimator: TokenEstimator) -> None:
    for text in TEXTS:
        check(case, estimator, text, explicit=True)
        if case.api != "messages":  # Anthropic requires max_tokens
            check(case, estimator, text, explicit=False)
        else:
            check(case, estimator, text, explicit=True, cache_ttl="5m")
            check(case, estimator, text, explicit=True, cache_ttl="1h")


TEXT = st.one_of(
    st.text(min_size=1, max_size=400),
    st.text(alphabet="中文日本語한국어ไทยالعربيةहिन्दीΕλληνικά Привет", min_size=1, max_size=400),
    st.builds(lambda c, n: c * n, st.sampled_from("a0 .xé中"), st.integers(1, 4000)),
    st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3).map(" ".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(CASES),
    text=TEXT,
    explicit=st.booleans(),
    ttl=st.sampled_from([None, "5m", "1h"]),
)
def test_the_hold_covers_the_worst_bill_for_any_prompt(
    case: Case, text: str, explicit: bool, ttl: str | None, estimator: TokenEstimator
) -> None:
    check(
        case, estimator, text, explicit=explicit, cache_ttl=ttl if case.api == "messages" else None
    )


def test_every_registry_provider_has_cases() -> None:
    assert {case.provider_id for case in CASES} == set(REGISTRY)


# Long-context tiers: genai-prices prices every token at the dearer rate once the prompt passes a
# threshold (200k for Gemini Pro and Claude Sonnet 4.5, 272k for GPT-5.4+, 100k for Haiku 5.5).


def tier_start(case: Case) -> int | None:
    """Where the case's input price turns dearer at its host, if it does."""
    try:
        info = SNAPSHOT.find_provider_model(case.model, None, case.provider_id, None)[1]
    except LookupError:
        return None
    price = info.get_prices(NOW).input_mtok
    return price.tiers[0].start if isinstance(price, TieredPrices) else None


TIERED = [case for case in CASES if case.api != "responses" and tier_start(case) is not None]


def test_the_tiered_models_are_found() -> None:
    found = {(case.provider_id, case.model) for case in TIERED}
    assert {("google", "gemini-2.5-pro"), ("anthropic", "claude-sonnet-4-5")} <= found
    assert {("openai", "gpt-5.4"), ("x-ai", "grok-4.3"), ("anthropic", "claude-haiku-5-5")} <= found
    assert ("openrouter", "google/gemini-2.5-pro") in found


def at_prompt(case: Case, prompt: int, max_output: int) -> CallRequest:
    return CallRequest(
        model=case.model,
        stream=False,
        max_output=max_output,
        choices=1,
        service_tier=None,
        prompt_texts=(),
        fixed_prompt_tokens=prompt,
    )


@pytest.mark.parametrize("case", TIERED, ids=str)
def test_a_tiered_model_is_held_at_the_tier_its_prompt_bound_falls_in(
    case: Case, estimator: TokenEstimator
) -> None:
    start = tier_start(case)
    assert start is not None
    out = min(case.documented_max, 8_192)

    def hold(prompt: int) -> int:
        request = at_prompt(case, prompt, out)
        return governor.estimate_call(
            request, estimator, provider_id=case.provider_id, at=NOW
        ).cost_nanos

    def bill(prompt: int) -> int:
        api, _, _ = build_request(case, "x", out, None)
        usage = api.usage_from_json(worst_response(case, prompt, out, None))
        assert usage is not None
        return governor.actual_cost(usage, case.model, provider_id=case.provider_id, at=NOW)

    under, over = hold(start), hold(start + 1)
    assert under == listed_price_nanos(TokenCounts(start, output_tokens=out), *case_at(case))
    assert over == listed_price_nanos(TokenCounts(start + 1, output_tokens=out), *case_at(case))
    assert over > under * 3 // 2  # every token at the dearer rate, not only those past the line
    # A hold just under the line covers every bill the host can send for it: its count of the
    # prompt never passes the bound, so the bill stays under the line too.
    for prompt in (start - 1_000, start - 1, start):
        assert bill(prompt) <= under
    assert bill(start + 1) <= over


def case_at(case: Case) -> tuple[str, str]:
    return case.model, case.provider_id


@pytest.mark.parametrize(
    ("case", "text"),
    [
        # o200k counts 180,000 tokens, under the line; Gemini may count 1.2x, above it.
        (Case("google", "gemini-2.5-pro", "generate", 65_536), "Lorem ipsum dolor sit amet. "),
        (Case("openrouter", "google/gemini-2.5-pro", "chat", 65_536), "Lorem ipsum dolor sit. "),
        # Claude may count 1.45x: 140,000 o200k tokens are ~203,000 of Claude's.
        (Case("anthropic", "claude-sonnet-4-5", "messages", 64_000), "The quick brown fox. "),
        (Case("openrouter", "anthropic/claude-sonnet-4.5", "chat", 64_000), "Jumps over it. "),
    ],
    ids=str,
)
def test_a_prompt_under_the_line_by_tiktoken_but_not_by_the_host_is_held_above_it(
    case: Case, text: str, estimator: TokenEstimator
) -> None:
    target = 180_000 if "gemini" in case.model else 140_000
    repeated = text * (target // estimator.count(text * 100, "gpt-4o") * 100)
    api, body, path = build_request(case, repeated, case.documented_max, None)
    request = api.parse(body, path)
    counted = sum(estimator.count(t, request.model) for t in request.prompt_texts)
    assert counted + request.fixed_prompt_tokens < 200_000
    hold = governor.estimate_call(request, estimator, provider_id=case.provider_id, at=NOW)
    assert hold.prompt_tokens > 200_000  # held at the dearer tier
    prompt = host_prompt_tokens(request, estimator, case.model)
    assert prompt > 200_000  # and billed there
    usage = api.usage_from_json(worst_response(case, prompt, case.documented_max, None))
    assert usage is not None
    actual = governor.actual_cost(usage, request.model, provider_id=case.provider_id, at=NOW)
    assert hold.cost_nanos >= actual
