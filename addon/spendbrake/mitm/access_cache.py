"""The ledger's access records (agents' secrets, API-key fingerprints, the admin token) in
memory, so a request reads no table.

``spendbrake agent add`` and friends write the ledger while the proxy runs. The copy is read
again every ``REFRESH_S`` seconds, so a removed secret stops working within that time, and at
once (at most once a second) when a secret does not verify, so a new agent works on its first
call.
"""

from __future__ import annotations

import logging
import time

from spendbrake.access_book import AccessBook, AccessRecords

log = logging.getLogger(__name__)

REFRESH_S = 2.0
_RETRY_AFTER_MISS_S = 1.0


class AccessUnavailable(Exception):
    """The records were never read: who holds a secret is unknown, so no claim can be trusted."""


class AccessCache:
    def __init__(self, book: AccessBook | None = None) -> None:
        self.book = book
        self._records: AccessRecords | None = None if book else AccessRecords()
        self._read_at = float("-inf")
        self._missed_at = float("-inf")

    def records(self) -> AccessRecords:
        if time.monotonic() - self._read_at >= REFRESH_S:
            self._read()
        return self._current()

    def after_a_miss(self) -> AccessRecords:
        """The records again, read anew unless that was done within the last second."""
        now = time.monotonic()
        if now - self._missed_at >= _RETRY_AFTER_MISS_S:
            self._missed_at = now
            self._read()
        return self._current()

    def _current(self) -> AccessRecords:
        if self._records is None:
            raise AccessUnavailable("spendbrake could not read agents' secrets from the ledger")
        return self._records

    def _read(self) -> None:
        if self.book is None:
            return
        try:
            self._records = self.book.records()
        except Exception as e:  # a locked or broken ledger: keep the last copy, if any
            log.warning("spendbrake: could not read agents' secrets from the ledger: %s", e)
        self._read_at = time.monotonic()
