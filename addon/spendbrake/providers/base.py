"""What every provider adapter speaks: a parsed call, its metered usage, its stream meter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from spendbrake.ledger import TokenCounts


class UnreadableRequest(ValueError):
    """The body of a metered call cannot be understood, so its cost cannot be bounded."""


@dataclass(frozen=True)
class CallRequest:
    """What a metered request asks for, as far as its worst-case cost is concerned."""

    model: str
    stream: bool
    max_output: int | None  # the request's cap on output tokens; None: the model's maximum
    choices: int  # every choice is billed output
    service_tier: str | None
    prompt_texts: tuple[str, ...]  # what is counted with the tokenizer
    fixed_prompt_tokens: int  # per-message overheads and media allowances
    tokenizer: str = "openai"  # "openai": tiktoken is exact; "claude": tiktoken times a margin
    wants_usage_injection: bool = False  # the proxy must ask for usage the client did not
    cache_write: str | None = None  # "5m" / "1h": the prompt may be written to the cache


@dataclass(frozen=True)
class MeteredUsage:
    tokens: TokenCounts
    model: str | None  # the model the provider says it billed
    service_tier: str | None


class StreamMeter(Protocol):
    """Reads usage from an SSE stream as it passes; returns what the client must receive."""

    usage: MeteredUsage | None

    def __call__(self, chunk: bytes) -> bytes | list[bytes]: ...


class Api(Protocol):
    """One metered API of a provider (e.g. OpenAI Chat Completions, Anthropic Messages)."""

    endpoint: str

    def parse(self, body: bytes) -> CallRequest: ...

    def with_usage_requested(self, body: bytes) -> bytes: ...

    def usage_from_json(self, obj: Any) -> MeteredUsage | None: ...

    def stream_meter(self, *, strip_injected_usage: bool) -> StreamMeter: ...


def load_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UnreadableRequest("the request body is not JSON (or nests too deeply)") from None
    if not isinstance(data, dict):
        raise UnreadableRequest("the request body is not a JSON object")
    return data


def int_at_least(value: Any, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UnreadableRequest(f"{key} must be an integer of at least {minimum}")
    return value


def count(mapping: Any, key: str) -> int:
    """A token count from a usage object; anything that is not a positive int counts 0."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def as_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
