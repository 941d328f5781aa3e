"""The OpenAI Responses API: what a request asks for, including history kept server-side."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendbrake.ledger import TokenCounts
from spendbrake.providers.base import UnreadableRequest
from spendbrake.providers.openai_responses import (
    Responses,
    ResponseSizes,
    ResponsesStreamMeter,
    parse_responses_request,
    usage_from_response,
)

USAGE = {
    "input_tokens": 37,
    "input_tokens_details": {"cached_tokens": 5},
    "output_tokens": 3,
    "output_tokens_details": {"reasoning_tokens": 1},
    "total_tokens": 40,
}


def event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def stream(terminal: str) -> bytes:
    response = {"id": "resp_0d1e", "model": "gpt-4.1-2025-04-14", "service_tier": "default"}
    return b"".join(
        [
            event(
                "response.created",
                {"type": "response.created", "response": {**response, "usage": None}},
            ),
            event(
                "response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}
            ),
            event(terminal, {"type": terminal, "response": {**response, "usage": USAGE}}),
        ]
    )


def body(**fields: object) -> bytes:
    return json.dumps({"model": "gpt-4.1", "input": "hi", **fields}).encode()


def test_instructions_items_and_tools_are_counted_and_images_allowed_for() -> None:
    request = parse_responses_request(
        body(
            instructions="be brief",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "data:..."},
                    ],
                },
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            tools=[{"type": "function", "name": "f"}],
            max_output_tokens=100,
            stream=True,
        ),
        ResponseSizes(),
    )
    texts = "\n".join(request.prompt_texts)
    for expected in ("be brief", "look", '"output": "42"', '"name": "f"'):
        assert expected in texts
    assert (request.max_output, request.stream, request.wants_usage_injection) == (100, True, False)
    assert request.fixed_prompt_tokens == 3 + 2 * 4 + 4_000 + 20


def test_a_continuation_is_held_for_the_history_the_proxy_saw() -> None:
    sizes = ResponseSizes()
    usage_from_response({"id": "resp_1", "usage": USAGE}, sizes)
    known = parse_responses_request(body(previous_response_id="resp_1"), sizes)
    unknown = parse_responses_request(body(previous_response_id="resp_unseen"), sizes)
    plain = parse_responses_request(body(), sizes)
    assert known.fixed_prompt_tokens - plain.fixed_prompt_tokens == 40  # its input + output
    assert unknown.fixed_prompt_tokens - plain.fixed_prompt_tokens == 1_047_576  # a full context


def test_remembered_sizes_are_bounded() -> None:
    sizes = ResponseSizes(capacity=2)
    for n in range(3):
        sizes.remember(f"resp_{n}", n)
    assert (sizes.size_of("resp_0"), sizes.size_of("resp_2")) == (None, 2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": 5}, "input must be text"),
        ({"max_output_tokens": 0}, "at least 1"),
        ({"previous_response_id": 3}, "must be a string"),
    ],
)
def test_unreadable_requests_say_why(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UnreadableRequest, match=message):
        parse_responses_request(body(**fields), ResponseSizes())


@pytest.mark.parametrize(
    "terminal", ["response.completed", "response.incomplete", "response.failed"]
)
def test_usage_comes_from_whichever_terminal_event_ends_the_stream(terminal: str) -> None:
    meter = ResponsesStreamMeter(ResponseSizes())
    transcript = stream(terminal)
    assert meter(transcript) == transcript
    meter(b"")
    assert meter.usage is not None
    assert meter.usage.tokens == TokenCounts(
        input_tokens=37, cached_input_tokens=5, output_tokens=3, reasoning_tokens=1
    )
    assert meter.usage.model == "gpt-4.1-2025-04-14"


@given(
    st.lists(st.integers(min_value=1, max_value=len(stream("response.completed")) - 1), max_size=20)
)
def test_any_chunking_gives_the_same_usage_and_bytes(cuts: list[int]) -> None:
    transcript = stream("response.completed")
    api = Responses()
    meter = api.stream_meter(strip_injected_usage=False)
    bounds = [0, *sorted(set(cuts)), len(transcript)]
    passed = b"".join(meter(transcript[a:b]) for a, b in itertools.pairwise(bounds))  # type: ignore[misc]
    meter(b"")
    assert passed == transcript
    assert meter.usage is not None
    assert meter.usage.tokens.input_tokens == 37
    assert api.sizes.size_of("resp_0d1e") == 40  # a stream's response is remembered too
