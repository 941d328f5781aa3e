"""Anthropic Messages: request parsing, usage from JSON and SSE, the error shape.

Pure functions and small classes; nothing here imports mitmproxy. Wire facts are in
``shared/reference/providers.md`` §2.5, §2.6, §3.4 and §4.
"""

from __future__ import annotations

import base64
import binascii
import re
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
    content_blocks,
    count,
    fingerprint_of,
    int_at_least,
    load_json_object,
    required_model,
    rewrite_json,
)
from spendbrake.providers.server_tools import anthropic_server_tools

PROVIDER_ID = "anthropic"
HOSTS = frozenset({"api.anthropic.com"})
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"  # free at Anthropic

# Anthropic does not publish its per-message framing; these allowances sit above what its
# count_tokens endpoint reports for short conversations.
_BASE_TOKENS = 10
_TOKENS_PER_MESSAGE = 5
# Whenever `tools` is present a tool-use system prompt is added: 313-346 tokens on Claude 4
# models depending on tool_choice (Anthropic's pricing page); the larger figure is held.
_TOOL_USE_SYSTEM_PROMPT = 346
# An image costs about width x height / 750 tokens, ~1,600 at most after Anthropic's downscale
# for models up to Opus 4.6; newer models take larger images, so the allowance is generous.
_IMAGE_ALLOWANCE = 5_000
# A PDF page is billed as its text plus an image of it (~1,500-3,000 tokens). Pages cannot be
# counted without parsing the PDF, so the allowance grows with the document's size.
_DOCUMENT_MIN_ALLOWANCE = 3_000
_DOCUMENT_BYTES_PER_TOKEN = 10


def parse_messages_request(body: bytes) -> CallRequest:
    data = load_json_object(body)
    model = required_model(data)
    if data.get("max_tokens") is None:
        raise UnreadableRequest("the Messages API requires max_tokens")
    max_tokens = int_at_least(data["max_tokens"], "max_tokens", minimum=0)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UnreadableRequest("the request has no messages")

    texts: list[str] = []
    fixed = _BASE_TOKENS
    system = data.get("system")
    if system is not None:
        fixed += _collect_blocks(system, texts)
    for message in messages:
        if not isinstance(message, dict):
            raise UnreadableRequest("a message is not a JSON object")
        fixed += _TOKENS_PER_MESSAGE + _collect_blocks(message.get("content"), texts)
    if data.get("tools"):
        texts.append(as_json_text(data["tools"]))
        fixed += _TOOL_USE_SYSTEM_PROMPT
    if data.get("tool_choice") is not None:
        texts.append(as_json_text(data["tool_choice"]))

    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=data.get("stream") is True,
        max_output=max_tokens,  # thinking.budget_tokens is part of max_tokens
        # Anthropic refuses a max_tokens that does not exceed the thinking budget.
        min_output=_thinking_budget(data) + 1,
        choices=1,
        service_tier=None,  # Anthropic's priority tier has no public per-token price
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=fixed,
        tokenizer="claude",
        cache_write=_cache_write_ttl(data),
        server_tools=anthropic_server_tools(data),
        # Claude thinks only when asked, and Claude 4 streams a summary of what it bills.
        reasoning=_thinking_type(data) in ("enabled", "adaptive"),
    )


def _thinking_type(data: dict[str, Any]) -> object:
    thinking = data.get("thinking")
    return thinking.get("type") if isinstance(thinking, dict) else None


def _thinking_budget(data: dict[str, Any]) -> int:
    if _thinking_type(data) == "enabled":  # then "thinking" is an object
        budget = data["thinking"].get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            return budget
    return 0


def _collect_blocks(content: Any, texts: list[str]) -> int:
    """Add the text of a content (a string or a list of blocks); return media allowances."""
    allowance = 0
    for block in content_blocks(content, texts):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            texts.append(block["thinking"])
        elif kind == "image":
            allowance += _IMAGE_ALLOWANCE
        elif kind == "document":
            allowance += _document_allowance(block, texts)
        elif kind == "tool_result":
            allowance += _collect_blocks(block.get("content"), texts)
        else:
            # tool_use, redacted thinking, search results and anything newer: their JSON bounds
            # them from above (base64 aside, which only documents and images carry).
            texts.append(as_json_text(block))
    return allowance


def _document_allowance(block: dict[str, Any], texts: list[str]) -> int:
    source: dict[str, Any] = block["source"] if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        texts.append(source["data"])
        return 0
    if source.get("type") == "content":
        return _collect_blocks(source.get("content"), texts)
    size = 0
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        try:
            size = len(base64.b64decode(source["data"], validate=False))
        except (binascii.Error, ValueError):
            raise UnreadableRequest("a document's base64 data is not valid") from None
    return max(_DOCUMENT_MIN_ALLOWANCE, size // _DOCUMENT_BYTES_PER_TOKEN)


def _cache_write_ttl(data: dict[str, Any]) -> str | None:
    """ "1h" or "5m" when the request marks anything for caching (a ``cache_control`` at any
    depth, or at the top for automatic caching), else None."""
    ttls: set[str] = set()
    pending: list[Any] = [data]
    while pending:  # iterative: a hostile body may nest deeper than Python's recursion limit
        node = pending.pop()
        if isinstance(node, dict):
            control = node.get("cache_control")
            if isinstance(control, dict):
                ttls.add(str(control.get("ttl") or "5m"))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    if not ttls:
        return None
    return "1h" if "1h" in ttls else "5m"


def usage_tokens(usage: Any) -> TokenCounts:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; billed input is all three."""
    uncached = count(usage, "input_tokens")
    written = count(usage, "cache_creation_input_tokens")
    read = count(usage, "cache_read_input_tokens")
    creation = usage.get("cache_creation") if isinstance(usage, dict) else None
    return TokenCounts(
        input_tokens=uncached + written + read,
        cached_input_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=min(written, count(creation, "ephemeral_1h_input_tokens")),
        output_tokens=count(usage, "output_tokens"),
    )


def usage_from_message(obj: Any) -> MeteredUsage | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("usage"), dict):
        return None
    model = obj.get("model") if isinstance(obj.get("model"), str) and obj.get("model") else None
    return MeteredUsage(
        tokens=usage_tokens(obj["usage"]), model=model, service_tier=billed_tier(obj["usage"])
    )


def billed_tier(usage: dict[str, Any]) -> str | None:
    """Batch is the one tier Anthropic reports that has its own public price; its priority tier
    is a capacity commitment without one, so it is priced as standard."""
    return "batch" if usage.get("service_tier") == "batch" else None


_MENTIONS_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class MessagesStreamMeter(UsageTap):
    """Usage from a Messages stream: the input side in ``message_start``, cumulative output
    (and, on newer API versions, cumulative input) in each ``message_delta``.

    Each field present in a ``message_delta`` *replaces* the one seen before; adding them would
    count output tokens twice when server tools send several deltas. Bytes pass unchanged.
    """

    def __init__(self) -> None:
        super().__init__(_MENTIONS_USAGE)
        self._fields: dict[str, Any] = {}
        self._model: str | None = None

    def on_event(self, obj: dict[str, Any]) -> None:
        if obj.get("type") == "message_start" and isinstance(obj.get("message"), dict):
            message = obj["message"]
            usage = message.get("usage")
            self._fields = dict(usage) if isinstance(usage, dict) else {}
            if isinstance(message.get("model"), str):
                self._model = message["model"]
        elif obj.get("type") == "message_delta" and isinstance(obj.get("usage"), dict):
            self._fields.update(obj["usage"])
            self.usage_is_final = True  # message_start's output count is only a first figure
        else:
            return
        self.usage = MeteredUsage(
            usage_tokens(self._fields), self._model, billed_tier(self._fields)
        )


class Messages(ReportsUsageUnasked):
    """``POST /v1/messages`` as a metered API."""

    endpoint = MESSAGES

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        return parse_messages_request(body)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        return usage_from_message(obj)

    def stream_meter(self, *, strip_injected_usage: bool) -> MessagesStreamMeter:
        return MessagesStreamMeter()

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        fields = ("max_tokens",)  # thinking.budget_tokens stays below it: the API checks that
        return rewrite_json(body, change, output_fields=fields, default_field=fields[0]), path


_ERROR_TYPES = {
    400: "invalid_request_error",
    402: "billing_error",
    403: "permission_error",
    407: "authentication_error",
    423: "permission_error",
    429: "rate_limit_error",
}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """Anthropic's error shape; the refusal code travels in ``x-spendbrake-reason``."""
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
