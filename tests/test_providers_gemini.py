"""Google Gemini on the wire: the model in the URL, usage snapshots, SSE (CRLF) or a JSON array."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.ledger import TokenCounts
from spendbrake.providers import GEMINI, RouteKind, classify_route, provider_for_host
from spendbrake.providers.base import UnreadableRequest
from spendbrake.providers.gemini import (
    GenerateStreamMeter,
    JsonArrayElements,
    error_body,
    parse_generate_request,
    usage_from_response,
)

PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
# shared/reference/providers.md §3.5: snapshots, the last one complete.
CHUNKS = [
    {
        "candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [
            {"content": {"parts": [{"text": " sky is blue"}], "role": "model"}, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [
            {
                "content": {"parts": [{"text": ""}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 9,
            "candidatesTokenCount": 12,
            "totalTokenCount": 486,
            "thoughtsTokenCount": 465,
        },
        "modelVersion": "gemini-2.5-flash",
    },
]
SSE = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in CHUNKS)
ARRAY = b"[" + b"\r\n,\r\n".join(json.dumps(c).encode() for c in CHUNKS) + b"]"
FINAL = TokenCounts(input_tokens=9, output_tokens=477, reasoning_tokens=465)


def body(**fields: object) -> bytes:
    return json.dumps(
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **fields}
    ).encode()


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", PATH, RouteKind.METERED),
        ("POST", STREAM_PATH, RouteKind.METERED),
        ("POST", "/v1/models/gemini-2.0-flash:generateContent?key=abc", RouteKind.METERED),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", RouteKind.FREE),
        ("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", RouteKind.UNKNOWN),
        ("GET", "/v1beta/models", RouteKind.FREE),
    ],
)
def test_the_route_names_model_and_method(method: str, path: str, kind: RouteKind) -> None:
    assert provider_for_host("generativelanguage.googleapis.com") is GEMINI
    assert classify_route(GEMINI, method, path).kind is kind


def test_a_request_states_model_stream_output_and_candidates() -> None:
    config = {"maxOutputTokens": 300, "candidateCount": 2}
    request = parse_generate_request(
        body(systemInstruction={"parts": [{"text": "be brief"}]}, generationConfig=config),
        STREAM_PATH,
    )
    assert (request.model, request.stream, request.max_output, request.choices) == (
        "gemini-2.5-flash",
        True,
        300,
        2,
    )
    assert request.prompt_texts == ("be brief", "hi")
    assert request.tokenizer == "gemini"
    assert parse_generate_request(body(), PATH).stream is False


def test_media_and_cached_content_are_allowed_for_not_tokenized() -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "A" * 4_000_000}}  # ~3 MB
    request = parse_generate_request(
        body(contents=[{"role": "user", "parts": [image]}], cachedContent="cachedContents/x"), PATH
    )
    assert request.prompt_texts == ()
    assert request.fixed_prompt_tokens == 4 + 3_000_000 // 100 + 1_048_576


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (body(), "/v1beta/models:generateContent", "names no model"),
        (b'{"contents": []}', PATH, "no contents"),
        (body(generationConfig={"maxOutputTokens": 0}), PATH, "maxOutputTokens must be"),
        (body(generationConfig=[]), PATH, "generationConfig is not"),
    ],
)
def test_unreadable_requests_say_why(raw: bytes, path: str, message: str) -> None:
    with pytest.raises(UnreadableRequest, match=message):
        parse_generate_request(raw, path)


def test_thoughts_and_tool_prompts_are_billed() -> None:
    usage = usage_from_response(
        {
            "usageMetadata": {
                "promptTokenCount": 8,
                "toolUsePromptTokenCount": 2,
                "candidatesTokenCount": 41,
                "thoughtsTokenCount": 120,
                "cachedContentTokenCount": 4,
            }
        }
    )
    assert usage is not None
    assert usage.tokens == TokenCounts(
        input_tokens=10, cached_input_tokens=4, output_tokens=161, reasoning_tokens=120
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.lists(st.integers(min_value=1, max_value=len(SSE) - 1), max_size=25))
def test_an_sse_stream_with_crlf_gives_the_last_snapshot(cuts: list[int]) -> None:
    meter = GenerateStreamMeter()
    passed = b"".join(meter(piece) for piece in split(SSE, cuts))  # type: ignore[misc]
    meter(b"")
    assert passed == SSE
    assert meter.usage is not None
    assert meter.usage.tokens == FINAL  # the last snapshot, never a sum of them
    assert meter.usage_is_final


@given(st.lists(st.integers(min_value=1, max_value=len(ARRAY) - 1), max_size=25))
def test_a_json_array_stream_gives_the_same_usage(cuts: list[int]) -> None:
    meter = GenerateStreamMeter()
    passed = b"".join(meter(piece) for piece in split(ARRAY, cuts))  # type: ignore[misc]
    meter(b"")
    assert passed == ARRAY
    assert meter.usage is not None
    assert meter.usage.tokens == FINAL
    assert meter.usage_is_final


def test_a_stream_cut_before_its_finish_has_only_a_partial_snapshot() -> None:
    meter = GenerateStreamMeter()
    meter(b"data: " + SSE.split(b"data: ")[1])  # the first event only
    assert meter.usage is not None
    assert meter.usage.tokens == TokenCounts(input_tokens=9)
    assert not meter.usage_is_final
    assert meter.relayed_text_bytes == len("The")
    # Gemini thinks before its first candidate: a snapshot counts the thoughts already spent.
    assert meter.usage_counts_reasoning


def test_a_stream_with_no_snapshot_yet_has_counted_no_reasoning() -> None:
    meter = GenerateStreamMeter()
    meter(b"data: ")
    assert meter.usage is None
    assert not meter.usage_counts_reasoning


def test_array_elements_survive_brackets_and_quotes_inside_strings() -> None:
    elements = JsonArrayElements()
    pieces = [b'[{"t": "a ] } \\" [ {"}', b', {"n": [1, {"x": 2}]}]']
    out = [e for piece in pieces for e in elements.feed(piece)]
    assert [json.loads(e) for e in out] == [{"t": 'a ] } " [ {'}, {"n": [1, {"x": 2}]}]


def test_the_error_shape_is_googles() -> None:
    assert error_body(402, "daily_budget_exceeded", "no") == {
        "error": {"code": 402, "message": "no", "status": "RESOURCE_EXHAUSTED"}
    }
