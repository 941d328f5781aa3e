"""OpenAI Chat Completions on the wire: what a request asks for, what a response costs."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.ledger import TokenCounts
from spendbrake.providers import OPENAI, RouteKind, classify_route, provider_for_host
from spendbrake.providers.openai import (
    ChatStreamMeter,
    UnreadableRequest,
    error_body,
    parse_chat_request,
    usage_from_completion,
    with_include_usage,
)

# The transcript of shared/reference/providers.md §3.1, with include_usage.
CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None},
    {"choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": None},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    {
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "choices": [],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 2,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    },
]
EVENTS = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in CHUNKS] + [b"data: [DONE]\n\n"]
STREAM = b"".join(EVENTS)


def body(**fields: object) -> bytes:
    return json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


def test_only_api_openai_com_is_an_llm_host() -> None:
    assert provider_for_host("api.openai.com") is OPENAI
    assert provider_for_host("API.OpenAI.com.") is OPENAI
    assert provider_for_host("example.com") is None


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/chat/completions", RouteKind.METERED),
        ("POST", "/v1/chat/completions?x=1", RouteKind.METERED),
        ("GET", "/v1/models", RouteKind.FREE),
        ("POST", "/v1/completions", RouteKind.METERED),
        ("POST", "/v1/responses", RouteKind.METERED),
        ("POST", "/v1/embeddings", RouteKind.METERED),
        ("POST", "/v1/responses/input_tokens", RouteKind.FREE),
        ("POST", "/v1/images/generations", RouteKind.UNKNOWN),
        ("POST", "/v1/batches", RouteKind.UNKNOWN),
    ],
)
def test_routes_are_metered_free_or_refused(method: str, path: str, kind: RouteKind) -> None:
    assert classify_route(OPENAI, method, path).kind is kind


def test_a_request_states_model_stream_and_max_output() -> None:
    request = parse_chat_request(body(stream=True, max_completion_tokens=50, max_tokens=9, n=3))
    assert (request.model, request.stream) == ("gpt-4o", True)
    assert request.wants_usage_injection  # OpenAI streams carry no usage unless asked
    assert request.max_output == 50  # max_completion_tokens wins over the deprecated max_tokens
    assert request.choices == 3
    assert parse_chat_request(body()).max_output is None


def test_prompt_text_includes_every_message_part_and_tool_schema() -> None:
    request = parse_chat_request(
        json.dumps(
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "name": "ann", "content": [{"type": "text", "text": "look"}]},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                ],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            }
        ).encode()
    )
    assert "be brief" in request.prompt_texts
    assert "look" in request.prompt_texts
    assert "ann" in request.prompt_texts
    assert any('"name": "f"' in text for text in request.prompt_texts)
    # reply priming 3 + 3 per message + 1 for the name + the image allowance + the tools margin
    assert request.fixed_prompt_tokens == 3 + 9 + 1 + 4_000 + 20


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "no model"),
        (b'{"model": "gpt-4o", "messages": []}', "no messages"),
        (body(max_tokens=-1), "max_tokens must be an integer of at least 0"),
        (body(max_tokens="10"), "max_tokens must be an integer"),
        (body(n=0), "n must be an integer of at least 1"),
        (b'{"model": "gpt-4o", "messages": [{"content": 5}]}', "neither text nor a list"),
    ],
)
def test_unreadable_requests_say_why(raw: bytes, message: str) -> None:
    with pytest.raises(UnreadableRequest, match=message):
        parse_chat_request(raw)


def test_include_usage_is_added_and_other_stream_options_kept() -> None:
    rewritten = json.loads(with_include_usage(body(stream=True, stream_options={"x": 1})))
    assert rewritten["stream_options"] == {"x": 1, "include_usage": True}


def test_usage_of_a_completion_counts_cached_and_reasoning_tokens() -> None:
    usage = usage_from_completion(
        {
            "model": "gpt-4o-2024-08-06",
            "service_tier": "default",
            "usage": {
                "prompt_tokens": 1117,
                "completion_tokens": 9,
                "total_tokens": 1126,
                "prompt_tokens_details": {"cached_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
    )
    assert usage is not None
    assert usage.tokens == TokenCounts(
        input_tokens=1117, cached_input_tokens=1024, output_tokens=9, reasoning_tokens=4
    )
    assert (usage.model, usage.service_tier) == ("gpt-4o-2024-08-06", "default")
    assert usage_from_completion({"usage": None}) is None


def test_reasoning_left_out_of_completion_tokens_is_still_billed() -> None:
    usage = usage_from_completion(
        {"usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 399}}
    )
    assert usage is not None
    assert usage.tokens.output_tokens == 387


def feed(meter: ChatStreamMeter, chunks: list[bytes]) -> bytes:
    out = b""
    for chunk in [*chunks, b""]:
        result = meter(chunk)
        out += result if isinstance(result, bytes) else b"".join(result)
    return out


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=20))
def test_the_meter_passes_every_byte_when_the_client_asked_for_usage(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    meter = ChatStreamMeter(strip_usage_chunk=False)
    assert feed(meter, chunks) == STREAM
    assert meter.usage is not None
    assert meter.usage.tokens.input_tokens == 19


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=20))
def test_the_meter_drops_only_the_usage_chunk_it_asked_for(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    meter = ChatStreamMeter(strip_usage_chunk=True)
    assert feed(meter, chunks) == EVENTS[0] + EVENTS[1] + EVENTS[2] + EVENTS[4]
    assert meter.usage is not None
    assert meter.usage.tokens.output_tokens == 2


def test_the_meter_never_returns_empty_bytes_mid_stream() -> None:
    meter = ChatStreamMeter(strip_usage_chunk=True)
    assert meter(b"data: {") == []  # b"" here would end an HTTP/1.1 body early


def test_the_error_shape_is_openais() -> None:
    assert error_body(402, "daily_budget_exceeded", "no") == {
        "error": {"message": "no", "type": "insufficient_quota", "code": "daily_budget_exceeded"}
    }


def test_legacy_completions_default_to_16_tokens_and_bill_every_candidate() -> None:
    from spendbrake.providers.openai import parse_completions_request

    default = parse_completions_request(b'{"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}')
    assert (default.max_output, default.choices, default.prompt_texts) == (16, 1, ("Say hi",))
    best = parse_completions_request(
        b'{"model": "gpt-3.5-turbo-instruct", "prompt": [1, 2, 3], '
        b'"max_tokens": 5, "n": 2, "best_of": 4}'
    )
    assert (best.max_output, best.choices, best.fixed_prompt_tokens) == (5, 4, 3)
    with pytest.raises(UnreadableRequest, match="prompt must be"):
        parse_completions_request(b'{"model": "m", "prompt": {"a": 1}}')


def test_legacy_completions_hold_every_answer_to_every_prompt_of_a_batch() -> None:
    # A list of prompts is a batch: OpenAI answers each of them n times (best_of: generates
    # best_of candidates for each), and bills every answer.
    from spendbrake.providers.openai import parse_completions_request

    texts = parse_completions_request(
        b'{"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b", "c"], "max_tokens": 9}'
    )
    assert (texts.max_output, texts.choices) == (9, 3)
    best = parse_completions_request(
        b'{"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "n": 2, "best_of": 3}'
    )
    assert best.choices == 2 * 3
    ids = parse_completions_request(
        b'{"model": "gpt-3.5-turbo-instruct", "prompt": [[1, 2], [3], [4]], "n": 2}'
    )
    assert (ids.choices, ids.fixed_prompt_tokens) == (3 * 2, 4)
    # A flat list of token ids is one prompt.
    one = parse_completions_request(b'{"model": "gpt-3.5-turbo-instruct", "prompt": [1, 2, 3]}')
    assert one.choices == 1


def test_embeddings_hold_their_input_only() -> None:
    from spendbrake.providers.openai_embeddings import (
        parse_embeddings_request,
        usage_from_embeddings,
    )

    request = parse_embeddings_request(
        b'{"model": "text-embedding-3-small", "input": ["a", "b c"]}'
    )
    assert (request.max_output, request.prompt_texts) == (0, ("a", "b c"))
    ids = parse_embeddings_request(b'{"model": "text-embedding-3-small", "input": [[1, 2], [3]]}')
    assert ids.fixed_prompt_tokens == 3
    with pytest.raises(UnreadableRequest, match="input must be"):
        parse_embeddings_request(b'{"model": "text-embedding-3-small", "input": []}')
    usage = usage_from_embeddings(
        {"model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    )
    assert usage is not None
    assert usage.tokens == TokenCounts(input_tokens=8)


def test_relayed_text_is_bounded_by_its_escaped_bytes() -> None:
    from spendbrake.providers.base import generated_text_bytes

    event = b'data: {"choices":[{"delta":{"content":"Hi \\"x\\" \\u00e9"}}],"usage":null}\n\n'
    assert generated_text_bytes(event) == len(b'Hi \\"x\\" \\u00e9')  # >= its 8 UTF-8 bytes
    meter = ChatStreamMeter(strip_usage_chunk=False)
    meter(event)
    meter(event)
    assert meter.relayed_text_bytes == 2 * generated_text_bytes(event)
    assert not meter.usage_is_final


def test_a_data_line_of_several_megabytes_passes_whole_and_is_metered() -> None:
    text = b"x" * 5_000_000
    event = b'data: {"choices":[{"index":0,"delta":{"content":"' + text + b'"}}],"usage":null}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    stream = event + usage + b"data: [DONE]\n\n"
    meter = ChatStreamMeter(strip_usage_chunk=True)
    received = b""
    for start in range(0, len(stream), 65_536):
        result = meter(stream[start : start + 65_536])
        received += result if isinstance(result, bytes) else b"".join(result)
    tail = meter(b"")
    received += tail if isinstance(tail, bytes) else b"".join(tail)
    assert received == event + b"data: [DONE]\n\n"
    assert meter.relayed_text_bytes == len(text)
    assert meter.usage is not None
    assert meter.usage.tokens.output_tokens == 4
