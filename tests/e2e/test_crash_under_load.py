"""SIGKILL under load: proxies killed with calls and ledger writes in flight lose no money.

test_crash_recovery proves one stream's hold is settled by the next start. Here a proxy is
killed while several agents' threads keep streams and plain calls going through it (so the kill
lands among holds, settlements and calls on the wire), three times over; and one of two proxies
sharing a ledger is killed while both serve. Each time the ledger must open intact, hold no call
forever, count every call the provider saw at no less than its cost, and still enforce limits.
(A kill inside an open write transaction is also provoked deterministically, in
test_sqlite_ledger's test_a_process_killed_inside_a_write_does_not_wedge_the_ledger.)
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    assert_ledger_sound,
    ledger_calls,
    raw_client,
    requests_of,
    spendbrake_cli,
    wait_for,
)

from spendbrake.money import format_usd_exact
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

AGENT = "load-bot"
CONFIG = f"[agents.{AGENT}]\ndaily_usd = 1.00\n"
CHAT_URL = "https://api.openai.com/v1/chat/completions"
THREADS = 8
STREAM_EVENT_DELAY_MS = "150"  # a stream stays on the wire for about a second
KILLS = 3
# What each killed proxy must have in flight: calls held, not yet settled.
IN_FLIGHT_AT_KILL = 3
# Outcomes of a call that was forwarded and so may be billed by the provider.
FORWARDED = {"ok", "crashed", "cut_short", "interrupted", "proxy_stopped"}


class Load:
    """Threads that keep calls in flight through one proxy (every other one a slow stream, each
    with its own prompt so the loop brake stays out of it, all prompts of one length so all
    calls cost the same) until it dies or they are stopped."""

    def __init__(self, proxy: Proxy, test_id: str, name: str) -> None:
        self.proxy, self.test_id, self.name = proxy, test_id, name
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._calls, args=(n,), daemon=True) for n in range(THREADS)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _calls(self, n: int) -> None:
        with raw_client(self.proxy, AGENT, session=f"{self.name}-{n}", timeout=10) as client:
            i = 0
            while not self._stop.is_set() and not self.proxy.killed:
                i += 1
                self._count(
                    self._call(client, stream=i % 2 == 0, content=f"{self.name:>12} {n:02} {i:05}")
                )

    def _call(self, client: httpx2.Client, *, stream: bool, content: str) -> int | str:
        body = {
            "model": "gpt-4o-mini",
            "max_tokens": 16,
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
        }
        headers = {TEST_ID_HEADER: self.test_id, "x-fake-delay-ms": STREAM_EVENT_DELAY_MS}
        try:
            with client.stream("POST", CHAT_URL, json=body, headers=headers) as response:
                for _ in response.iter_bytes():
                    pass
                return response.status_code
        except httpx2.HTTPError as e:
            return type(e).__name__  # the proxy died under it

    def _count(self, status: int | str) -> None:
        with self._lock:
            self.statuses[status] += 1


def held_by(ledger: Path, proxy: Proxy) -> list[dict[str, Any]]:
    pid = f":{proxy.process.pid}:"
    return [r for r in ledger_calls(ledger, AGENT) if r["state"] == "held" and pid in r["owner"]]


def assert_no_money_lost(ledger: Path, fake: FakeProvider, test_id: str) -> list[dict[str, Any]]:
    """Every call is settled; each settled at its hold by a crash cost its hold; and the calls
    the provider saw are all in the ledger at no less than what the provider bills for them."""
    assert_ledger_sound(ledger)
    rows = ledger_calls(ledger, AGENT)
    assert [r for r in rows if r["state"] == "held"] == []
    crashed = [r for r in rows if r["outcome"] == "crashed"]
    assert crashed, "no kill caught a call in flight: the test proved nothing"
    assert all(r["actual_nanos"] == r["held_nanos"] for r in crashed)
    # Every call asks the same of the fake, so every call that completed cost the same.
    (cost,) = {r["actual_nanos"] for r in rows if r["outcome"] == "ok"}
    forwarded = [r for r in rows if r["outcome"] in FORWARDED]
    provider_saw = len(requests_of(fake, test_id))
    assert len(forwarded) >= provider_saw
    assert sum(r["actual_nanos"] for r in forwarded) >= provider_saw * cost
    assert {r["outcome"] for r in rows} <= FORWARDED | {"refused"}
    return rows


def assert_limit_still_holds(proxy: Proxy, test_id: str, margin_calls: int) -> None:
    """Lower the limit to what was spent plus room for a few calls: the proxy must refuse
    once that room is gone, counting what the crashes settled as spent."""
    day = ledger_calls(proxy.ledger, AGENT)[-1]["day"]
    with sqlite3.connect(proxy.ledger) as conn:
        (spent,) = conn.execute(
            "SELECT spent_nanos FROM day_totals WHERE agent = ? AND day = ?", (AGENT, day)
        ).fetchone()
        (hold,) = conn.execute(
            "SELECT MAX(held_nanos) FROM calls WHERE agent = ? AND stream = 1", (AGENT,)
        ).fetchone()
    limit = spent + margin_calls * hold
    spendbrake_cli("limit", "set", AGENT, "--daily", format_usd_exact(limit), *proxy.cli_args())

    with Load(proxy, test_id, "last") as load:
        wait_for(lambda: load.statuses[402] >= THREADS, timeout=60, what="budget refusals")
    with sqlite3.connect(proxy.ledger) as conn:
        spent_after, held_after = conn.execute(
            "SELECT spent_nanos, held_nanos FROM day_totals WHERE agent = ? AND day = ?",
            (AGENT, day),
        ).fetchone()
    assert load.statuses[200] > 0  # the room was used
    assert spent_after + held_after <= limit


@pytest.fixture
def start(
    start_proxy: Callable[..., AbstractContextManager[Proxy]],
) -> Callable[[str], AbstractContextManager[Proxy]]:
    """Start a proxy on this test's one ledger."""

    def starting(name: str) -> AbstractContextManager[Proxy]:
        return start_proxy(config_toml=CONFIG, name=name)

    return starting


@contextmanager
def killed_under_load(proxy: Proxy, test_id: str) -> Iterator[Load]:
    """Load the proxy, and SIGKILL it amid the traffic: once calls have gone through, while
    others are in flight."""
    with Load(proxy, test_id, proxy.log.stem) as load:
        wait_for(
            lambda: (
                load.statuses[200] >= THREADS
                and len(held_by(proxy.ledger, proxy)) >= IN_FLIGHT_AT_KILL
            ),
            timeout=30,
            what="calls done and calls in flight",
        )
        proxy.sigkill()
        yield load


def test_a_proxy_killed_under_load_again_and_again_loses_no_money(
    start: Callable[[str], AbstractContextManager[Proxy]], fake: FakeProvider, test_id: str
) -> None:
    for n in range(KILLS):
        with start(f"killed-{n}") as proxy, killed_under_load(proxy, test_id) as load:
            pass
        assert load.statuses[200] > 0, load.statuses
        assert held_by(proxy.ledger, proxy), "the kill left no hold behind"

    with start("restarted") as restarted:
        assert "left by a proxy that ended" in restarted.output()
        rows = assert_no_money_lost(restarted.ledger, fake, test_id)
        assert len({r["owner"] for r in rows if r["outcome"] == "crashed"}) == KILLS
        assert_limit_still_holds(restarted, test_id, margin_calls=5)
    assert_no_money_lost(restarted.ledger, fake, test_id)


def test_when_one_of_two_proxies_on_a_ledger_is_killed_the_other_serves_and_settles_its_holds(
    start: Callable[[str], AbstractContextManager[Proxy]], fake: FakeProvider, test_id: str
) -> None:
    with start("survivor") as survivor, Load(survivor, test_id, "survivor") as survivor_load:
        with start("victim") as victim, killed_under_load(victim, test_id):
            pass  # killed with holds in flight (killed_under_load waits for them)

        # The survivor goes on serving, and settles the dead proxy's holds on its own: maybe
        # within moments of the kill, so the holds are known by how they end, not looked for
        # in between.
        served = survivor_load.statuses[200]
        wait_for(lambda: survivor_load.statuses[200] > served, what="the survivor to serve")
        wait_for(lambda: not held_by(victim.ledger, victim), what="the survivor to settle")
        pid = f":{victim.process.pid}:"
        orphans = [
            r
            for r in ledger_calls(victim.ledger, AGENT)
            if pid in r["owner"] and r["outcome"] == "crashed"
        ]
        assert orphans
        for orphan in orphans:
            assert orphan["state"] == "settled"
            assert orphan["actual_nanos"] == orphan["held_nanos"]
        assert "left by a proxy that ended" in survivor.output()
        survivor.assert_healthy()
    assert set(survivor_load.statuses) == {200}, survivor_load.statuses
    assert_no_money_lost(survivor.ledger, fake, test_id)
