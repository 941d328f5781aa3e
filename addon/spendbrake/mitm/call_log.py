"""The one line each call writes to the log, kept out of mitmproxy's deprecated ``add_log`` event.

mitmproxy hands every log record to its ``LegacyLogEvents`` handler too, which wakes the event
loop through its self-pipe and then calls ``add_log`` on every addon in the chain (35 in
mitmdump), for the addons written before mitmproxy 9. For a line per call that is a whole extra
event, about as much work as one of the flow's own hooks. The terminal (termlog), mitmweb's
event log and every other handler still get the line: they are handlers of their own.
"""

from __future__ import annotations

import logging

from mitmproxy.log import LegacyLogEvents

LOGGER_NAME = "spendbrake.calls"

call_log = logging.getLogger(LOGGER_NAME)


class _NotACallLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != LOGGER_NAME


def keep_out_of_add_log() -> None:
    """Once the master exists (it installs the handler): its ``add_log`` events leave the call
    lines out. Idempotent, so a reloaded addon does not stack filters."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LegacyLogEvents) and not any(
            isinstance(f, _NotACallLine) for f in handler.filters
        ):
            handler.addFilter(_NotACallLine())
