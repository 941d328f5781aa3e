"""The provider registry: which hosts are LLM hosts, and which routes on them cost money.

Only hosts listed here are TLS-intercepted; every other host is tunnelled untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from spendbrake.providers import anthropic, openai, openai_embeddings, openai_responses
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
PROVIDERS: tuple[Provider, ...] = (OPENAI, ANTHROPIC)
LLM_HOSTS: frozenset[str] = frozenset(host for p in PROVIDERS for host in p.hosts)

# Reading never generates tokens: GET/HEAD/OPTIONS/DELETE on any route is free.
_FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def provider_for_host(host: str) -> Provider | None:
    host = host.lower().rstrip(".")
    return next((p for p in PROVIDERS if host in p.hosts), None)


def classify_route(provider: Provider, method: str, path: str) -> Route:
    route = path.split("?", 1)[0].rstrip("/")
    method = method.upper()
    if method == "POST" and route in provider.metered:
        return Route(RouteKind.METERED, provider.metered[route])
    if method in _FREE_METHODS or (method == "POST" and route in provider.free_posts):
        return Route(RouteKind.FREE)
    return Route(RouteKind.UNKNOWN)
