"""OpenAI Responses API (``POST /v1/responses``): parsing, usage from JSON and SSE.

A response may continue an earlier one (``previous_response_id``) whose history OpenAI adds on
its side, unseen by the proxy. The size of every response that passed through is remembered, so
a continuation is held for its real history; an unknown one is held for a full context window.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from spendbrake.ledger import TokenCounts
from spendbrake.providers.base import (
    CallRequest,
    MeteredUsage,
    ReportsUsageUnasked,
    Rewrite,
    UnreadableRequest,
    UsageTap,
    as_json_text,
    billed,
    count,
    fingerprint_of,
    int_at_least,
    load_json_object,
    required_model,
    rewrite_json,
)
from spendbrake.providers.server_tools import openai_responses_server_tools

RESPONSES = "/v1/responses"

_TOKENS_PER_ITEM = 4
_BASE_TOKENS = 3
_TOOLS_MARGIN = 20
_IMAGE_ALLOWANCE = 4_000  # as for Chat Completions: the patch-based models' worst case
_FILE_ALLOWANCE = 50_000  # a PDF's pages as text and images; its pages cannot be counted here
# The largest context window of the OpenAI models spendbrake prices (gpt-4.1: 1,047,576).
_UNKNOWN_HISTORY_TOKENS = 1_047_576
_REMEMBERED_RESPONSES = 10_000


class ResponseSizes:
    """The tokens each recent response carried (its input plus output), by response id."""

    def __init__(self, capacity: int = _REMEMBERED_RESPONSES) -> None:
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, response_id: str, tokens: int) -> None:
        with self._lock:
            self._sizes[response_id] = tokens
            self._sizes.move_to_end(response_id)
            while len(self._sizes) > self._capacity:
                self._sizes.popitem(last=False)

    def size_of(self, response_id: str) -> int | None:
        with self._lock:
            return self._sizes.get(response_id)

    # Copied whole to the body worker with a giant request, which looks its history up there.
    def __getstate__(self) -> dict[str, object]:
        with self._lock:
            return {"sizes": OrderedDict(self._sizes), "capacity": self._capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._sizes, self._capacity = state["sizes"], state["capacity"]
        self._lock = threading.Lock()


def parse_responses_request(body: bytes, sizes: ResponseSizes) -> CallRequest:
    data = load_json_object(body)
    model = required_model(data)
    texts: list[str] = []
    fixed = _BASE_TOKENS
    if isinstance(data.get("instructions"), str):
        texts.append(data["instructions"])
    items = data.get("input")
    if isinstance(items, str):
        texts.append(items)
    elif isinstance(items, list):
        for item in items:
            fixed += _TOKENS_PER_ITEM + _collect_item(item, texts)
    elif items is not None:
        raise UnreadableRequest("input must be text or a list of items")
    for key in ("tools", "text", "tool_choice"):
        if data.get(key) is not None:
            texts.append(as_json_text(data[key]))
            fixed += _TOOLS_MARGIN
    fixed += _server_side_history(data, sizes)
    max_output = data.get("max_output_tokens")
    if max_output is not None:
        max_output = int_at_least(max_output, "max_output_tokens", minimum=1)
    tier = data.get("service_tier")
    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=data.get("stream") is True,
        max_output=None
        if max_output is None
        else int_at_least(max_output, "max_output_tokens", minimum=1),
        choices=1,
        service_tier=tier if isinstance(tier, str) else None,
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=fixed,
        server_tools=openai_responses_server_tools(data),
        reasoning=_reasoning_asked(data.get("reasoning")),
    )


def _reasoning_asked(reasoning: Any) -> bool | None:
    """``reasoning.effort``: "none" turns it off; no effort leaves the model's default."""
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    return effort != "none" if isinstance(effort, str) else None


def _server_side_history(data: dict[str, Any], sizes: ResponseSizes) -> int:
    if data.get("conversation") is not None:
        return _UNKNOWN_HISTORY_TOKENS  # a stored conversation: its length is not visible here
    previous = data.get("previous_response_id")
    if previous is None:
        return 0
    if not isinstance(previous, str):
        raise UnreadableRequest("previous_response_id must be a string")
    known = sizes.size_of(previous)
    return _UNKNOWN_HISTORY_TOKENS if known is None else known


def _collect_item(item: Any, texts: list[str]) -> int:
    if isinstance(item, str):
        texts.append(item)
        return 0
    if not isinstance(item, dict):
        raise UnreadableRequest("an input item is neither text nor a JSON object")
    content = item.get("content")
    if "role" in item and isinstance(content, str):
        texts.append(content)
        return 0
    if "role" in item and isinstance(content, list):
        allowance = 0
        for part in content:
            if not isinstance(part, dict):
                raise UnreadableRequest("a content part is not a JSON object")
            kind = part.get("type")
            if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "input_image":
                allowance += _IMAGE_ALLOWANCE
            elif kind == "input_file":
                allowance += _FILE_ALLOWANCE
            else:
                texts.append(as_json_text(part))
        return allowance
    # function calls and their outputs, reasoning items, references: their JSON bounds them.
    texts.append(as_json_text(item))
    return 0


def usage_from_response(obj: Any, sizes: ResponseSizes) -> MeteredUsage | None:
    """Usage of a ``response`` object; also remembers its size for later continuations."""
    if not isinstance(obj, dict) or not isinstance(obj.get("usage"), dict):
        return None
    usage = obj["usage"]
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    tokens = TokenCounts(
        input_tokens=count(usage, "input_tokens"),
        cached_input_tokens=count(input_details, "cached_tokens"),
        cache_write_tokens=count(input_details, "cache_write_tokens"),
        output_tokens=count(usage, "output_tokens"),
        reasoning_tokens=count(output_details, "reasoning_tokens"),
    )
    if isinstance(obj.get("id"), str):
        sizes.remember(obj["id"], tokens.input_tokens + tokens.output_tokens)
    model = obj.get("model") if isinstance(obj.get("model"), str) and obj.get("model") else None
    tier = obj.get("service_tier") if isinstance(obj.get("service_tier"), str) else None
    return MeteredUsage(tokens=billed(tokens), model=model, service_tier=tier)


# Only the terminal events carry a usage object; the others say "usage":null or nothing.
_HAS_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamMeter(UsageTap):
    """Usage from the terminal event of a Responses stream; bytes pass unchanged."""

    def __init__(self, sizes: ResponseSizes) -> None:
        super().__init__(_HAS_USAGE_OBJECT)
        self._sizes = sizes

    def on_event(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if isinstance(kind, str) and kind in _TERMINAL_EVENTS:  # a list type is unhashable
            usage = usage_from_response(obj.get("response"), self._sizes)
            if usage is not None:
                self.usage = usage
                self.usage_is_final = True


class Responses(ReportsUsageUnasked):
    """``POST /v1/responses`` as a metered API."""

    endpoint = RESPONSES

    def __init__(self) -> None:
        self.sizes = ResponseSizes()

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        return parse_responses_request(body, self.sizes)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        return usage_from_response(obj, self.sizes)

    def stream_meter(self, *, strip_injected_usage: bool) -> ResponsesStreamMeter:
        return ResponsesStreamMeter(self.sizes)

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        fields = ("max_output_tokens",)
        return rewrite_json(body, change, output_fields=fields, default_field=fields[0]), path
