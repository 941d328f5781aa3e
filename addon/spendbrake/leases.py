"""Leases: how a proxy tells the others sharing its ledger that it still runs.

A hold belongs to the proxy process that made it (its owner, ``host:pid:start``). When that
process dies mid-call, another proxy settles the hold at its held amount. On the same host the
process table says who died; across hosts, or containers with host names of their own that
share one ledger file, it cannot. So while a proxy runs it renews a lease in the ledger, and an
owner whose lease has lapsed for ``LEASE_TTL_S`` is taken for dead wherever it ran. An owner
with no lease at all (a process that never kept one, such as a CLI command) is judged by the
process table only.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from spendbrake.ledger import LedgerUnavailable

log = logging.getLogger(__name__)

# A proxy renews its lease this often; one that has not for LEASE_TTL_S is taken for dead. The
# gap leaves room for a ledger that is busy or briefly away.
LEASE_RENEW_S = 5.0
LEASE_TTL_S = 30.0


def say_recovered(holds: int) -> None:
    """Log the holds of ended proxies that were just settled, if any."""
    if holds:
        log.warning(
            "spendbrake: settled %d hold(s) left by a proxy that ended, at their held amount",
            holds,
        )


class Leased(Protocol):
    def renew_lease(self) -> None: ...

    def recover_orphaned_holds(self) -> int: ...


def keep_lease(ledger: Leased, stop: threading.Event, every_s: float) -> threading.Thread:
    """Renew ``ledger``'s lease now and every ``every_s`` on a thread of its own, settling the
    holds of owners that died meanwhile, until ``stop`` is set. A ledger that cannot be written
    (read-only, disk full, away) is said once per fault and tried again: the proxy starts and
    serves meanwhile, refusing what it cannot hold."""

    def renew() -> None:
        failing = False
        while True:
            try:
                ledger.renew_lease()
                say_recovered(ledger.recover_orphaned_holds())
            except LedgerUnavailable as e:
                if not failing:
                    log.warning("spendbrake: cannot renew the ledger lease (%s); retrying", e)
                failing = True
            except Exception:
                # The thread must live on: without renewals, other proxies would take this
                # one's holds for orphans.
                log.exception("spendbrake: renewing the ledger lease failed; retrying")
            else:
                failing = False
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=renew, name="spendbrake-ledger-lease", daemon=True)
    thread.start()
    return thread
