"""A proxy killed mid-call leaves a hold; the next proxy on the ledger settles it at that hold."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    background_client,
    ledger_calls,
    requests_of,
    spendbrake_cli,
    wait_for,
)

from spendbrake.money import format_usd_exact
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

AGENT = "crash-bot"
CONFIG = f"[agents.{AGENT}]\ndaily_usd = 1.00\n"
LIMIT_NANOS = 1_000_000_000


def test_hold_of_a_killed_proxy_is_settled_at_its_amount_on_the_next_start(
    tmp_path: Path,
    start_proxy: Callable[..., AbstractContextManager[Proxy]],
    fake: FakeProvider,
    test_id: str,
) -> None:
    ledger = tmp_path / "ledger.db"

    def start(name: str) -> AbstractContextManager[Proxy]:
        return start_proxy(config_toml=CONFIG, name=name)

    def held_rows() -> list[dict[str, Any]]:
        return [r for r in ledger_calls(ledger, AGENT) if r["state"] == "held"]

    with start("first") as first:
        # A stream whose events come 5 s apart: in flight for the rest of this test.
        spec = {
            "stream": True,
            "max_tokens": 20,
            "max_retries": 0,
            "headers": {TEST_ID_HEADER: test_id, "x-fake-delay-ms": "5000"},
        }
        with background_client(
            "sdk_chat.py", spec, first.client_env(AGENT, "crash"), log=tmp_path / "client.log"
        ):
            (held,) = wait_for(held_rows, what="the in-flight call's hold")
            wait_for(lambda: requests_of(fake, test_id), what="the call to reach the provider")

            # Another proxy starting on the same ledger leaves a live proxy's hold alone.
            with start("second"):
                assert held_rows() == [held]

            first.sigkill()
            assert held_rows() == [held]  # nothing settles a hold when its proxy is killed

    with start("third") as third:
        (row,) = ledger_calls(ledger, AGENT)
        assert row["id"] == held["id"]
        assert row["state"] == "settled"
        assert row["outcome"] == "crashed"
        assert row["actual_nanos"] == row["held_nanos"] == held["held_nanos"]
        assert "settled 1 hold(s) left by a proxy that ended" in third.output()

        status = json.loads(spendbrake_cli("status", "--json", *third.cli_args()).stdout)
    (entry,) = [a for a in status["agents"] if a["agent"] == AGENT]
    assert entry == {
        "agent": AGENT,
        "spent_usd": format_usd_exact(held["held_nanos"]),
        "held_usd": "0.000000000",
        "limit_usd": "1.000000000",
        "remaining_usd": format_usd_exact(LIMIT_NANOS - held["held_nanos"]),
        "calls": 1,
        "blocked": 0,
        "state": "ok",
    }


def leases(ledger: Path) -> list[str]:
    conn = sqlite3.connect(ledger, timeout=5)
    try:
        return [owner for (owner,) in conn.execute("SELECT owner FROM proxy_leases")]
    finally:
        conn.close()


def test_a_running_proxy_keeps_a_lease_and_gives_it_up_when_stopped(
    start_proxy: Callable[..., AbstractContextManager[Proxy]],
) -> None:
    """The lease tells proxies that share the ledger from another host, or from a container
    with a host name of its own, that this one still runs (its holds are not orphans)."""
    with start_proxy(config_toml=CONFIG) as proxy:
        (owner,) = wait_for(lambda: leases(proxy.ledger) or None, what="the proxy's lease")
        host, pid, _started = owner.rsplit(":", 2)
        assert (host, int(pid)) == (socket.gethostname(), proxy.process.pid)
        ledger = proxy.ledger
    assert leases(ledger) == []
