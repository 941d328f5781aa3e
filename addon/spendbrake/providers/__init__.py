"""The provider registry: which hosts are LLM hosts, and which routes on them cost money.

Only hosts listed here are TLS-intercepted; every other host is tunnelled untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

from spendbrake.providers import (
    anthropic,
    azure,
    gemini,
    openai,
    openai_embeddings,
    openai_responses,
)
from spendbrake.providers.base import Api


class RouteKind(Enum):
    METERED = "metered"  # costs money: estimated, held, priced
    FREE = "free"  # costs nothing (listing models, counting tokens): passes unmetered
    UNKNOWN = "unknown"  # not understood: refused, because it might cost money


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    api: Api | None = None


@dataclass(frozen=True)
class Provider:
    id: str
    hosts: frozenset[str]
    metered: Mapping[str, Api]  # path of a POST route → the API that meters it
    error_body: Callable[[int, str, str], dict[str, Any]]  # the provider's own error shape
    free_posts: frozenset[str] = field(default_factory=frozenset)  # POSTs that cost nothing
    # For providers whose routes name the model (Gemini): decides before the tables above.
    classify: Callable[[str, str], Route | None] | None = None
    host_suffixes: tuple[str, ...] = ()  # for hosts named per customer (Azure)


OPENAI = Provider(
    id=openai.PROVIDER_ID,
    hosts=openai.HOSTS,
    metered={
        openai.CHAT_COMPLETIONS: openai.ChatCompletions(),
        openai.COMPLETIONS: openai.LegacyCompletions(),
        openai_responses.RESPONSES: openai_responses.Responses(),
        openai_embeddings.EMBEDDINGS: openai_embeddings.Embeddings(),
    },
    error_body=openai.error_body,
    # Counting a Responses input is free.
    free_posts=frozenset({"/v1/responses/input_tokens"}),
)
ANTHROPIC = Provider(
    id=anthropic.PROVIDER_ID,
    hosts=anthropic.HOSTS,
    metered={anthropic.MESSAGES: anthropic.Messages()},
    error_body=anthropic.error_body,
    free_posts=frozenset({anthropic.COUNT_TOKENS}),
)


def _compatible(
    provider_id: str, host: str, *paths: str, ask_for_stream_usage: bool = True
) -> Provider:
    """A host that speaks OpenAI's Chat Completions dialect (reference §3.6)."""
    return Provider(
        id=provider_id,
        hosts=frozenset({host}),
        metered={
            path: openai.ChatCompletions(
                path, ask_for_stream_usage=ask_for_stream_usage, max_output_field="max_tokens"
            )
            for path in paths
        },
        error_body=openai.error_body,
    )


# Mistral reports usage in its last chunk unasked; Perplexity's acceptance of stream_options is
# undocumented, so neither is sent a field it might reject.
COMPATIBLE: tuple[Provider, ...] = (
    _compatible("mistral", "api.mistral.ai", "/v1/chat/completions", ask_for_stream_usage=False),
    _compatible("groq", "api.groq.com", "/openai/v1/chat/completions"),
    _compatible("deepseek", "api.deepseek.com", "/chat/completions", "/v1/chat/completions"),
    _compatible("x-ai", "api.x.ai", "/v1/chat/completions"),
    _compatible("openrouter", "openrouter.ai", "/api/v1/chat/completions"),
    _compatible("together", "api.together.xyz", "/v1/chat/completions"),
    _compatible("fireworks", "api.fireworks.ai", "/inference/v1/chat/completions"),
    _compatible(
        "perplexity",
        "api.perplexity.ai",
        "/chat/completions",
        "/v1/chat/completions",
        ask_for_stream_usage=False,
    ),
)
_GEMINI_APIS = {
    gemini.GENERATE: gemini.Generate(gemini.GENERATE),
    gemini.STREAM_GENERATE: gemini.Generate(gemini.STREAM_GENERATE),
}


def _classify_gemini(method: str, path: str) -> Route | None:
    route = gemini.model_of(path)
    if method != "POST" or route is None:
        return None
    _, api_method = route
    if api_method in _GEMINI_APIS:
        return Route(RouteKind.METERED, _GEMINI_APIS[api_method])
    if api_method in gemini.FREE_METHODS:
        return Route(RouteKind.FREE)
    return Route(RouteKind.UNKNOWN)


GEMINI = Provider(
    id=gemini.PROVIDER_ID,
    hosts=gemini.HOSTS,
    metered={},
    error_body=gemini.error_body,
    classify=_classify_gemini,
)
_AZURE_APIS: dict[str, Api] = {
    "/chat/completions": azure.Deployment(openai.ChatCompletions()),
    "/completions": azure.Deployment(openai.LegacyCompletions()),
    "/embeddings": azure.Deployment(openai_embeddings.Embeddings()),
    "/responses": azure.Deployment(openai_responses.Responses()),
}


def _classify_azure(method: str, path: str) -> Route | None:
    route = path.split("?", 1)[0].rstrip("/")
    if method != "POST":
        return None
    if match := azure.DEPLOYMENT_ROUTE.match(route):
        api = _AZURE_APIS.get(match["rest"])
    elif route.startswith(azure.V1_PREFIX):
        api = _AZURE_APIS.get(route.removeprefix(azure.V1_PREFIX))
    else:
        return Route(RouteKind.UNKNOWN)
    return Route(RouteKind.METERED, api) if api else Route(RouteKind.UNKNOWN)


AZURE = Provider(
    id=azure.PROVIDER_ID,
    hosts=frozenset(),
    metered={},
    error_body=openai.error_body,
    classify=_classify_azure,
    host_suffixes=azure.HOST_SUFFIXES,
)
PROVIDERS: tuple[Provider, ...] = (OPENAI, ANTHROPIC, GEMINI, AZURE, *COMPATIBLE)

# Reading never generates tokens: GET/HEAD/OPTIONS/DELETE on any route is free.
_FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


# Few distinct hosts, asked about on every request; bounded, since SNI and Host are client input.
@lru_cache(maxsize=4096)
def provider_for_host(host: str) -> Provider | None:
    host = host.lower().rstrip(".")
    for provider in PROVIDERS:
        if host in provider.hosts or any(host.endswith(s) for s in provider.host_suffixes):
            return provider
    return None


def classify_route(provider: Provider, method: str, path: str) -> Route:
    method = method.upper()
    if provider.classify is not None and (decided := provider.classify(method, path)):
        return decided
    route = path.split("?", 1)[0].rstrip("/")
    if method == "POST" and route in provider.metered:
        return Route(RouteKind.METERED, provider.metered[route])
    if method in _FREE_METHODS or (method == "POST" and route in provider.free_posts):
        return Route(RouteKind.FREE)
    return Route(RouteKind.UNKNOWN)
