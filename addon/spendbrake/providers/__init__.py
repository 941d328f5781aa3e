"""The provider registry: which hosts are LLM hosts, and which routes on them cost money.

Only hosts listed here are TLS-intercepted; every other host is tunnelled untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from spendbrake.providers import openai


class RouteKind(Enum):
    METERED = "metered"  # costs money: estimated, held, priced
    FREE = "free"  # costs nothing (listing models, reading files): passes unmetered
    UNKNOWN = "unknown"  # not understood: refused, because it might cost money


@dataclass(frozen=True)
class Provider:
    id: str
    hosts: frozenset[str]
    api_url: str


OPENAI = Provider(id=openai.PROVIDER_ID, hosts=openai.HOSTS, api_url="https://api.openai.com/v1")
PROVIDERS: tuple[Provider, ...] = (OPENAI,)
LLM_HOSTS: frozenset[str] = frozenset(host for p in PROVIDERS for host in p.hosts)

# Reading never generates tokens at OpenAI: GET/HEAD/OPTIONS/DELETE on any route is free.
_FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def provider_for_host(host: str) -> Provider | None:
    host = host.lower().rstrip(".")
    return next((p for p in PROVIDERS if host in p.hosts), None)


def classify_route(provider: Provider, method: str, path: str) -> RouteKind:
    route = path.split("?", 1)[0].rstrip("/")
    if method.upper() == "POST" and route == openai.CHAT_COMPLETIONS:
        return RouteKind.METERED
    if method.upper() in _FREE_METHODS:
        return RouteKind.FREE
    return RouteKind.UNKNOWN
