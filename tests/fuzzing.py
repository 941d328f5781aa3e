"""What the fuzz tests share: one bounded hypothesis profile, hostile JSON, mutations of valid
bodies, and a valid request for every metered route.

The profile keeps ``scripts/test`` fast (each property runs a bounded number of examples);
``SPENDBRAKE_FUZZ_EXAMPLES=5000`` runs the same properties for longer by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from spendbrake.providers import ANTHROPIC, AZURE, COMPATIBLE, GEMINI, OPENAI, classify_route
from spendbrake.providers.base import Api

settings.register_profile(
    "spendbrake-fuzz",
    max_examples=int(os.environ.get("SPENDBRAKE_FUZZ_EXAMPLES", "60")),
    deadline=None,  # a 1 MB body or a cold tokenizer is slow once; speed is not the property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("SPENDBRAKE_FUZZ_RANDOM") is None,  # the same run every time
)
FUZZ = settings.get_profile("spendbrake-fuzz")

# -- hostile JSON values --------------------------------------------------------------------------

HOSTILE_NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63, -(2**63), 2**64, 10**30, -(10**30)]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "\ud800",  # a lone surrogate: valid in JSON (as \\ud800), not in UTF-8
            "a\udfffb",
            "\x00",
            "<|endoftext|>",
            "𝕳é東🚀\u200b\u202e",
            "usage",
            '"usage": {',
            "model",
            "data: {}\n\n",
        ]
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    ),
    max_leaves=12,
)

# A placeholder that serialization replaces by nesting deeper than Python's recursion limit.
_DEEP = "\x00spendbrake-deep\x00"
_DEEP_JSON = json.dumps(_DEEP).encode()


def dumps(value: Any, *, ascii_only: bool = True, deep: int = 3000) -> bytes:
    """JSON as a careless or hostile client might send it: NaN and Infinity allowed, lone
    surrogates raw (not UTF-8) unless escaped, and any ``_DEEP`` placeholder nested ``deep``
    arrays deep."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    data = text.encode("utf-8", "surrogatepass")
    return data.replace(_DEEP_JSON, b"[" * deep + b"]" * deep)


# -- mutations of a valid value -------------------------------------------------------------------

Path = tuple[str | int, ...]


def paths_of(value: Any, prefix: Path = ()) -> list[Path]:
    """Every node's path in ``value``, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, (*prefix, index))
    return found


def _replaced(value: Any, path: Path, change: Callable[[Any], Any | None]) -> Any:
    """``value`` with the node at ``path`` changed; a change that returns ``_DELETE`` removes it."""
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        new = _replaced(copy[head], rest, change)
        if new is _DELETE:
            del copy[head]
        else:
            copy[head] = new
        return copy
    assert isinstance(head, int)
    copy_list = list(value)
    new = _replaced(copy_list[head], rest, change)
    if new is _DELETE:
        del copy_list[head]
    else:
        copy_list[head] = new
    return copy_list


_DELETE = object()

MUTATIONS = ("delete", "replace", "deep", "wrap", "duplicate", "negate")


@st.composite
def mutated(draw: st.DrawFn, value: Any, *, most: int = 3) -> Any:
    """``value`` with one to ``most`` nodes deleted, retyped, negated, wrapped or nested deep."""
    for _ in range(draw(st.integers(1, most))):
        path = draw(st.sampled_from(paths_of(value)))
        operation = draw(st.sampled_from(MUTATIONS))
        change: Callable[[Any], Any]
        if operation == "delete" and path:
            change = lambda _node: _DELETE  # noqa: E731
        elif operation == "deep":
            change = lambda _node: _DEEP  # noqa: E731
        elif operation == "wrap":
            change = lambda node: [node]  # noqa: E731
        elif operation == "duplicate":
            change = _duplicated
        elif operation == "negate":
            change = _negated
        else:
            replacement = draw(JSON_VALUES)
            change = lambda _node, r=replacement: r  # noqa: E731
        value = _replaced(value, path, change)
    return value


def _duplicated(node: Any) -> Any:
    return {**node, "": node} if isinstance(node, dict) else [node, node]


def _negated(node: Any) -> Any:
    if isinstance(node, bool):
        return not node
    if isinstance(node, int | float):
        return -node - 1
    return node


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, or with bytes flipped, inserted or removed."""
    operation = draw(st.sampled_from(("truncate", "flip", "insert", "remove")))
    at = draw(st.integers(0, len(data)))
    if operation == "truncate":
        return data[:at]
    if operation == "flip" and at < len(data):
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if operation == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data[:at] + data[at + 2 :]


@st.composite
def hostile_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """A request body: random bytes, a random JSON value, or ``valid`` mutated (as JSON or as
    bytes)."""
    kind = draw(st.sampled_from(("bytes", "json", "mutated", "mutated", "mutated", "byte")))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return dumps(draw(JSON_VALUES))
    if kind == "byte":
        return draw(byte_mutated(dumps(valid)))
    deep = draw(st.sampled_from((10, 3000)))
    return dumps(draw(mutated(valid)), ascii_only=draw(st.booleans()), deep=deep)


# -- a valid request for every metered route ------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A metered route: its API, a valid request and a valid answer."""

    name: str
    api: Api = field(repr=False)
    host: str = field(repr=False)
    path: str = field(repr=False)
    body: dict[str, Any] = field(repr=False)
    response: Any = field(repr=False)  # a valid response body with usage, as parsed JSON

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self.name))  # hypothesis prints failing cases with this: the name only


def _api(provider: Any, path: str) -> Api:
    route = classify_route(provider, "POST", path)
    assert route.api is not None, path
    return route.api


_CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "name": "ada",
            "content": [
                {"type": "text", "text": "What is in this image? Héllo 東京 🚀"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "max_completion_tokens": 50,
    "n": 2,
    "stream": True,
    "stream_options": {"include_usage": False},
    "service_tier": "auto",
    "modalities": ["text"],
}
_LEGACY = {
    "model": "gpt-3.5-turbo-instruct",
    "prompt": ["Say this", "and that"],
    "suffix": "end",
    "max_tokens": 20,
    "n": 2,
    "best_of": 3,
}
_RESPONSES = {
    "model": "gpt-4.1",
    "instructions": "Be brief.",
    "input": [
        "plain",
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ],
    "tools": [{"type": "function", "name": "f"}],
    "max_output_tokens": 40,
    "stream": True,
}
_EMBEDDINGS = {"model": "text-embedding-3-small", "input": ["one", "two"]}
_MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                {"type": "document", "source": {"type": "base64", "data": "SGVsbG8="}},
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text"}]},
            ],
        },
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "thinking": {"type": "enabled", "budget_tokens": 16},
    "stream": True,
}
_GENERATE = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"data": "AAAA"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
    ],
    "tools": [{"functionDeclarations": [{"name": "f"}]}],
    "generationConfig": {"maxOutputTokens": 30, "candidateCount": 1},
}
_COMPLETION = {
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 9,
        "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 4},
    },
}
_OPENROUTER_COMPLETION = {
    **_COMPLETION,
    "model": "anthropic/claude-sonnet-4.5",
    "usage": {
        **_COMPLETION["usage"],  # type: ignore[dict-item]
        "cost": 0.00012,
        "is_byok": True,
        "cost_details": {"upstream_inference_cost": 0.0004},
        "cost_in_usd_ticks": 1_200_000,
    },
    "x_groq": {"usage": {"prompt_tokens": 1}},
}
_RESPONSE = {
    "id": "resp_1",
    "model": "gpt-4.1-2025-04-14",
    "service_tier": "default",
    "usage": {
        "input_tokens": 37,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 1},
    },
}
_EMBEDDING = {"model": "text-embedding-3-small", "usage": {"prompt_tokens": 5, "total_tokens": 5}}
_MESSAGE = {
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "input_tokens": 25,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 10,
        "cache_creation": {"ephemeral_1h_input_tokens": 7, "ephemeral_5m_input_tokens": 0},
        "output_tokens": 12,
        "service_tier": "standard",
    },
}
_GENERATED = {
    "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
    "usageMetadata": {
        "promptTokenCount": 9,
        "cachedContentTokenCount": 2,
        "toolUsePromptTokenCount": 3,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 4,
    },
    "modelVersion": "gemini-2.5-flash",
}
_OPENROUTER = next(p for p in COMPATIBLE if p.id == "openrouter")

ROUTES = (
    Route("openai chat", _api(OPENAI, "/v1/chat/completions"), "api.openai.com",
          "/v1/chat/completions", _CHAT, _COMPLETION),
    Route("openai legacy", _api(OPENAI, "/v1/completions"), "api.openai.com", "/v1/completions",
          _LEGACY, _COMPLETION),
    Route("openai responses", _api(OPENAI, "/v1/responses"), "api.openai.com", "/v1/responses",
          _RESPONSES, _RESPONSE),
    Route("openai embeddings", _api(OPENAI, "/v1/embeddings"), "api.openai.com",
          "/v1/embeddings", _EMBEDDINGS, _EMBEDDING),
    Route("anthropic messages", _api(ANTHROPIC, "/v1/messages"), "api.anthropic.com",
          "/v1/messages", _MESSAGES, _MESSAGE),
    Route("gemini generate", _api(GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent"),
          "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-flash:generateContent",
          _GENERATE, _GENERATED),
    Route("gemini stream",
          _api(GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
          "generativelanguage.googleapis.com",
          "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", _GENERATE,
          [_GENERATED, _GENERATED]),
    Route("azure deployment chat",
          _api(AZURE, "/openai/deployments/gpt-4o-mini/chat/completions"), "x.openai.azure.com",
          "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
          {k: v for k, v in _CHAT.items() if k != "model"}, _COMPLETION),
    Route("azure v1 responses", _api(AZURE, "/openai/v1/responses"), "x.openai.azure.com",
          "/openai/v1/responses", _RESPONSES, _RESPONSE),
    Route("openrouter chat", _api(_OPENROUTER, "/api/v1/chat/completions"), "openrouter.ai",
          "/api/v1/chat/completions", {**_CHAT, "model": "anthropic/claude-sonnet-4.5"},
          _OPENROUTER_COMPLETION),
)  # fmt: skip
ROUTE_IDS = [route.name for route in ROUTES]
BY_NAME = {route.name: route for route in ROUTES}
# A property drawn over every route runs its examples over all of them.
ALL_ROUTES = settings(FUZZ, max_examples=FUZZ.max_examples * len(ROUTES))


def on_every_route[T](
    strategy_for: Callable[[Route], st.SearchStrategy[T]],
) -> st.SearchStrategy[tuple[Route, T]]:
    """A route, and a value drawn for it."""
    return st.sampled_from(ROUTES).flatmap(
        lambda route: strategy_for(route).map(lambda value: (route, value))
    )
