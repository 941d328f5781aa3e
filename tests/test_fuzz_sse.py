"""The SSE framing and every stream meter, fed hostile streams in any chunking.

The meter runs inside mitmproxy's stream callable, on the bytes on their way to the client. What
must hold whatever upstream sends, cut wherever the network cuts it:

- the meter never raises (the proxy would then settle at the hold, but the meter is the only
  place that reads a streamed call's usage);
- the client receives exactly what upstream sent (less the usage chunk the proxy itself asked
  for), and the chunk boundaries change nothing: the same bytes, the same usage, the same
  relayed-text bound, whole or in pieces;
- usage is never negative.

The valid transcripts are ``test_stream_chunking``'s; here they are mutated event by event
(fields deleted or retyped, huge, negative, NaN, deep), byte by byte, or replaced by noise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzzing import (
    BY_NAME,
    FUZZ,
    Route,
    byte_mutated,
    dumps,
    mutated,
)
from spendbrake.providers.base import StreamMeter
from spendbrake.sse import EventSplitter, event_data
from test_fuzz_providers import assert_usage_sane
from test_stream_chunking import chat, gemini_array, gemini_sse, messages, responses


@dataclass(frozen=True)
class Stream:
    """A route's API and a valid stream transcript for it."""

    name: str
    route: Route = field(repr=False)
    transcript: Callable[[str], bytes] = field(repr=False)
    strip_usage: bool = False  # the proxy asked for the usage chunk, so it drops it

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self.name))  # hypothesis prints failing cases with this: the name only


STREAMS = (
    Stream("openai chat", BY_NAME["openai chat"], chat),
    Stream("openai chat, usage asked by the proxy", BY_NAME["openai chat"], chat, True),
    Stream("openai legacy", BY_NAME["openai legacy"], chat),
    Stream("openai responses", BY_NAME["openai responses"], responses),
    Stream("openai embeddings", BY_NAME["openai embeddings"], chat),
    Stream("anthropic messages", BY_NAME["anthropic messages"], messages),
    Stream("gemini sse", BY_NAME["gemini stream"], gemini_sse),
    Stream("gemini json array", BY_NAME["gemini stream"], gemini_array),
    Stream("azure deployment chat", BY_NAME["azure deployment chat"], chat, True),
    Stream("azure v1 responses", BY_NAME["azure v1 responses"], responses),
    Stream("openrouter chat", BY_NAME["openrouter chat"], chat, True),
)
BY_STREAM = {stream.name: stream for stream in STREAMS}
ALL_STREAMS = settings(FUZZ, max_examples=FUZZ.max_examples * len(STREAMS))


def relayed(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    """What the client receives, the stream ending as mitmproxy ends it (with b"")."""
    out = b""
    for chunk in [*chunks, b""]:
        result = meter(chunk)
        if isinstance(result, list):
            assert b"" not in result, "an empty chunk mid-stream ends an HTTP/1.1 body"
            out += b"".join(result)
        else:
            out += result
    return out


# -- hostile transcripts --------------------------------------------------------------------


def events_of(transcript: bytes) -> list[bytes]:
    splitter = EventSplitter()
    events = splitter.feed(transcript)
    tail = splitter.flush()
    return [*events, tail] if tail else events


@st.composite
def event_mutated(draw: st.DrawFn, transcript: bytes) -> bytes:
    """The transcript with some events' JSON mutated, and events dropped, repeated or swapped."""
    line_end = b"\r\n" if b"\r\n" in transcript else b"\n"
    events = events_of(transcript)
    out: list[bytes] = []
    for event in events:
        data = event_data(event)
        if data and data.startswith(b"{") and draw(st.booleans()):
            fields = [line for line in event.splitlines() if not line.startswith(b"data:")]
            head = b"".join(line + line_end for line in fields if line)
            value = draw(mutated(json.loads(data)))
            event = head + b"data: " + dumps(value, deep=draw(st.sampled_from((5, 3000))))
            event += line_end * 2
        out.append(event)
    operation = draw(st.sampled_from(("keep", "drop", "repeat", "swap")))
    at = draw(st.integers(0, len(out) - 1))
    if operation == "drop":
        del out[at]
    elif operation == "repeat":
        out.insert(at, out[at])
    elif operation == "swap" and at + 1 < len(out):
        out[at], out[at + 1] = out[at + 1], out[at]
    return b"".join(out)


@st.composite
def array_mutated(draw: st.DrawFn, transcript: bytes) -> bytes:
    """A JSON-array stream (Gemini without alt=sse), its elements mutated."""
    value = draw(mutated(json.loads(transcript)))
    return dumps(value, deep=draw(st.sampled_from((5, 3000))))


@st.composite
def hostile_transcripts(draw: st.DrawFn, stream: Stream) -> bytes:
    transcript = stream.transcript(draw(st.sampled_from(("\n", "\r\n"))))
    kind = draw(st.sampled_from(("events", "events", "bytes", "noise")))
    if kind == "noise":
        return draw(st.binary(max_size=300))
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            transcript = draw(byte_mutated(transcript))
        return transcript
    if transcript.startswith(b"["):
        return draw(array_mutated(transcript))
    return draw(event_mutated(transcript))


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut anywhere: inside a UTF-8 character, between CR and LF, one byte at a time."""
    if len(data) < 2:
        return [data] if data else []
    if draw(st.integers(0, 9)) == 0:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = draw(st.lists(st.integers(1, len(data) - 1), max_size=20))
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def stream_cases(draw: st.DrawFn) -> tuple[Stream, bytes, list[bytes]]:
    stream = draw(st.sampled_from(STREAMS))
    transcript = draw(hostile_transcripts(stream))
    return stream, transcript, draw(chunked(transcript))


# Regression: an Anthropic message_start whose usage is not an object (dict("abc") raised).
MESSAGE_START_USAGE_TEXT = (
    b"event: message_start\n"
    b'data: {"type": "message_start", "message": {"usage": "abc"}, "x": {"usage": {}}}\n\n'
)


# Regressions: events nested deeper than json.loads goes (RecursionError escaped the meter).
DEEP = b"[" * 3000 + b"]" * 3000
DEEP_CHAT_USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": ' + DEEP + b"}}\n\n"
DEEP_GEMINI_ELEMENT = b'[{"usageMetadata": {"promptTokenCount": ' + DEEP + b"}}]"
# Regression: a Responses event whose type is a list (unhashable: TypeError escaped).
LIST_TYPED_EVENT = b'data: {"type": [], "response": {"usage": {}}}\n\n'


@ALL_STREAMS
@given(case=stream_cases())
@example(
    case=(
        BY_STREAM["anthropic messages"],
        MESSAGE_START_USAGE_TEXT,
        [MESSAGE_START_USAGE_TEXT],
    )
)
@example(case=(BY_STREAM["openai chat"], DEEP_CHAT_USAGE, [DEEP_CHAT_USAGE]))
@example(case=(BY_STREAM["gemini json array"], DEEP_GEMINI_ELEMENT, [DEEP_GEMINI_ELEMENT]))
@example(case=(BY_STREAM["openai responses"], LIST_TYPED_EVENT, [LIST_TYPED_EVENT]))
def test_a_hostile_stream_in_any_chunking_is_relayed_and_metered_alike(
    case: tuple[Stream, bytes, list[bytes]],
) -> None:
    stream, transcript, chunks = case
    api = stream.route.api
    whole = api.stream_meter(strip_injected_usage=stream.strip_usage)
    pieces = api.stream_meter(strip_injected_usage=stream.strip_usage)

    sent_whole = relayed(whole, [transcript] if transcript else [])
    sent_in_pieces = relayed(pieces, chunks)

    assert sent_in_pieces == sent_whole
    if not stream.strip_usage:
        assert sent_whole == transcript
    assert pieces.usage == whole.usage
    assert pieces.usage_is_final == whole.usage_is_final
    assert pieces.relayed_text_bytes == whole.relayed_text_bytes >= 0
    assert_usage_sane(stream.route, whole.usage)


@pytest.mark.parametrize("stream", STREAMS, ids=[s.name for s in STREAMS])
def test_every_valid_transcript_meters_its_usage(stream: Stream) -> None:
    """The mutations start from streams every meter reads."""
    for line_end in ("\n", "\r\n"):
        meter = stream.route.api.stream_meter(strip_injected_usage=stream.strip_usage)
        relayed(meter, [stream.transcript(line_end)])
        assert meter.usage is not None
        assert meter.usage_is_final


@ALL_STREAMS
@given(case=stream_cases())
def test_the_proxys_own_usage_chunk_is_all_it_drops(
    case: tuple[Stream, bytes, list[bytes]],
) -> None:
    """With the usage chunk stripped, every other event still reaches the client, in order."""
    stream, transcript, chunks = case
    meter = stream.route.api.stream_meter(strip_injected_usage=True)
    sent = relayed(meter, chunks)
    received = events_of(transcript)
    kept = events_of(sent)
    dropped = [event for event in received if event not in kept]
    assert [event for event in received if event in kept] == kept
    for event in dropped:
        assert b'"usage"' in event


# -- the framing itself ---------------------------------------------------------------------

SSE_BYTES = st.lists(
    st.sampled_from([b"data: x", b"event: e", b":c", b"\n", b"\r", b"\r\n", b"", b"\xf0\x9f"]),
    max_size=40,
).map(b"".join)


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), SSE_BYTES), split=st.data())
def test_the_splitter_returns_every_byte_once_in_the_same_events_however_cut(
    data: bytes, split: st.DataObject
) -> None:
    whole = EventSplitter()
    whole_events = whole.feed(data)
    whole_tail = whole.flush()

    pieces = EventSplitter()
    events: list[bytes] = []
    for chunk in split.draw(chunked(data)):
        events += pieces.feed(chunk)
    tail = pieces.flush()

    assert b"".join(events) + tail == data
    assert (events, tail) == (whole_events, whole_tail)
