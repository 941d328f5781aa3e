"""Incremental Server-Sent Events framing: whole events out of arbitrary transport chunks.

Chunk boundaries are TCP reads or HTTP/2 frames, not event boundaries, so a splitter keeps the
unfinished tail between calls. Events are returned as the exact bytes received (terminator
included), so a caller that forwards them changes nothing the client sees. Lines may end in
CRLF (Gemini), LF (OpenAI, Anthropic) or CR, as the SSE specification allows.
"""

from __future__ import annotations

import re

# One line terminator, or an unfinished CR at the very end that may still become CRLF.
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\Z)")


class EventSplitter:
    def __init__(self) -> None:
        self._pending = bytearray()
        self._line_start = 0  # where the current, unfinished line starts
        self._search_from = 0  # bytes before this hold no line end: never scanned twice

    def feed(self, chunk: bytes) -> list[bytes]:
        """Append ``chunk``; return every event it completes, as raw bytes.

        Each byte is scanned once, so a data line of several megabytes arriving in many chunks
        costs linear time, not quadratic (the callable runs on the event loop).
        """
        self._pending += chunk
        events: list[bytes] = []
        event_start = 0
        line_start = self._line_start
        position = self._search_from
        while match := _LINE_END.search(self._pending, position):
            if match.start() == line_start and line_start > event_start:
                # A blank line ends the event. (A blank line with nothing before it is kept as
                # the head of the next event rather than sent as an empty one.)
                events.append(bytes(self._pending[event_start : match.end()]))
                event_start = match.end()
            line_start = position = match.end()
        del self._pending[:event_start]
        self._line_start = line_start - event_start
        # The last byte may be a CR whose LF is still on its way: look at it again next time.
        self._search_from = max(self._line_start, len(self._pending) - 1)
        return events

    def flush(self) -> bytes:
        """The unterminated tail at the end of the stream (usually empty)."""
        rest = bytes(self._pending)
        self._pending.clear()
        self._line_start = self._search_from = 0
        return rest


def event_data(raw_event: bytes) -> bytes | None:
    """The event's ``data`` field: its data lines joined by LF, or None when it has none."""
    lines = [
        line[5:].removeprefix(b" ")
        for line in _LINE_END.split(raw_event)
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None
