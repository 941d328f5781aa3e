"""What every provider adapter speaks: a parsed call, its metered usage, its stream meter."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Protocol

from spendbrake.ledger import TokenCounts
from spendbrake.sse import EventSplitter, event_data


class UnreadableRequest(ValueError):
    """The body of a metered call cannot be understood, so its cost cannot be bounded."""


@dataclass(frozen=True)
class CountedPrompt:
    """A prompt's texts counted where they were parsed (a giant body's, in the body worker)."""

    tokens: int  # by the tokenizer of the request's model
    characters: int


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
    tokenizer: str = "openai"  # "openai": tiktoken is exact; "claude"/"gemini": with a margin
    wants_usage_injection: bool = False  # the proxy must ask for usage the client did not
    cache_write: str | None = None  # "5m" / "1h": the prompt may be written to the cache
    server_tools: tuple[str, ...] = ()  # tools the provider runs and bills per use (unbounded)
    min_output: int = 1  # the lowest max output the provider accepts for this request
    fingerprint: str = ""  # of what it asks (model, messages, media, tools): loop detection
    counted_prompt: CountedPrompt | None = None  # prompt_texts counted already (then empty)
    # Reasoning, as the request sets it: True asked for, False turned off, None the model's
    # default. A stream cut short may have cost reasoning it never showed (see settlement).
    reasoning: bool | None = None


# Fields that vary between copies of the same request, or only say how to answer it.
_VOLATILE_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "service_tier",
        "store",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "frequency_penalty",
        "presence_penalty",
        "safety_identifier",
        "prompt_cache_key",
        "generationConfig",
    }
)


def fingerprint_of(model: str, data: dict[str, Any]) -> str:
    """The same model asked the same thing (messages, images, files, tools) gives the same
    value, whatever else varies (streaming, sampling, max output): what loop detection
    compares."""
    asked = {key: value for key, value in data.items() if key not in _VOLATILE_FIELDS}
    digest = hashlib.blake2b(digest_size=16)
    # JSON may carry a lone surrogate ("\\ud83d", half an emoji): valid there, not in UTF-8.
    digest.update(model.encode("utf-8", "surrogatepass"))
    digest.update(json.dumps(asked, sort_keys=True, ensure_ascii=False).encode("utf-8", "replace"))
    return digest.hexdigest()


@dataclass(frozen=True)
class MeteredUsage:
    tokens: TokenCounts
    model: str | None  # the model the provider says it billed
    service_tier: str | None
    reported_cost_nanos: int | None = None  # the provider's own figure (OpenRouter, xAI)


class StreamMeter(Protocol):
    """Reads usage from an SSE stream as it passes; returns what the client must receive.

    ``usage_is_final``: the stream reported its complete usage (it was not cut short).
    ``relayed_text_bytes``: an upper bound on the output tokens relayed so far, for a stream cut
    short before its usage arrived.
    ``usage_counts_reasoning``: the usage seen so far already counts the reasoning done so far
    (Gemini's running snapshots); otherwise reasoning a stream does not show is known only
    from its final usage.
    """

    @property
    def usage(self) -> MeteredUsage | None: ...

    @property
    def usage_is_final(self) -> bool: ...

    @property
    def relayed_text_bytes(self) -> int: ...

    @property
    def usage_counts_reasoning(self) -> bool: ...

    def __call__(self, chunk: bytes) -> bytes | list[bytes]: ...


class Api(Protocol):
    """One metered API of a provider (e.g. OpenAI Chat Completions, Anthropic Messages)."""

    endpoint: str

    def parse(self, body: bytes, path: str = "") -> CallRequest: ...

    def with_usage_requested(self, body: bytes) -> bytes: ...

    def usage_from_json(self, obj: Any) -> MeteredUsage | None: ...

    def stream_meter(self, *, strip_injected_usage: bool) -> StreamMeter: ...

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        """The request with another model or a lower max output, in this API's own fields."""
        ...


def load_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UnreadableRequest("the request body is not JSON (or nests too deeply)") from None
    if not isinstance(data, dict):
        raise UnreadableRequest("the request body is not a JSON object")
    return data


def content_blocks(content: Any, texts: list[str]) -> list[dict[str, Any]]:
    """The blocks of a message content; a plain-text content is added to ``texts`` instead."""
    if content is None:
        return []
    if isinstance(content, str):
        texts.append(content)
        return []
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise UnreadableRequest("a message content is neither text nor a list of JSON objects")
    return content


@dataclass(frozen=True)
class Rewrite:
    """What the governor changes in a request before it goes out (None: leave it)."""

    model: str | None = None
    max_output: int | None = None


def rewrite_json(
    body: bytes, change: Rewrite, *, output_fields: tuple[str, ...], default_field: str
) -> bytes:
    """A JSON body with its ``model`` and its max-output field(s) set: every field of
    ``output_fields`` the client used, else ``default_field``."""
    data = json.loads(body)
    if change.model is not None:
        data["model"] = change.model
    if change.max_output is not None:
        used = [field for field in output_fields if data.get(field) is not None]
        for field in used or [default_field]:
            data[field] = change.max_output
    return json_body(data)


def json_body(data: Any) -> bytes:
    """A rewritten request body: UTF-8 as clients send it, unless the client escaped a lone
    surrogate ("\\ud83d"), which UTF-8 cannot carry; then escaped as the client had it."""
    text = json.dumps(data, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(data).encode()


class ReportsUsageUnasked:
    """For APIs that always report usage: the request is forwarded as the client wrote it."""

    def with_usage_requested(self, body: bytes) -> bytes:
        return body


def required_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise UnreadableRequest("the request has no model")
    return model


def int_at_least(value: Any, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UnreadableRequest(f"{key} must be an integer of at least {minimum}")
    return value


# No call is billed anywhere near this many tokens (the largest context windows hold about two
# million). A provider that reports more is wrong; its figure is capped so that, priced, it still
# fits the ledger's 64-bit integers instead of failing the settlement (which left the hold held).
MAX_TOKEN_COUNT = 2**32
# The same for a cost the provider reports itself: $1,000,000 for one call.
MAX_REPORTED_NANOS = 10**15


def count(mapping: Any, key: str) -> int:
    """A token count from a usage object; anything that is not a positive int counts 0."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return min(value, MAX_TOKEN_COUNT)


def billed(tokens: TokenCounts) -> TokenCounts:
    """Usage a price can be put on. Every API counts its cache reads and writes inside its input,
    so a provider reporting more of them than input is wrong, and priced as it stands that
    would cost less than nothing: the input is raised to their sum (the dearer reading)."""
    least = tokens.cached_input_tokens + tokens.cache_write_tokens
    return replace(tokens, input_tokens=max(tokens.input_tokens, least))


def as_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def event_json(raw_event: bytes) -> dict[str, Any] | None:
    """The JSON object in an SSE event's data, or None (no data, not JSON, not an object)."""
    data = event_data(raw_event)
    try:
        obj = json.loads(data) if data else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    return obj if isinstance(obj, dict) else None


# The JSON string fields that carry generated text in the providers' stream events.
_GENERATED_TEXT = re.compile(
    rb'"(?:content|text|delta|partial_json|thinking|reasoning_content|reasoning|arguments|refusal)"'
    rb'\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'  # unrolled: linear on a string of megabytes
)


def generated_text_bytes(raw_event: bytes) -> int:
    """The escaped bytes of the event's generated text: never fewer than its UTF-8 bytes, and a
    byte-level tokenizer never makes more tokens than bytes, so this bounds its tokens."""
    return sum(len(match) for match in _GENERATED_TEXT.findall(raw_event))


class UsageTap:
    """A stream meter that passes every byte on unchanged and reads the events that may carry
    usage: those matching ``carries_usage``, a cheap test that spares json.loads on the rest."""

    def __init__(self, carries_usage: re.Pattern[bytes]) -> None:
        self.usage: MeteredUsage | None = None
        self.usage_is_final = False
        self.relayed_text_bytes = 0
        self.usage_counts_reasoning = False
        self._carries_usage = carries_usage
        self._splitter = EventSplitter()

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        events = self._splitter.feed(chunk) if chunk else [self._splitter.flush()]
        for event in events:
            if not event:
                continue
            self.relayed_text_bytes += generated_text_bytes(event)
            if self._carries_usage.search(event) and (obj := event_json(event)):
                self.on_event(obj)
        return chunk

    def on_event(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError
