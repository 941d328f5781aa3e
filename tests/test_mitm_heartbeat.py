"""The heartbeat through the alerting part: it reads every call of the ledger off the loop and
flags an agent that went silent, once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from test_mitm_alerting import alerting_proxy, call


def fired(ledger: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT agent, kind FROM alerts ORDER BY id").fetchall()


async def test_an_agent_that_went_silent_is_flagged_once(tmp_path: Path) -> None:
    config = (
        "[alerts]\nthresholds = []\nheartbeat_silent_after_s = 1\nheartbeat_every_s = 1\n"
        "heartbeat_gap_s = 1\n"
    )
    with alerting_proxy(tmp_path, config) as (proxy, alerting):
        alerting.running()
        await call(proxy, "one")
        await call(proxy, "two")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not fired(proxy.ledger):
            assert loop.time() < deadline, "no silent alert"
            await asyncio.sleep(0.1)
        checks = alerting.heartbeat_checks
        while alerting.heartbeat_checks < checks + 2:  # two more passes: no second alert
            await asyncio.sleep(0.1)
        await alerting.drain()
        assert fired(proxy.ledger) == [("bot", "silent")]
