"""mitmproxy options whose values would undo what spendbrake promises, checked wherever the addon
runs: under ``spendbrake up``, which sets them itself, and under ``mitmdump -s``, which does not.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions

log = logging.getLogger(__name__)

# Reasoning models can think for many minutes without sending a byte; mitmproxy's default of
# 600 s would cut those calls (and bill them) silently.
TCP_TIMEOUT_S = 3600


def refuse_request_streaming(updated: set[str]) -> None:
    """``stream_large_bodies`` sends a large request body on to the provider before any hook has
    seen it (for a chunked body, with no hook at all): the call would go out unmetered."""
    if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
        raise exceptions.OptionsError(
            "spendbrake cannot meter calls with stream_large_bodies set: mitmproxy would send "
            "a large request body to the provider before spendbrake has read and held for it. "
            "Unset stream_large_bodies (LLM responses are streamed by spendbrake anyway)."
        )


def keep_long_silent_calls() -> None:
    """Raise mitmproxy's default idle timeout to spendbrake's; a value the operator chose stays."""
    if not ctx.options.has_changed("tcp_timeout"):
        ctx.options.update(tcp_timeout=TCP_TIMEOUT_S)
        log.info(
            "spendbrake: tcp_timeout raised to %d s, so long silent calls (reasoning models) "
            "are not cut",
            TCP_TIMEOUT_S,
        )
