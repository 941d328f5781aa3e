"""OpenAI Chat Completions: request parsing, usage from JSON and SSE, the error shape.

Pure functions and small classes; nothing here imports mitmproxy. Wire facts are in
``shared/reference/providers.md`` §3.1 and §4.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

from spendbrake.ledger import TokenCounts
from spendbrake.money import usd_to_nanos
from spendbrake.providers.base import (
    MAX_REPORTED_NANOS,
    CallRequest,
    MeteredUsage,
    Rewrite,
    UnreadableRequest,
    as_json_text,
    billed,
    content_blocks,
    count,
    event_json,
    fingerprint_of,
    generated_text_bytes,
    int_at_least,
    json_body,
    load_json_object,
    required_model,
    rewrite_json,
)
from spendbrake.providers.server_tools import openai_chat_server_tools
from spendbrake.sse import EventSplitter

PROVIDER_ID = "openai"
HOSTS = frozenset({"api.openai.com"})
CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"  # legacy
_LEGACY_DEFAULT_MAX_TOKENS = 16  # the legacy API's own default

# Cookbook "How to count tokens with tiktoken": <|start|>{role}<|message|>…<|end|> per message,
# one more for a name, three for the reply priming. Tool schemas are injected as text; their JSON
# plus a margin over-estimates them, which is the right side to err on for a limit.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOOLS_MARGIN = 20
# A high-detail image on the gpt-4o family costs at most ~1,445 tokens; patch-based models up to
# ~3,800 (reference §2.5). Base64 length is not a token measure, so images are a flat allowance.
_IMAGE_ALLOWANCE = 4_000
_AUDIO_ALLOWANCE = 20_000


def parse_chat_request(body: bytes) -> CallRequest:
    data = load_json_object(body)
    model = required_model(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UnreadableRequest("the request has no messages")

    texts: list[str] = []
    fixed = _REPLY_PRIMING
    for message in messages:
        if not isinstance(message, dict):
            raise UnreadableRequest("a message is not a JSON object")
        fixed += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                fixed += _collect_content(value, texts)
            elif key == "name" and isinstance(value, str):
                texts.append(value)
                fixed += _TOKENS_PER_NAME
            elif key == "tool_calls" or key == "function_call" or key == "audio":
                texts.append(as_json_text(value))
            elif isinstance(value, str):
                texts.append(value)  # role, tool_call_id, refusal...
    for key in ("tools", "functions", "response_format", "tool_choice"):
        if data.get(key) is not None:
            texts.append(as_json_text(data[key]))
            fixed += _TOOLS_MARGIN
    modalities = data.get("modalities")
    if isinstance(modalities, list | str) and "audio" in modalities:  # never trust its type
        fixed += _AUDIO_ALLOWANCE
    if isinstance(data.get("prediction"), dict):
        texts.append(as_json_text(data["prediction"]))

    stream = data.get("stream") is True
    options = data.get("stream_options")
    client_asked_for_usage = isinstance(options, dict) and options.get("include_usage") is True
    tier = data.get("service_tier")
    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=stream,
        max_output=_max_output(data),
        choices=1 if data.get("n") is None else int_at_least(data["n"], "n", minimum=1),
        service_tier=tier if isinstance(tier, str) else None,
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=fixed,
        wants_usage_injection=stream and not client_asked_for_usage,
        server_tools=openai_chat_server_tools(data),
        reasoning=_reasoning_asked(data),
    )


def _reasoning_asked(data: dict[str, Any]) -> bool | None:
    """OpenAI's ``reasoning_effort`` ("none" turns it off), and the compatible hosts' own
    switches: OpenRouter's ``reasoning`` object, the ``thinking`` type of DeepSeek and others."""
    effort = data.get("reasoning_effort")
    if isinstance(effort, str):
        return effort != "none"
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict):  # hidden from the answer by "exclude", still billed
        return reasoning.get("enabled") is not False and reasoning.get("effort") != "none"
    thinking = data.get("thinking")
    switch = thinking.get("type") if isinstance(thinking, dict) else None
    return switch == "enabled" if switch in ("enabled", "disabled") else None


def parse_completions_request(body: bytes) -> CallRequest:
    """The legacy Completions API: ``prompt`` text (or token ids), ``max_tokens`` defaulting to
    16, and ``best_of`` candidates generated (and billed) server-side of which ``n`` return.
    A list of prompts (texts or token id lists) is a batch: each prompt gets all of them."""
    data = load_json_object(body)
    model = required_model(data)
    prompt = data.get("prompt")
    texts: list[str] = []
    fixed = 0
    prompts = 1
    if isinstance(prompt, str):
        texts.append(prompt)
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        texts.extend(prompt)
        prompts = max(len(prompt), 1)
    elif isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
        fixed = len(prompt)
    elif isinstance(prompt, list) and all(isinstance(p, list) for p in prompt):
        fixed = sum(len(p) for p in prompt)
        prompts = max(len(prompt), 1)
    else:
        raise UnreadableRequest("prompt must be text, a list of texts, or token ids")
    if isinstance(data.get("suffix"), str):
        texts.append(data["suffix"])
    max_tokens = data.get("max_tokens")
    n = 1 if data.get("n") is None else int_at_least(data["n"], "n", minimum=1)
    best_of = data.get("best_of")
    generated = n if best_of is None else int_at_least(best_of, "best_of", minimum=1)
    stream = data.get("stream") is True
    options = data.get("stream_options")
    client_asked_for_usage = isinstance(options, dict) and options.get("include_usage") is True
    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=stream,
        max_output=_LEGACY_DEFAULT_MAX_TOKENS
        if max_tokens is None
        else int_at_least(max_tokens, "max_tokens", minimum=0),
        choices=prompts * max(n, generated),
        service_tier=None,
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=fixed,
        wants_usage_injection=stream and not client_asked_for_usage,
    )


def _collect_content(content: Any, texts: list[str]) -> int:
    """Add the text of a message's content; return the fixed allowance for its media parts."""
    allowance = 0
    for part in content_blocks(content, texts):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url" or kind == "file":
            allowance += _IMAGE_ALLOWANCE
        elif kind == "input_audio":
            allowance += _AUDIO_ALLOWANCE
        else:
            # An unknown part could be anything; counting its JSON bounds it from above.
            texts.append(as_json_text(part))
    return allowance


def _max_output(data: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        if data.get(key) is not None:
            return int_at_least(data[key], key, minimum=0)
    return None


def with_include_usage(body: bytes) -> bytes:
    """The request body with ``stream_options.include_usage`` turned on (OpenAI sends no usage
    in a stream otherwise, and a call without usage can only be charged at its hold)."""
    data = json.loads(body)
    options = data.get("stream_options")
    data["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return json_body(data)


def usage_from_completion(obj: Any) -> MeteredUsage | None:
    """Usage of a ``chat.completion`` object or of the final ``chat.completion.chunk``, with
    the OpenAI-compatible hosts' variants (reference §3.6)."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict) and isinstance(obj.get("x_groq"), dict):
        usage = obj["x_groq"].get("usage")  # older Groq streams
    if not isinstance(usage, dict):
        return None
    prompt = count(usage, "prompt_tokens")
    completion = count(usage, "completion_tokens")
    # Some OpenAI-compatible hosts leave reasoning out of completion_tokens but not out of
    # total_tokens; taking the larger never double-counts OpenAI, where it is included.
    completion = max(completion, count(usage, "total_tokens") - prompt)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = count(prompt_details, "cached_tokens") or count(usage, "prompt_cache_hit_tokens")
    tokens = TokenCounts(
        input_tokens=prompt,
        cached_input_tokens=cached,  # DeepSeek says prompt_cache_hit_tokens
        cache_write_tokens=count(prompt_details, "cache_write_tokens"),
        output_tokens=completion,
        reasoning_tokens=count(completion_details, "reasoning_tokens"),
    )
    model = obj.get("model") if isinstance(obj.get("model"), str) and obj.get("model") else None
    tier = obj.get("service_tier") if isinstance(obj.get("service_tier"), str) else None
    return MeteredUsage(
        tokens=billed(tokens), model=model, service_tier=tier,
        reported_cost_nanos=_reported_cost(usage),
    )  # fmt: skip


def _reported_cost(usage: dict[str, Any]) -> int | None:
    """What the host says the call cost: OpenRouter's ``cost`` (USD), xAI's
    ``cost_in_usd_ticks`` (1e10 ticks to the dollar). Rounded up, as every cost is.

    On an OpenRouter call made with the caller's own provider key (``is_byok``), ``cost`` is only
    OpenRouter's fee: the provider bills ``cost_details.upstream_inference_cost`` to that key, so
    the call costs both; without that figure its cost is not known here. (Other calls report an
    upstream cost too, already inside ``cost``.)
    """
    ticks = usage.get("cost_in_usd_ticks")
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return min(-(-ticks // 10), MAX_REPORTED_NANOS)
    cost = _dollars(usage.get("cost"))
    if cost is None or usage.get("is_byok") is not True:
        return None if cost is None else min(usd_to_nanos(cost), MAX_REPORTED_NANOS)
    details = usage.get("cost_details")
    upstream = (
        _dollars(details.get("upstream_inference_cost")) if isinstance(details, dict) else None
    )
    return None if upstream is None else min(usd_to_nanos(cost + upstream), MAX_REPORTED_NANOS)


def _dollars(value: Any) -> Decimal | None:
    """A cost the host reported, if it is one: JSON's NaN and Infinity parse, but are none."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        amount = Decimal(str(value))
        return amount if amount.is_finite() else None
    return None


# Cheap test before json.loads: only the usage chunk has "usage": {…}; others say "usage":null.
_HAS_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class ChatStreamMeter:
    """Reads usage from a Chat Completions SSE stream as it passes through.

    With ``strip_usage_chunk`` (the proxy, not the client, asked for usage), whole events are
    forwarded one by one and the usage-only chunk is dropped; otherwise every chunk is passed on
    unchanged the moment it arrives.
    """

    def __init__(self, *, strip_usage_chunk: bool) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.usage: MeteredUsage | None = None
        self.usage_is_final = False  # the usage chunk comes last, so it is always final
        self.relayed_text_bytes = 0
        self.usage_counts_reasoning = False  # no usage before the last chunk
        self._splitter = EventSplitter()

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        if not chunk:  # end of the response; b"" is allowed here and only here
            tail = self._splitter.flush()
            dropped = self._inspect(tail) if tail else False
            # Unstripped streams already passed every byte on; stripped ones still owe the tail.
            return tail if self.strip_usage_chunk and not dropped else b""
        events = self._splitter.feed(chunk)
        forwarded = [event for event in events if not self._inspect(event)]
        if not self.strip_usage_chunk:
            return chunk
        return forwarded  # may be []: never b"" mid-stream, it would end an HTTP/1.1 body

    def _inspect(self, event: bytes) -> bool:
        """Record usage from ``event``; True when it is the usage-only chunk to be dropped."""
        self.relayed_text_bytes += generated_text_bytes(event)
        if not _HAS_USAGE_OBJECT.search(event):
            return False
        obj = event_json(event)
        metered = usage_from_completion(obj)
        if metered is None:
            return False
        self.usage = metered  # last value wins: usage is a total, never a delta
        self.usage_is_final = True
        return self.strip_usage_chunk and isinstance(obj, dict) and obj.get("choices") == []


_ERROR_TYPES = {
    400: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    407: "authentication_error",
    423: "access_denied",
    429: "rate_limit_exceeded",
}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """OpenAI's error shape, so the SDK raises an error that carries our message and code."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "code": code,
        }
    }


class ChatCompletions:
    """Chat Completions as a metered API, at OpenAI or at a host that speaks its dialect.

    ``ask_for_stream_usage``: whether the host accepts ``stream_options.include_usage`` (without
    it, OpenAI and most compatible hosts send no usage in a stream); hosts that always report
    usage, or reject unknown fields, are left alone.
    """

    def __init__(
        self,
        endpoint: str = CHAT_COMPLETIONS,
        *,
        ask_for_stream_usage: bool = True,
        max_output_field: str = "max_completion_tokens",
    ):
        self.endpoint = endpoint
        self.ask_for_stream_usage = ask_for_stream_usage
        # OpenAI's reasoning models reject max_tokens; the compatible hosts know only max_tokens.
        self.max_output_field = max_output_field

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        request = parse_chat_request(body)
        if request.wants_usage_injection and not self.ask_for_stream_usage:
            return replace(request, wants_usage_injection=False)
        return request

    def with_usage_requested(self, body: bytes) -> bytes:
        return with_include_usage(body)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        return usage_from_completion(obj)

    def stream_meter(self, *, strip_injected_usage: bool) -> ChatStreamMeter:
        return ChatStreamMeter(strip_usage_chunk=strip_injected_usage)

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        fields = ("max_completion_tokens", "max_tokens")
        return rewrite_json(
            body, change, output_fields=fields, default_field=self.max_output_field
        ), path


class LegacyCompletions(ChatCompletions):
    """``POST /v1/completions``: the legacy API, metered like Chat Completions."""

    def __init__(self) -> None:
        super().__init__(COMPLETIONS, max_output_field="max_tokens")

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        return parse_completions_request(body)
