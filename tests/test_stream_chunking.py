"""Every stream meter, every way the network may cut a stream: the same usage comes out, and the
client receives exactly the bytes upstream sent.

The transcripts carry raw UTF-8 (a 4-byte emoji, CJK, an accent) and come with LF and with
CRLF line ends, and every split includes one inside a multi-byte character and one between a
``\\r`` and its ``\\n``: the cuts a meter that decoded chunks or split lines naively would trip on.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendbrake.ledger import TokenCounts
from spendbrake.providers import ANTHROPIC, COMPATIBLE, GEMINI, OPENAI, classify_route
from spendbrake.providers.base import Api, StreamMeter

TEXT = "Héllo 東京 🚀 done"


def sse(events: list[tuple[str | None, Any]], line_end: str) -> bytes:
    out = ""
    for name, data in events:
        if name:
            out += f"event: {name}{line_end}"
        payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out += f"data: {payload}{line_end}{line_end}"
    return out.encode()


def chat(line_end: str) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}
    return sse(
        [
            (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            (None, {**base, "choices": [{"index": 0, "delta": {"content": TEXT}}]}),
            (None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            (
                None,
                {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 19, "completion_tokens": 7, "total_tokens": 26},
                },
            ),
            (None, "[DONE]"),
        ],
        line_end,
    )


def responses(line_end: str) -> bytes:
    usage = {
        "input_tokens": 37,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 40,
    }
    done = {"id": "resp_1", "model": "gpt-4.1-2025-04-14", "status": "completed", "usage": usage}
    return sse(
        [
            ("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "delta": TEXT}),
            ("response.completed", {"type": "response.completed", "response": done}),
        ],
        line_end,
    )


def messages(line_end: str) -> bytes:
    start_usage = {
        "input_tokens": 25,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "output_tokens": 1,
    }
    start = {"id": "msg_1", "model": "claude-sonnet-4-5-20250929", "usage": start_usage}
    text = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": TEXT},
    }
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    return sse(
        [
            ("message_start", {"type": "message_start", "message": start}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", text),
            ("message_delta", {**end, "usage": {"output_tokens": 12}}),
            ("message_stop", {"type": "message_stop"}),
        ],
        line_end,
    )


def gemini_chunks() -> list[dict[str, Any]]:
    def chunk(text: str, candidates: int, thoughts: int, last: bool) -> dict[str, Any]:
        usage = {
            "promptTokenCount": 9,
            "candidatesTokenCount": candidates,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": 9 + candidates + thoughts,
        }
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if last:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
        }

    return [chunk(TEXT, 3, 4, last=False), chunk(" and more", 7, 4, last=True)]


def gemini_sse(line_end: str) -> bytes:
    return sse([(None, c) for c in gemini_chunks()], line_end)


def gemini_array(line_end: str) -> bytes:
    elements = [json.dumps(c, ensure_ascii=False) for c in gemini_chunks()]
    return ("[" + f"{line_end},{line_end}".join(elements) + "]").encode()


@dataclass(frozen=True)
class Case:
    name: str
    api: Api
    transcript: Callable[[str], bytes]
    expected: TokenCounts


def api_of(provider: Any, path: str) -> Api:
    route = classify_route(provider, "POST", path)
    assert route.api is not None, path
    return route.api


MISTRAL = next(p for p in COMPATIBLE if p.id == "mistral")
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
CASES = [
    Case(
        "openai chat",
        api_of(OPENAI, "/v1/chat/completions"),
        chat,
        TokenCounts(input_tokens=19, output_tokens=7),
    ),
    Case(
        "mistral chat",
        api_of(MISTRAL, "/v1/chat/completions"),
        chat,
        TokenCounts(input_tokens=19, output_tokens=7),
    ),
    Case(
        "openai responses",
        api_of(OPENAI, "/v1/responses"),
        responses,
        TokenCounts(input_tokens=37, cached_input_tokens=5, output_tokens=3, reasoning_tokens=1),
    ),
    Case(
        "anthropic messages",
        api_of(ANTHROPIC, "/v1/messages"),
        messages,
        TokenCounts(input_tokens=35, cached_input_tokens=10, output_tokens=12),
    ),
    Case(
        "gemini sse",
        api_of(GEMINI, GEMINI_STREAM + "?alt=sse"),
        gemini_sse,
        TokenCounts(input_tokens=9, output_tokens=11, reasoning_tokens=4),
    ),
    Case(
        "gemini json array",
        api_of(GEMINI, GEMINI_STREAM),
        gemini_array,
        TokenCounts(input_tokens=9, output_tokens=11, reasoning_tokens=4),
    ),
]


def run(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    out = b""
    for chunk in [*chunks, b""]:  # b"": mitmproxy's end of stream
        result = meter(chunk)
        if isinstance(result, bytes):
            out += result
        else:
            assert b"" not in result or chunk == b"", "an empty chunk mid-stream ends the body"
            out += b"".join(result)
    return out


def awkward_cuts(transcript: bytes) -> list[int]:
    """Positions inside a multi-byte UTF-8 character and between a CR and its LF."""
    inside = [i for i in range(1, len(transcript)) if transcript[i] & 0xC0 == 0x80]
    crlf = [i + 1 for i in range(len(transcript) - 1) if transcript[i : i + 2] == b"\r\n"]
    return inside + crlf


@pytest.mark.parametrize("line_end", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_gives_the_same_usage_and_the_same_bytes(
    case: Case, line_end: str, data: st.DataObject
) -> None:
    transcript = case.transcript(line_end)
    assert TEXT.encode() in transcript  # raw UTF-8, not \\u escapes
    awkward = awkward_cuts(transcript)
    forced = data.draw(st.lists(st.sampled_from(awkward), min_size=1, max_size=4))
    free = data.draw(st.lists(st.integers(1, len(transcript) - 1), max_size=12))
    bounds = [0, *sorted({*forced, *free}), len(transcript)]
    chunks = [transcript[a:b] for a, b in itertools.pairwise(bounds)]

    meter = case.api.stream_meter(strip_injected_usage=False)
    assert run(meter, chunks) == transcript
    assert meter.usage is not None
    assert meter.usage_is_final
    assert meter.usage.tokens == case.expected
