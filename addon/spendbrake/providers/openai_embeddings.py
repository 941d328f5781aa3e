"""OpenAI Embeddings (``POST /v1/embeddings``): input tokens only, never streamed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from spendbrake.ledger import TokenCounts
from spendbrake.providers.base import (
    CallRequest,
    MeteredUsage,
    ReportsUsageUnasked,
    Rewrite,
    UnreadableRequest,
    count,
    fingerprint_of,
    load_json_object,
    required_model,
    rewrite_json,
)
from spendbrake.providers.openai import ChatStreamMeter

EMBEDDINGS = "/v1/embeddings"


def parse_embeddings_request(body: bytes) -> CallRequest:
    data = load_json_object(body)
    model = required_model(data)
    texts, token_ids = _inputs(data.get("input"))
    return CallRequest(
        model=model,
        fingerprint=fingerprint_of(model, data),
        stream=False,
        max_output=0,  # embeddings produce no billed output
        choices=1,
        service_tier=None,
        prompt_texts=tuple(texts),
        fixed_prompt_tokens=token_ids,  # inputs given as token ids are counted as they are
    )


def _inputs(value: Any) -> tuple[list[str], int]:
    """The input's texts, and how many tokens were given as ids."""
    if isinstance(value, str):
        return [value], 0
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value), 0
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [], len(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [], sum(len(v) for v in value)
    raise UnreadableRequest("input must be text, a list of texts, or token ids")


def usage_from_embeddings(obj: Any) -> MeteredUsage | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("usage"), dict):
        return None
    tokens = TokenCounts(input_tokens=count(obj["usage"], "prompt_tokens"))
    model = obj.get("model") if isinstance(obj.get("model"), str) and obj.get("model") else None
    return MeteredUsage(tokens=tokens, model=model, service_tier=None)


class Embeddings(ReportsUsageUnasked):
    """``POST /v1/embeddings`` as a metered API."""

    endpoint = EMBEDDINGS

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        return parse_embeddings_request(body)

    def usage_from_json(self, obj: Any) -> MeteredUsage | None:
        return usage_from_embeddings(obj)

    def stream_meter(self, *, strip_injected_usage: bool) -> ChatStreamMeter:
        # Embeddings are never streamed; should a stream come back anyway, nothing is dropped
        # and, with no usage in it, the call is charged its hold.
        return ChatStreamMeter(strip_usage_chunk=False)

    def rewritten(self, body: bytes, path: str, change: Rewrite) -> tuple[bytes, str]:
        # An embedding has no output to cap: only the model can change.
        return rewrite_json(body, replace(change, max_output=None), output_fields=(),
                            default_field=""), path  # fmt: skip
