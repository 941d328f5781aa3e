"""The benchmark client's pure helpers (scripts/bench_async.py): how it cuts SSE events out of
what it reads, and its percentiles. The benchmarks themselves never run in the test suite."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_async import percentile, sse_events


def test_an_event_is_taken_only_once_its_blank_line_has_arrived() -> None:
    buffer = bytearray(b'data: {"a":1}\n\ndata: {"b"')
    assert sse_events(buffer) == [b'data: {"a":1}']
    assert buffer == bytearray(b'data: {"b"')
    buffer += b":2}\n"
    assert sse_events(buffer) == []
    buffer += b"\ndata: [DONE]\n\n"
    assert sse_events(buffer) == [b'data: {"b":2}', b"data: [DONE]"]
    assert buffer == bytearray()


def test_named_events_keep_their_lines_together() -> None:
    buffer = bytearray(b"event: message_stop\ndata: {}\n\n")
    assert sse_events(buffer) == [b"event: message_stop\ndata: {}"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
