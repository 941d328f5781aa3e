"""Each call's log line reaches the terminal, but not mitmproxy's deprecated ``add_log`` event,
which would call every addon in the chain once more for every call."""

import asyncio
import io
import logging

from mitmproxy import options
from mitmproxy.addons.termlog import TermLog
from mitmproxy.log import LogEntry
from mitmproxy.master import Master

from spendbrake.mitm.addon import Spendbrake
from spendbrake.mitm.call_log import call_log


class LegacyListener:
    """An addon of the kind written before mitmproxy 9: it hears the log through add_log."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def add_log(self, entry: LogEntry) -> None:
        self.heard.append(entry.msg)


async def test_a_call_line_is_printed_but_not_broadcast_to_every_addon() -> None:
    master = Master(options.Options(), event_loop=asyncio.get_running_loop())
    terminal = io.StringIO()
    termlog = TermLog(terminal)
    legacy = LegacyListener()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # as mitmdump sets it
    try:
        master.addons.add(termlog, Spendbrake(), legacy)  # type: ignore[no-untyped-call]
        call_log.info("spendbrake: bot gpt-4o-mini 8 in/9 out $0.0000066 (remaining $0.01)")
        logging.getLogger("spendbrake.mitm.enforcement").warning("spendbrake: something else")
        await asyncio.sleep(0.05)  # add_log events arrive through the loop
    finally:
        root.setLevel(level)
        termlog.uninstall()
        master._legacy_log_events.uninstall()

    printed = terminal.getvalue()
    assert "bot gpt-4o-mini 8 in/9 out" in printed
    assert "something else" in printed
    heard = [m for m in legacy.heard if "spendbrake" in m]
    assert len(heard) == 1
    assert heard[0].endswith("spendbrake: something else")


async def test_loading_the_addon_twice_filters_the_call_lines_once() -> None:
    master = Master(options.Options(), event_loop=asyncio.get_running_loop())
    try:
        for _ in range(2):  # as a script reload does: a new addon instance, loaded again
            master.addons.add(Spendbrake())  # type: ignore[no-untyped-call]
            master.addons.remove(master.addons.chain[-1])  # type: ignore[no-untyped-call]
        assert len(master._legacy_log_events.filters) == 1
    finally:
        master._legacy_log_events.uninstall()
