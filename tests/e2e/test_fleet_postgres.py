"""A fleet: several ``spendbrake up`` processes sharing one PostgreSQL ledger, one budget.

Real proxies, the official openai SDK in subprocesses, a real PostgreSQL server (a throwaway
cluster; the tests that stop it on purpose get one of their own). Only the provider is fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Certs,
    Proxy,
    background_client,
    requests_of,
    run_client,
    spendbrake_up,
    wait_for,
)
from psycopg.rows import dict_row

import pg_cluster
from spendbrake.ledger_url import PostgresUrl
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

AGENT = "fleet-bot"
LIMIT_NANOS = 100_000  # $0.0001: about 20 calls of "Say hello." on gpt-4o-mini, 7 holds
CONFIG = f"[agents.{AGENT}]\ndaily_usd = 0.0001\n"
PROXIES = 4


def rows(ledger: PostgresUrl, agent: str = AGENT) -> list[dict[str, Any]]:
    with psycopg.connect(ledger.url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM calls WHERE agent = %s ORDER BY id", (agent,)).fetchall()


class Fleet:
    def __init__(
        self, tmp_path: Path, fake: FakeProvider, pki: TestPKI, certs: Certs, cache_dir: Path
    ) -> None:
        self.tmp_path, self.fake, self.pki, self.certs = tmp_path, fake, pki, certs
        self.cache_dir = cache_dir

    def proxy(
        self, ledger: PostgresUrl, name: str, config: str = CONFIG
    ) -> AbstractContextManager[Proxy]:
        return spendbrake_up(
            self.tmp_path / name,
            fake=self.fake,
            pki=self.pki,
            certs=self.certs,
            config_toml=config,
            ledger=ledger,  # type: ignore[arg-type]  # a URL where the helper expects a file
            name=name,
            cache_dir=self.cache_dir,
        )


@pytest.fixture
def fleet(tmp_path: Path, fake: FakeProvider, pki: TestPKI, certs: Certs, cache_dir: Path) -> Fleet:
    return Fleet(tmp_path, fake, pki, certs, cache_dir)


@pytest.fixture
def own_cluster() -> Iterator[pg_cluster.Cluster]:
    """A server of this test's own, which it stops and starts on purpose."""
    try:
        cluster = pg_cluster.Cluster()
    except pg_cluster.NoPostgres as e:
        pytest.skip(str(e))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_proxies_sharing_one_database_never_spend_past_the_limit_together(
    fleet: Fleet, postgres_location: PostgresUrl, fake: FakeProvider, test_id: str
) -> None:
    spec = {"max_tokens": 20, "max_retries": 0, "calls": 40, "headers": {TEST_ID_HEADER: test_id}}
    with ExitStack() as stack:
        proxies = [
            stack.enter_context(fleet.proxy(postgres_location, f"proxy-{n}"))
            for n in range(PROXIES)
        ]
        # Two SDK clients per proxy, all at once, each calling until it is refused.
        clients = [
            stack.enter_context(
                background_client(
                    "sdk_chat.py",
                    # Each call asks something new: a loop brake must not be what refuses it.
                    {**spec, "content": f"Client {n}-{k}: say hello, time {{i}}."},
                    proxy.client_env(AGENT, f"s{n}-{k}"),
                    log=fleet.tmp_path / f"client-{n}-{k}.log",
                )
            )
            for n, proxy in enumerate(proxies)
            for k in range(2)
        ]
        for client in clients:
            assert client.wait(120) == 0
        for proxy in proxies:
            proxy.assert_healthy()

    calls = rows(postgres_location)
    forwarded = [c for c in calls if c["state"] != "refused"]
    assert {c["state"] for c in forwarded} == {"settled"}
    assert sum(c["actual_nanos"] for c in forwarded) <= LIMIT_NANOS
    # Every client was refused in the end, and only the forwarded calls reached the provider.
    refused = [c for c in calls if c["state"] == "refused"]
    assert len(refused) >= len(clients)
    assert {c["reason"] for c in refused} == {"daily_budget_exceeded"}
    assert len(requests_of(fake, test_id)) == len(forwarded)
    # Every proxy took part (which of them forwarded the few calls that fit is up to timing).
    assert len({c["owner"] for c in calls}) == PROXIES
    # The window filled: what is left is less than one more call's hold.
    assert LIMIT_NANOS - sum(c["actual_nanos"] for c in forwarded) < max(
        c["held_nanos"] for c in forwarded
    )


def test_while_the_database_is_away_calls_are_refused_and_the_proxies_recover_alone(
    fleet: Fleet, own_cluster: pg_cluster.Cluster, fake: FakeProvider, test_id: str
) -> None:
    with psycopg.connect(own_cluster.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA fleet")
    ledger = pg_cluster.schema_url(own_cluster.url, "fleet")
    spec = {"max_tokens": 20, "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}}
    with fleet.proxy(ledger, "a") as a, fleet.proxy(ledger, "b") as b:
        for proxy in (a, b):
            assert run_client("sdk_chat.py", spec, proxy.client_env(AGENT))["calls"][0]["ok"]
        assert len(requests_of(fake, test_id)) == 2

        own_cluster.stop()
        for proxy in (a, b):
            call = run_client("sdk_chat.py", spec, proxy.client_env(AGENT))["calls"][0]
            assert call["status"] == 503
            assert call["error_body"]["error"]["code"] == "ledger_unavailable"
        assert len(requests_of(fake, test_id)) == 2  # nothing went out unmetered

        own_cluster.start()
        for proxy in (a, b):
            env = proxy.client_env(AGENT)
            wait_for(
                lambda env=env: run_client("sdk_chat.py", spec, env)["calls"][0]["ok"] or None,
                timeout=30,
                what="a call to go through once the database is back",
            )
            proxy.assert_alive()
    calls = rows(ledger)
    assert [c["state"] for c in calls].count("held") == 0
    seen = [(c["id"], c["state"], c["outcome"], c["owner"], c["reason"]) for c in calls]
    settled = [c for c in calls if c["state"] == "settled"]
    assert len(settled) == len(requests_of(fake, test_id)), seen


def test_a_killed_proxys_holds_are_settled_by_the_others_which_keep_serving(
    fleet: Fleet, postgres_location: PostgresUrl, fake: FakeProvider, test_id: str
) -> None:
    slow = {
        "stream": True,
        "max_tokens": 20,
        "max_retries": 0,
        "headers": {TEST_ID_HEADER: test_id, "x-fake-delay-ms": "5000"},
    }
    quick = {"max_tokens": 20, "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}}
    with (
        fleet.proxy(postgres_location, "doomed") as doomed,
        fleet.proxy(postgres_location, "survivor") as survivor,
    ):
        with background_client(
            "sdk_chat.py", slow, doomed.client_env(AGENT), log=fleet.tmp_path / "slow.log"
        ):

            def held() -> list[dict[str, Any]] | None:
                return [c for c in rows(postgres_location) if c["state"] == "held"] or None

            (hold,) = wait_for(held, what="the streaming call's hold")
            doomed.sigkill()

        # The survivor finds the dead proxy's hold and settles it at its amount, by itself.
        def settled() -> dict[str, Any] | None:
            (row,) = [c for c in rows(postgres_location) if c["id"] == hold["id"]]
            return row if row["state"] == "settled" else None

        row = wait_for(settled, timeout=30, what="the dead proxy's hold to be settled")
        assert row["outcome"] == "crashed"
        assert row["actual_nanos"] == row["held_nanos"] == hold["held_nanos"]
        assert run_client("sdk_chat.py", quick, survivor.client_env(AGENT))["calls"][0]["ok"]


def test_an_opted_in_proxy_runs_on_its_offline_allowance_and_the_ledger_gets_every_call_back(
    fleet: Fleet, own_cluster: pg_cluster.Cluster, fake: FakeProvider, test_id: str
) -> None:
    with psycopg.connect(own_cluster.url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA offline")
    ledger = pg_cluster.schema_url(own_cluster.url, "offline")
    # A quarter of the room: a few calls of the ~20 the day holds, never the whole day.
    config = f'{CONFIG}[fleet]\noffline_allowance = 0.25\noffline_journal = "journal.db"\n'
    journal = fleet.tmp_path / "a" / "journal.db"
    spec = {"max_tokens": 20, "max_retries": 0, "headers": {TEST_ID_HEADER: test_id}}
    with fleet.proxy(ledger, "a", config) as a:
        first = run_client("sdk_chat.py", spec, a.client_env(AGENT))["calls"][0]
        assert first["ok"]
        room = int(Decimal(first["headers"]["x-spendbrake-remaining-usd"]) * 10**9)

        own_cluster.stop()
        offline = run_client("sdk_chat.py", {**spec, "calls": 20}, a.client_env(AGENT))["calls"]
        *went_out, last = offline
        assert went_out, "no call fitted in the offline allowance"
        assert all(call["ok"] for call in went_out)
        assert last["status"] == 503
        assert last["error_body"]["error"]["code"] == "ledger_unavailable"
        assert "offline allowance" in last["error_body"]["error"]["message"]
        assert len(requests_of(fake, test_id)) == 1 + len(went_out)
        assert journal.exists()

        own_cluster.start()

        def replayed() -> list[dict[str, Any]] | None:
            found = [c for c in rows(ledger) if c["reason"].startswith("offline allowance ")]
            return found if len(found) == len(went_out) else None

        calls = wait_for(replayed, timeout=60, what="the offline calls in the ledger")
        a.assert_alive()
        # Settled at what they cost, within a quarter of the room the proxy saw last.
        assert {(c["state"], c["outcome"]) for c in calls} == {("settled", "ok")}
        assert sum(c["actual_nanos"] for c in calls) <= room // 4
        with psycopg.connect(ledger.url, row_factory=dict_row) as conn:
            [day] = conn.execute(
                "SELECT spent_nanos, held_nanos, calls FROM day_totals WHERE agent = %s",
                (AGENT,),
            ).fetchall()
            kinds = [
                e["kind"]
                for e in conn.execute("SELECT kind FROM events WHERE agent = %s", (AGENT,))
            ]
        everything = [c for c in rows(ledger) if c["state"] == "settled"]
        assert day == {
            "spent_nanos": sum(c["actual_nanos"] for c in everything),
            "held_nanos": 0,
            "calls": 1 + len(went_out),
        }
        assert kinds.count("offline_allowance") == len(went_out)
        # Once written, the entries leave the journal; the proxy serves from the ledger again.
        assert run_client("sdk_chat.py", spec, a.client_env(AGENT))["calls"][0]["ok"]
