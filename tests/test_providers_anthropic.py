"""Anthropic Messages on the wire: what a request asks for, what a response costs."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.ledger import TokenCounts
from spendbrake.providers import ANTHROPIC, RouteKind, classify_route, provider_for_host
from spendbrake.providers.anthropic import (
    MessagesStreamMeter,
    error_body,
    parse_messages_request,
    usage_from_message,
)
from spendbrake.providers.base import UnreadableRequest

# shared/reference/providers.md §3.4, byte for byte apart from the JSON spacing.
TRANSCRIPT = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "usage": {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 2048,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Héllo"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 7},
        },
    ),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
STREAM = b"".join(
    f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
    for name, data in TRANSCRIPT
)


def body(**fields: object) -> bytes:
    base = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return json.dumps({**base, **fields}).encode()


def test_api_anthropic_com_is_an_llm_host_with_messages_metered_and_counting_free() -> None:
    assert provider_for_host("api.anthropic.com") is ANTHROPIC
    assert classify_route(ANTHROPIC, "POST", "/v1/messages").kind is RouteKind.METERED
    assert classify_route(ANTHROPIC, "POST", "/v1/messages/count_tokens").kind is RouteKind.FREE
    assert classify_route(ANTHROPIC, "POST", "/v1/messages/batches").kind is RouteKind.UNKNOWN


def test_a_request_states_model_stream_and_max_tokens() -> None:
    request = parse_messages_request(body(stream=True))
    assert (request.model, request.stream, request.max_output) == ("claude-haiku-4-5", True, 100)
    assert request.tokenizer == "claude"
    assert not request.wants_usage_injection  # Anthropic always reports usage
    assert request.cache_write is None


def test_system_tools_and_every_block_kind_are_counted() -> None:
    request = parse_messages_request(
        body(
            system=[{"type": "text", "text": "be brief"}],
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "found"}],
                        }
                    ],
                },
            ],
        )
    )
    texts = "\n".join(request.prompt_texts)
    for expected in ("be brief", "look", '"name": "lookup"', "found", '"input_schema"'):
        assert expected in texts
    assert "AAAA" not in texts  # base64 is never tokenized as text
    # base 10 + 5 per message x 3 + the image allowance + the tool-use system prompt
    assert request.fixed_prompt_tokens == 10 + 15 + 5_000 + 346


@pytest.mark.parametrize(
    ("fields", "ttl"),
    [
        ({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]}, "5m"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "s",
                                "cache_control": {"type": "ephemeral", "ttl": "1h"},
                            }
                        ],
                    }
                ]
            },
            "1h",
        ),
        ({"cache_control": {"type": "ephemeral"}}, "5m"),
    ],
)
def test_anything_marked_for_caching_makes_the_hold_a_cache_write(
    fields: dict[str, object], ttl: str
) -> None:
    assert parse_messages_request(body(**fields)).cache_write == ttl


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            json.dumps(
                {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            "requires max_tokens",
        ),
        (body(max_tokens=-5), "max_tokens must be an integer of at least 0"),
        (body(messages=[]), "no messages"),
        (body(model=""), "no model"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_unreadable_requests_say_why(raw: bytes, message: str) -> None:
    with pytest.raises(UnreadableRequest, match=message):
        parse_messages_request(raw)


def test_billed_input_is_uncached_plus_cache_writes_plus_cache_reads() -> None:
    usage = usage_from_message(
        {
            "model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 2048,
                "cache_read_input_tokens": 100,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 0,
                    "ephemeral_1h_input_tokens": 2048,
                },
                "output_tokens": 6,
            },
        }
    )
    assert usage is not None
    assert usage.tokens == TokenCounts(
        input_tokens=2160,
        cached_input_tokens=100,
        cache_write_tokens=2048,
        cache_write_1h_tokens=2048,
        output_tokens=6,
    )


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=25))
def test_the_stream_meter_replaces_cumulative_fields_and_passes_every_byte(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    meter = MessagesStreamMeter()
    passed = b"".join(meter(STREAM[a:b]) for a, b in itertools.pairwise(bounds))  # type: ignore[misc]
    assert passed + (meter(b"") or b"") == STREAM  # type: ignore[operator]
    assert meter.usage is not None
    assert meter.usage.model == "claude-sonnet-4-5-20250929"
    # output 15 (the last delta), not 1 + 7 + 15: cumulative counters are never summed
    assert meter.usage.tokens == TokenCounts(
        input_tokens=2073, cached_input_tokens=2048, output_tokens=15
    )
    assert meter.usage_is_final


def test_newer_deltas_carrying_input_fields_replace_them_too() -> None:
    meter = MessagesStreamMeter()
    meter(STREAM.split(b"event: content_block_start")[0])
    meter(
        b'event: message_delta\ndata: {"type":"message_delta","usage":'
        b'{"input_tokens":30,"cache_read_input_tokens":0,"output_tokens":9}}\n\n'
    )
    assert meter.usage is not None
    assert meter.usage.tokens == TokenCounts(input_tokens=30, output_tokens=9)


def test_a_stream_that_errors_keeps_the_usage_seen_so_far() -> None:
    meter = MessagesStreamMeter()
    meter(STREAM.split(b"event: message_delta")[0])
    meter(
        b'event: error\ndata: {"type":"error",'
        b'"error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert meter.usage is not None
    assert meter.usage.tokens.output_tokens == 1
    assert meter.usage.tokens.input_tokens == 2073
    assert not meter.usage_is_final  # message_start's output is only a first figure
    assert meter.relayed_text_bytes == len("Héllo".encode())  # what the client did receive


def test_the_error_shape_is_anthropics() -> None:
    assert error_body(402, "daily_budget_exceeded", "no") == {
        "type": "error",
        "error": {"type": "billing_error", "message": "no"},
    }


@pytest.mark.parametrize(("reported", "priced_as"), [("batch", "batch"), ("priority", None)])
def test_only_the_batch_tier_is_carried_to_pricing(reported: str, priced_as: str | None) -> None:
    usage = {"input_tokens": 5, "output_tokens": 2, "service_tier": reported}
    plain = usage_from_message({"model": "claude-sonnet-4-5", "usage": usage})
    assert plain is not None
    assert plain.service_tier == priced_as
    meter = MessagesStreamMeter()
    start = {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": usage}}
    meter(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    assert meter.usage is not None
    assert meter.usage.service_tier == priced_as
