"""Leases: how a proxy tells the others sharing its ledger that it still runs.

A hold belongs to the proxy process that made it (its owner, ``host:pid:start``). When that
process dies mid-call, another proxy settles the hold at its held amount. On the same host the
process table says who died; across hosts, or containers with host names of their own that
share one ledger file, it cannot. So while a proxy runs it renews a lease in the ledger, and an
owner whose lease has lapsed for ``LEASE_TTL_S`` is taken for dead wherever it ran. An owner
with no lease at all (a process that never kept one, such as a CLI command) is judged by the
process table only.

Only a proxy that has itself renewed steadily judges others by their leases: after the ledger
was away or locked, every lease is old, and the first proxy back must not take the others,
alive and about to renew, for dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from spendbrake.ledger import LedgerUnavailable
from spendbrake.processes import owner_is_alive

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


def dead_owners(holders: Iterable[tuple[str, bool]], own: str) -> list[str]:
    """Of the owners of held calls, each with whether its lease lapsed, those that died: lapsed,
    or (on this host) gone from the process table. Never ``own``, the asking process."""
    return [
        owner for owner, lapsed in holders if owner != own and (lapsed or not owner_is_alive(owner))
    ]


class Leased(Protocol):
    def renew_lease(self) -> None: ...

    def recover_orphaned_holds(self, lease_ttl_s: float | None = None) -> int: ...


def keep_lease(ledger: Leased, stop: threading.Event, every_s: float) -> threading.Thread:
    """Renew ``ledger``'s lease now and every ``every_s`` on a thread of its own, settling the
    holds of owners that died meanwhile, until ``stop`` is set. A ledger that cannot be written
    (read-only, disk full, away) is said once per fault and tried again: the proxy starts and
    serves meanwhile, refusing what it cannot hold."""

    def renew() -> None:
        failing = False
        renewing_since: float | None = None  # renewed every time since then
        while True:
            try:
                ledger.renew_lease()
                now = time.monotonic()
                renewing_since = now if renewing_since is None else renewing_since
                # Two rounds: time enough for every live proxy to have renewed too.
                steady = now - renewing_since >= 2 * every_s
                say_recovered(ledger.recover_orphaned_holds(LEASE_TTL_S if steady else None))
            except LedgerUnavailable as e:
                if not failing:
                    log.warning("spendbrake: cannot renew the ledger lease (%s); retrying", e)
                failing, renewing_since = True, None
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
