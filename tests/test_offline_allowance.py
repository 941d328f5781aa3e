"""The offline allowance: its arithmetic, its journal on disk, and the replay into PostgreSQL."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from ledger_hammer import DAY, LIMIT, granted, intent, query
from spendbrake.ledger import Settlement, TokenCounts
from spendbrake.ledger_url import PostgresUrl
from spendbrake.offline_allowance import (
    REPLAYED,
    OfflineAllowance,
    OfflineJournal,
    allowance_nanos,
    replay,
)
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.processes import current_owner

ENDED = f"{socket.gethostname()}:{os.getpid()}:0"  # this pid, another start: a process that ended
OK = Settlement(300, TokenCounts(input_tokens=10, output_tokens=5), "ok")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[OfflineJournal]:
    opened = OfflineJournal(tmp_path / "journal.db", current_owner())
    yield opened
    opened.close()


def test_the_allowance_is_the_share_of_the_room_rounded_down_to_a_nano() -> None:
    assert allowance_nanos(Decimal("0.05"), 1_000_000) == 50_000
    assert allowance_nanos(Decimal("0.05"), 1_000_019) == 50_000  # 50,000.95
    assert allowance_nanos(Decimal("0.25"), 3) == 0
    assert allowance_nanos(Decimal("0.1"), 0) == 0
    assert allowance_nanos(Decimal("0.1"), -500) == 0  # a window already past its limit


def test_an_agent_the_ledger_told_nothing_of_has_no_allowance(journal: OfflineJournal) -> None:
    allowance = OfflineAllowance(Decimal("0.1"), journal)
    assert allowance.hold(intent(), "", 1) is None
    allowance.saw("research-bot", "2026-03-13", 10_000)  # yesterday's room is not today's
    assert allowance.hold(intent(), "", 1) is None
    assert journal.pending() == 0


def test_local_holds_fit_in_the_share_of_the_room_seen_last_and_no_further(
    journal: OfflineJournal,
) -> None:
    allowance = OfflineAllowance(Decimal("0.1"), journal)
    allowance.saw("research-bot", DAY, 5_000)
    allowance.saw("research-bot", DAY, 10_000)  # the latest contact counts: 1,000 offline
    first = allowance.hold(intent(), "", 600)
    assert first is not None
    assert first[1] == 400
    assert allowance.hold(intent(), "", 401) is None
    second = allowance.hold(intent(), "", 400)
    assert second is not None
    assert second[1] == 0
    assert allowance.hold(intent(), "", 1) is None
    # A settlement below the hold gives the difference back to the allowance.
    journal.settle(first[0], Settlement(100, TokenCounts(), "ok"))
    assert journal.used_nanos("research-bot", DAY) == 500
    assert allowance.hold(intent(), "", 500) is not None
    # Another agent has its own room.
    assert allowance.hold(intent(agent="other-bot"), "", 1) is None


def test_a_proxy_that_crashed_leaves_its_offline_holds_on_disk_settled_at_the_hold_later(
    tmp_path: Path,
) -> None:
    crashed = OfflineJournal(tmp_path / "journal.db", ENDED)
    call = intent()
    local_id = crashed.hold(call, "team", 700, allowance=1_000)
    assert local_id is not None
    del crashed  # never closed, like a process that was killed

    restarted = OfflineJournal(tmp_path / "journal.db", current_owner())
    try:
        assert restarted.settle_holds_of_ended("crashed") == 1
        [entry] = restarted.settled_entries()
        assert (entry.local_id, entry.group, entry.held_nanos) == (local_id, "team", 700)
        assert (entry.settlement.actual_nanos, entry.settlement.outcome) == (700, "crashed")
        assert entry.intent == call  # every field, the start time included
    finally:
        restarted.close()


def test_a_live_proxys_offline_holds_are_left_alone_until_it_stops(
    journal: OfflineJournal,
) -> None:
    local_id = journal.hold(intent(), "", 700, allowance=1_000)
    assert journal.settle_holds_of_ended("crashed") == 0  # its owner (this process) runs
    assert journal.settled_entries() == []
    assert journal.settle_holds_of_ended("proxy_stopped", own=True) == 1
    [entry] = journal.settled_entries()
    assert (entry.local_id, entry.settlement.outcome) == (local_id, "proxy_stopped")


@pytest.fixture
def pg(postgres_location: PostgresUrl) -> Iterator[PostgresLedger]:
    ledger = PostgresLedger(postgres_location)
    yield ledger
    ledger.close()


def test_replay_writes_each_settled_call_into_the_ledger_counted_in_its_windows(
    journal: OfflineJournal, pg: PostgresLedger, postgres_location: PostgresUrl
) -> None:
    granted(pg.hold(intent(), 200, LIMIT))  # a call held online, still in flight
    offline = journal.hold(intent(), "", 400, allowance=1_000)
    in_flight = journal.hold(intent(), "", 100, allowance=1_000)
    assert offline is not None
    assert in_flight is not None
    journal.settle(offline, OK)

    assert replay(journal, pg) == 1
    # Only the settled call left the journal; the one still in flight waits for its settlement.
    assert [e.local_id for e in journal.settled_entries()] == []
    assert journal.pending() == 1
    totals = pg.day_totals("research-bot", DAY, LIMIT)
    assert (totals.spent_nanos, totals.held_nanos, totals.calls) == (300, 200, 2)
    [row] = query(
        postgres_location,
        "SELECT state, held_nanos, actual_nanos, outcome, input_tokens, output_tokens, reason "
        "FROM calls WHERE reason LIKE ?",
        (f"{REPLAYED}%",),
    )
    assert row == ("settled", 400, 300, "ok", 10, 5, f"{REPLAYED}{offline}")
    [event] = pg.events("research-bot")
    assert event.kind == "offline_allowance"
    assert event.detail.endswith(
        f"($0.0000003) ran on the offline allowance of {journal.owner} while the ledger was "
        "unreachable"
    )


def test_replay_after_a_crash_between_writing_and_forgetting_does_not_count_a_call_twice(
    journal: OfflineJournal, pg: PostgresLedger
) -> None:
    local_id = journal.hold(intent(), "", 400, allowance=1_000)
    assert local_id is not None
    journal.settle(local_id, OK)
    [entry] = journal.settled_entries()
    # The proxy wrote the call into the ledger and died before it took it out of the journal.
    assert pg.record_offline_call(entry) is True

    assert replay(journal, pg) == 0  # found in the ledger already: only forgotten
    assert journal.pending() == 0
    totals = pg.day_totals("research-bot", DAY, LIMIT)
    assert (totals.spent_nanos, totals.calls) == (300, 1)
    assert len(pg.events("research-bot")) == 1
