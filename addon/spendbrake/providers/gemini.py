"""Google Gemini (``generativelanguage.googleapis.com``): generateContent and its streams.

The model and the stream flag are in the URL (``/v1beta/models/gemini-2.5-flash:
streamGenerateContent?alt=sse``). A stream is SSE with CRLF line ends when the client asks for
``alt=sse``, else a JSON array sent element by element; both are metered as they pass. Usage
comes as ``usageMetadata`` snapshots: the last one wins, they are never added up.
Wire facts: ``shared/reference/providers.md`` §2.5, §2.6, §3.5 and §4.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

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
    json_body,
    load_json_object,
)
from spendbrake.providers.server_tools import gemini_server_tools

PROVIDER_ID = "google"
HOSTS = frozenset({"generativelanguage.googleapis.com"})

# /v1beta/models/gemini-2.5-flash:generateContent (also /v1/, and tunedModels/ for fine-tunes)
ROUTE = re.compile(
    r"^/v1(?:beta|alpha)?/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<method>[A-Za-z]+)$"
)
GENERATE = "generateContent"
STREAM_GENERATE = "streamGenerateContent"
FREE_METHODS = frozenset({"countTokens"})

_TOKENS_PER_CONTENT = 4
# Gemini 2.0+: 258 tokens per 768x768 tile of an image, 258 per PDF page, ~263 per second of
# video, 32 per second of audio. None of that is visible without decoding the media, so inline
# data is allowed a generous 1 token per 100 bytes (a minute of video is ~16k tokens in ~10 MB),
# and at least a few tiles.
_MEDIA_MIN_ALLOWANCE = 3_000
_MEDIA_BYTES_PER_TOKEN = 100
# cachedContent adds a stored prompt the proxy never sees: hold a whole context window for it.
_CACHED_CONTENT_TOKENS = 1_048_576


def model_of(path: str) -> tuple[str, str] | None:
    """(model, method) from a Gemini path, the ``models/`` prefix stripped."""
    match = ROUTE.match(unquote(path.split("?", 1)[0]))
    if match is None:
        return None
    return match["model"].removeprefix("models/"), match["method"]


def parse_generate_request(body: bytes, path: str) -> CallRequest:
    route = model_of(path)
    if route is None:
        raise UnreadableRequest("the URL names no model")
    model, method = route
    data = load_json_object(body)
    texts: list[str] = []
    fixed = 0
    contents = data.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise UnreadableRequest("the request has no contents")
    for content in [data.get("systemInstruction"), *contents]:
        if content is None:
            continue
        if not isinstance(content, dict):
            raise UnreadableRequest("a content is not a JSON object")
        fixed += _TOKENS_PER_CONTENT + _collect_parts(content.get("parts"), texts)
    for key in ("tools", "toolConfig"):
        if data.get(key) is not None:
            texts.append(as_json_text(data[key]))
    if data.get("cachedContent") is not None:
        fixed += _CACHED_CONTENT_TOKENS
    config = data.get("generationConfig")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise UnreadableRequest("generationConfig is not a JSON object")
    max_output = config.get("maxOutputTokens")
    candidates = config.get("candidateCount")
    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=method == STREAM_GENERATE,
        # Thinking tokens count against maxOutputTokens, so it bounds them too.
        max_output=None
        if max_output is None
        else int_at_least(max_output, "maxOutputTokens", minimum=1),
        choices=1 if candidates is None else int_at_least(candidates, "candidateCount", minimum=1),
        service_tier=None,
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=fixed,
        tokenizer="gemini",
        server_tools=gemini_server_tools(data),
        reasoning=_thinking_asked(config.get("thinkingConfig")),
    )


def _thinking_asked(thinking: Any) -> bool | None:
    """``thinkingBudget`` 0 turns thinking off; another budget or a ``thinkingLevel`` asks."""
    if not isinstance(thinking, dict):
        return None
    budget = thinking.get("thinkingBudget")
    if isinstance(budget, int) and not isinstance(budget, bool):
        return budget != 0
    return True if isinstance(thinking.get("thinkingLevel"), str) else None


def _collect_parts(parts: Any, texts: list[str]) -> int:
    if parts is None:
        return 0
    if not isinstance(parts, list):
        raise UnreadableRequest("parts is not a list")
    allowance = 0
    for part in parts:
        if not isinstance(part, dict):
            raise UnreadableRequest("a part is not a JSON object")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("inlineData"), dict):
            encoded = part["inlineData"].get("data")
            size = len(encoded) * 3 // 4 if isinstance(encoded, str) else 0
            allowance += max(_MEDIA_MIN_ALLOWANCE, size // _MEDIA_BYTES_PER_TOKEN)
        elif "fileData" in part:
            allowance += _CACHED_CONTENT_TOKENS  # an uploaded file of unknown length
        else:
            texts.append(as_json_text(part))  # function calls and responses, code, ...
    return allowance


def usage_from_metadata(metadata: Any, model: str | None) -> MeteredUsage | None:
    """Billed input is the prompt plus tool-use prompts; billed output is the candidates plus
    the thoughts (``candidatesTokenCount`` leaves thoughts out)."""
    if not isinstance(metadata, dict):
        return None
    thoughts = count(metadata, "thoughtsTokenCount")
    tokens = TokenCounts(
        input_tokens=count(metadata, "promptTokenCount")
        + count(metadata, "toolUsePromptTokenCount"),
        cached_input_tokens=count(metadata, "cachedContentTokenCount"),
        output_tokens=count(metadata, "candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )
    return MeteredUsage(tokens=billed(tokens), model=model, service_tier=None)


def usage_from_response(obj: Any) -> MeteredUsage | None:
    """Usage of a GenerateContentResponse, or of the last one in a (buffered) array of them."""
    if isinstance(obj, list):
        found = [usage_from_response(item) for item in obj]
        return next((u for u in reversed(found) if u is not None), None)
    if not isinstance(obj, dict):
        return None
    version = obj.get("modelVersion") if isinstance(obj.get("modelVersion"), str) else None
    return usage_from_metadata(obj.get("usageMetadata"), version)


def _finished(obj: dict[str, Any]) -> bool:
    candidates = obj.get("candidates")
    return isinstance(candidates, list) and any(
        isinstance(c, dict) and c.get("finishReason") for c in candidates
    )


_HAS_USAGE = re.compile(rb'"usageMetadata"\s*:\s*\{')


class GenerateStreamMeter(UsageTap):
    """Usage from a Gemini stream: SSE (``alt=sse``, CRLF) or a JSON array, told apart by the
    first byte. Each usageMetadata is a snapshot; the one with a finishReason is final."""

    def __init__(self) -> None:
        super().__init__(_HAS_USAGE)
        self._array: JsonArrayElements | None = None
        self._format_known = False

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        if not self._format_known and chunk.strip():
            self._format_known = True
            if chunk.lstrip().startswith(b"["):
                self._array = JsonArrayElements()
        if self._array is None:
            return super().__call__(chunk)
        for element in self._array.feed(chunk):
            if _HAS_USAGE.search(element):
                try:
                    obj = json.loads(element)
                except (ValueError, RecursionError):  # not JSON, or nested too deep to read
                    continue
                if isinstance(obj, dict):
                    self.on_event(obj)
        return chunk

    def on_event(self, obj: dict[str, Any]) -> None:
        usage = usage_from_response(obj)
        if usage is not None:
            self.usage = usage
            self.usage_is_final = self.usage_is_final or _finished(obj)
            # Gemini thinks before its first candidate; each snapshot counts the thoughts so far.
            self.usage_counts_reasoning = True


class JsonArrayElements:
    """Splits a JSON array arriving in pieces into its top-level elements, as raw bytes."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._depth = 0  # 1 inside the array itself
        self._in_string = False
        self._escaped = False
        self._start: int | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        elements: list[bytes] = []
        offset = len(self._pending)
        self._pending += chunk
        for index in range(offset, len(self._pending)):
            byte = self._pending[index]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:  # quote
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                self._depth += 1
                if self._depth == 2:
                    self._start = index
            elif byte in (0x7D, 0x5D):  # } ]
                if self._depth == 2 and self._start is not None:
                    elements.append(bytes(self._pending[self._start : index + 1]))
                    self._start = None
                self._depth -= 1
        keep_from = self._start if self._start is not None else len(self._pending)
        if self._start is not None:
            self._start = 0
        del self._pending[:keep_from]
        return elements


class Generate(ReportsUsageUnasked):
    """``:generateContent`` or ``:streamGenerateContent`` as a metered API."""

    def __init__(self, method: str) -> None:
        self.endpoint = f"/v1beta/models/*:{method}"

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        return parse_generate_request(body, path)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        return usage_from_response(obj)

    def stream_meter(self, *, strip_injected_usage: bool) -> GenerateStreamMeter:
        return GenerateStreamMeter()

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        """The model is in the URL; the max output in ``generationConfig.maxOutputTokens``."""
        if change.max_output is not None:
            data = json.loads(body)
            config = data.get("generationConfig")
            data["generationConfig"] = {
                **(config if isinstance(config, dict) else {}),
                "maxOutputTokens": change.max_output,
            }
            body = json_body(data)
        if change.model is not None:
            route, sep, query = path.partition("?")
            match = ROUTE.match(unquote(route))
            if match is not None:
                start, end = match.span("model")
                route = unquote(route)
                # Keep the collection the URL named: models/ or tunedModels/.
                collection, _, _ = route[start:end].rpartition("/")
                prefix = f"{collection}/" if collection else ""
                path = route[:start] + prefix + change.model + route[end:] + sep + query
        return body, path


_STATUSES = {
    400: "INVALID_ARGUMENT",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    407: "UNAUTHENTICATED",
    423: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """Google's error shape; the refusal code travels in ``x-spendbrake-reason``."""
    kind = _STATUSES.get(status, "INTERNAL")
    return {"error": {"code": status, "message": message, "status": kind}}
