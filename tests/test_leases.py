"""spendbrake.leases: the thread that keeps a proxy's lease, and when it judges other proxies by
theirs. The ledger here is a stand-in that can be made unreachable for chosen renewals; the
ledgers' own lease queries are tested in test_sqlite_ledger.py on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading

import pytest

from ledger_hammer import wait_until
from spendbrake.leases import LEASE_TTL_S, keep_lease
from spendbrake.ledger import LedgerUnavailable

EVERY_S = 0.01


class ReachableLedger:
    """Unreachable for the renewals numbered in ``away``; notes which renewal each recovery
    followed, and whether it judged other proxies by their leases."""

    def __init__(self, away: frozenset[int] = frozenset()) -> None:
        self.away = away
        self.renewals = 0
        self.judged: dict[int, float | None] = {}

    def renew_lease(self) -> None:
        self.renewals += 1
        if self.renewals in self.away:
            raise LedgerUnavailable("the ledger is locked by another process")

    def recover_orphaned_holds(self, lease_ttl_s: float | None = None) -> int:
        self.judged[self.renewals] = lease_ttl_s
        return 0


def kept_until(ledger: ReachableLedger, renewals: int) -> None:
    stop = threading.Event()
    thread = keep_lease(ledger, stop, EVERY_S)
    wait_until(lambda: ledger.renewals >= renewals or None, "the lease keeper to renew", 10)
    stop.set()
    thread.join()


def test_other_proxies_are_judged_by_their_leases_once_this_one_renews_steadily() -> None:
    ledger = ReachableLedger()
    kept_until(ledger, 6)

    assert ledger.judged[1] is None  # just started: the others may not have renewed yet
    assert ledger.judged[6] == LEASE_TTL_S


def test_after_the_ledger_was_away_no_proxy_is_taken_for_dead_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every lease is old when the ledger comes back: the first proxy back must wait for the
    live ones to renew before it judges them."""
    caplog.set_level(logging.WARNING, logger="spendbrake.leases")
    ledger = ReachableLedger(away=frozenset({5, 6, 7}))
    kept_until(ledger, 12)

    assert ledger.judged[4] == LEASE_TTL_S
    assert not {5, 6, 7} & ledger.judged.keys()  # nothing recovered while away
    assert ledger.judged[8] is None  # back: not judged at once
    assert ledger.judged[12] == LEASE_TTL_S
    # Said once for the whole fault, not at every try.
    assert [r.getMessage() for r in caplog.records] == [
        "spendbrake: cannot renew the ledger lease (the ledger is locked by another process); "
        "retrying"
    ]
