"""SSE framing: whole events out of arbitrary chunks, byte for byte."""

from hypothesis import given
from hypothesis import strategies as st

from spendbrake.sse import EventSplitter, event_data

STREAM = (
    b'data: {"a":1}\n\n'
    b"data: x\r\n\r\n"  # Gemini's CRLF
    b": OPENROUTER PROCESSING\n\n"  # comment keep-alive
    b"event: e\ndata: l1\ndata: l2\r\r"  # CR line ends, multi-line data
    b"data: [DONE]\n\n"
)
EVENTS = [
    b'data: {"a":1}\n\n',
    b"data: x\r\n\r\n",
    b": OPENROUTER PROCESSING\n\n",
    b"event: e\ndata: l1\ndata: l2\r\r",
    b"data: [DONE]\n\n",
]


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=30))
def test_any_chunking_yields_the_same_events(cuts: list[int]) -> None:
    splitter = EventSplitter()
    events: list[bytes] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(STREAM)]:
        events += splitter.feed(STREAM[previous:cut])
        previous = cut
    assert events == EVENTS
    assert splitter.flush() == b""


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: x\r\n\r") == []
    assert splitter.feed(b"\n") == [b"data: x\r\n\r\n"]


def test_an_unterminated_tail_is_returned_by_flush() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: done\n\ndata: partial") == [b"data: done\n\n"]
    assert splitter.flush() == b"data: partial"


def test_event_data_joins_data_lines_and_ignores_the_rest() -> None:
    assert event_data(b"event: e\ndata: l1\ndata:l2\nid: 3\n\n") == b"l1\nl2"
    assert event_data(b": comment\n\n") is None
