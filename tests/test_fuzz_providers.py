"""Every provider parser, fed hostile input: it answers, or says the call cannot be metered.

The contract the proxy relies on (``Enforcement._admit``): a request parser returns a
``CallRequest`` or raises ``UnreadableRequest``, which becomes the 400 ``unreadable_request``
refusal. Anything else escaping would be an ``internal_error`` at best, and what a parsed request
goes through next (the estimate, a rewrite, asking for stream usage) must not fail on it either.
A usage parser never raises and never reports a negative count or cost, whatever the provider
sent: the settlement would otherwise leave the hold behind, or credit the budget.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import (
    ALL_ROUTES,
    BY_NAME,
    JSON_VALUES,
    ROUTES,
    Route,
    dumps,
    hostile_bodies,
    mutated,
    on_every_route,
)
from spendbrake import governor
from spendbrake.pricing import UnknownModel
from spendbrake.providers import provider_for_host
from spendbrake.providers.base import (
    MAX_TOKEN_COUNT,
    CallRequest,
    MeteredUsage,
    Rewrite,
    UnreadableRequest,
)
from spendbrake.tokens import TokenEstimator

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
EXACT = TokenEstimator()
# A cache directory that cannot be created: the estimator falls back to its UTF-8 byte bound.
BY_BYTES = TokenEstimator(cache_dir=Path("/dev/null/no-tiktoken-here"))


def provider_id(route: Route) -> str:
    provider = provider_for_host(route.host)
    assert provider is not None
    return provider.id


def parsed_or_unreadable(route: Route, body: bytes, path: str) -> CallRequest | None:
    try:
        request = route.api.parse(body, path)
    except UnreadableRequest:
        return None
    assert_sane(request)
    return request


def assert_sane(request: CallRequest) -> None:
    assert isinstance(request.model, str)
    assert request.model
    assert request.max_output is None or request.max_output >= 0
    assert request.choices >= 1
    assert request.fixed_prompt_tokens >= 0
    assert all(isinstance(text, str) for text in request.prompt_texts)


def assert_estimated(route: Route, request: CallRequest) -> None:
    """What the proxy does with a parsed request before the hold: estimate it, with the real
    tokenizer and with the byte bound. Only an unknown model may stop it (a clean refusal)."""
    for estimator in (EXACT, BY_BYTES):
        try:
            estimate = governor.estimate_call(
                request, estimator, provider_id=provider_id(route), at=NOW
            )
        except UnknownModel:
            continue
        assert estimate.prompt_tokens >= request.fixed_prompt_tokens
        assert estimate.output_tokens >= 0
        assert estimate.cost_nanos >= 0


def assert_rewritable(route: Route, request: CallRequest, body: bytes) -> None:
    """A downgrade, a capped output and injected stream usage all apply to any parsed body,
    and what they produce parses again, as the proxy re-parses it."""
    change = Rewrite(model="gpt-4o-mini", max_output=5)
    body_after, path_after = route.api.rewritten(body, route.path, change)
    again = route.api.parse(body_after, path_after)
    assert again.model == "gpt-4o-mini"
    assert again.max_output == (0 if route.name == "openai embeddings" else 5)
    if request.wants_usage_injection:
        asked = route.api.parse(route.api.with_usage_requested(body), route.path)
        assert not asked.wants_usage_injection


def test_every_sample_request_is_valid() -> None:
    """The mutations start from bodies every parser accepts."""
    for route in ROUTES:
        request = parsed_or_unreadable(route, dumps(route.body), route.path)
        assert request is not None, route.name
        assert_estimated(route, request)
        assert_rewritable(route, request, dumps(route.body))


CHAT = BY_NAME["openai chat"]


@ALL_ROUTES
@given(case=on_every_route(lambda route: hostile_bodies(route.body)))
# Regressions, each an exception other than UnreadableRequest before its fix:
@example(case=(CHAT, b'{"model": "\\ud800", "messages": [{"role": "user"}]}'))
@example(case=(CHAT, b'{"model": "gpt-4o-mini", "messages": [{"content": "\\ud83d"}]}'))
@example(case=(CHAT, b'{"model": "gpt-4o-mini", "messages": [{}], "x": "\\ud83d", "stream": true}'))
@example(case=(BY_NAME["gemini generate"], b'{"contents": [{"parts": [{"text": "\\ud83d"}]}]}'))
@example(case=(CHAT, b'{"model": "gpt-4o-mini", "messages": [{}], "modalities": 5}'))
def test_a_hostile_request_body_is_metered_or_refused_as_unreadable(
    case: tuple[Route, bytes],
) -> None:
    route, body = case
    request = parsed_or_unreadable(route, body, route.path)
    if request is not None:
        assert_estimated(route, request)
        assert_rewritable(route, request, body)


def hostile_paths(route: Route) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=60).map(lambda text: route.path + text),
        st.text(max_size=60).map(lambda text: route.path.replace("gemini-2.5-flash", text)),
        st.text(max_size=60).map(lambda text: route.path.replace("gpt-4o-mini", text)),
    )


@ALL_ROUTES
@given(case=on_every_route(hostile_paths))
def test_a_hostile_path_is_metered_or_refused_as_unreadable(case: tuple[Route, str]) -> None:
    """The path carries the model (Gemini) or the deployment (Azure)."""
    route, path = case
    request = parsed_or_unreadable(route, dumps(route.body), path)
    if request is not None:
        assert_estimated(route, request)


# -- usage --------------------------------------------------------------------------------------


def assert_usage_sane(route: Route, usage: MeteredUsage | None) -> None:
    """Never negative, and never beyond what the ledger's 64-bit integers can record."""
    if usage is None:
        return
    for field in fields(usage.tokens):
        count = getattr(usage.tokens, field.name)
        assert isinstance(count, int)
        assert 0 <= count <= 3 * MAX_TOKEN_COUNT, field.name  # a sum of at most three counts
    assert usage.tokens.cache_write_1h_tokens <= usage.tokens.cache_write_tokens
    assert usage.reported_cost_nanos is None or 0 <= usage.reported_cost_nanos < 2**63
    assert usage.model is None or isinstance(usage.model, str)
    try:
        cost = governor.actual_cost(usage, "gpt-4o-mini", provider_id=provider_id(route), at=NOW)
    except UnknownModel:
        return
    assert 0 <= cost < 2**63


def response_json(route: Route) -> st.SearchStrategy[Any]:
    """What ``json.loads`` may make of a provider's answer: anything, or the valid answer
    mutated (NaN and Infinity parse; nesting stays below the JSON parser's own limit)."""
    mutated_answer = mutated(route.response).map(lambda value: json.loads(dumps(value, deep=400)))
    return st.one_of(JSON_VALUES, mutated_answer, mutated_answer)


# Found by the stream fuzzing: priced at a negative cost before usage was made billable.
RESPONSES_MORE_CACHED_THAN_INPUT = {
    "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 50}},
}


@ALL_ROUTES
@given(case=on_every_route(response_json))
# Regressions, each an exception before its fix:
@example(case=(CHAT, {"x_groq": "not an object"}))
@example(case=(CHAT, {"usage": {"cost": float("inf")}}))
@example(case=(CHAT, {"usage": {"prompt_tokens": 10**30, "total_tokens": 10**40}}))
@example(case=(BY_NAME["openrouter chat"], {"usage": {"cost_in_usd_ticks": 10**40}}))
@example(case=(BY_NAME["openai responses"], RESPONSES_MORE_CACHED_THAN_INPUT))
@example(
    case=(CHAT, {"usage": {"prompt_tokens": 0, "prompt_tokens_details": {"cached_tokens": 9}}})
)
def test_usage_from_a_hostile_answer_is_none_or_never_negative(case: tuple[Route, Any]) -> None:
    route, obj = case
    assert_usage_sane(route, route.api.usage_from_json(obj))


def test_every_sample_answer_has_usage() -> None:
    for route in ROUTES:
        usage = route.api.usage_from_json(route.response)
        assert usage is not None, route.name
        assert usage.tokens.input_tokens > 0, route.name
        assert_usage_sane(route, usage)


def test_a_deployment_body_that_mentions_model_without_naming_one_is_read() -> None:
    """Found while writing these tests: a body without a model whose text said "model" (a tool's
    parameter, here) was refused as having no model."""
    route = BY_NAME["azure deployment chat"]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"model": {}}}}
    body = dumps({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert route.api.parse(body, route.path).model == "gpt-4o-mini"  # the deployment


def test_a_v1_body_keeps_the_model_it_names() -> None:
    route = BY_NAME["azure v1 responses"]
    assert route.api.parse(dumps(route.body), route.path).model == "gpt-4.1"
