"""A small local allowance while the shared (PostgreSQL) ledger is unreachable; opt-in.

While the database answers, every hold tells the proxy how much room the agent's day has left.
When it stops answering, the proxy may hold calls locally, up to ``share`` of the room it saw
last for that agent and day, minus what this host's journal already holds or spent offline for
them. Every local hold and settlement is written to a SQLite journal file first, so a proxy that
crashes loses nothing. Once the database answers again the settled entries are written into it,
each exactly once (its local id is kept in the call's reason), and leave the journal.

No mitmproxy here: the hold path (``mitm.enforcement``) and the ledger worker use it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from spendbrake.ledger import CallIntent, Settlement, TokenCounts
from spendbrake.processes import owner_is_alive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offline_calls (
    local_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    agent TEXT NOT NULL,
    day TEXT NOT NULL,
    grp TEXT NOT NULL,
    intent TEXT NOT NULL,
    held_nanos INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'settled')),
    settlement TEXT
)
"""
# The prefix of the reason of a call replayed from the journal; the local id follows.
REPLAYED = "offline allowance "


def allowance_nanos(share: Decimal, room_nanos: int) -> int:
    """``share`` of the room, rounded down to a whole nano; nothing when there is no room."""
    if room_nanos <= 0:
        return 0
    exact = Fraction(share) * room_nanos
    return exact.numerator // exact.denominator


@dataclass(frozen=True)
class JournalEntry:
    local_id: str
    owner: str
    intent: CallIntent
    group: str
    held_nanos: int
    settlement: Settlement


class OfflineLedger(Protocol):
    """What replay needs of the shared ledger (``PostgresLedger.record_offline_call``)."""

    def record_offline_call(self, entry: JournalEntry) -> bool: ...


class OfflineJournal:
    """The local calls of an outage, on disk. Safe to share between threads and processes."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path, self.owner = path, owner
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 2000")
        self._db.execute("PRAGMA journal_mode = WAL")  # a committed entry survives a crash
        self._db.execute(_SCHEMA)

    def hold(self, intent: CallIntent, group: str, nanos: int, allowance: int) -> str | None:
        """Hold ``nanos`` for the call if the day's offline use stays within ``allowance``;
        the new entry's local id, or None (nothing written)."""
        local_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # another proxy on this host checks the same sum
            try:
                if self._used(intent.agent, intent.day) + nanos > allowance:
                    return None
                self._db.execute(
                    "INSERT INTO offline_calls VALUES (?, ?, ?, ?, ?, ?, ?, 'held', NULL)",
                    (
                        local_id,
                        self.owner,
                        intent.agent,
                        intent.day,
                        group,
                        _dump_intent(intent),
                        nanos,
                    ),
                )
            finally:
                self._db.execute("COMMIT")
        return local_id

    def settle(self, local_id: str, settlement: Settlement) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE offline_calls SET state = 'settled', settlement = ? "
                "WHERE local_id = ? AND state = 'held'",
                (json.dumps(asdict(settlement)), local_id),
            )

    def used_nanos(self, agent: str, day: str) -> int:
        with self._lock:
            return self._used(agent, day)

    def _used(self, agent: str, day: str) -> int:
        """Held (or, settled, actually spent) offline and not yet in the shared ledger."""
        rows = self._db.execute(
            "SELECT state, held_nanos, settlement FROM offline_calls WHERE agent = ? AND day = ?",
            (agent, day),
        ).fetchall()
        return sum(
            held if state == "held" else json.loads(settlement)["actual_nanos"]
            for state, held, settlement in rows
        )

    def settle_holds_of_ended(self, outcome: str, *, own: bool = False) -> int:
        """Holds of processes that ended (or, ``own``, this one's, when it stops) are settled
        at their held amount, so they can be replayed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT local_id, owner, held_nanos, intent FROM offline_calls WHERE state = 'held'"
            ).fetchall()
            ended = [
                (local_id, held, intent)
                for local_id, owner, held, intent in rows
                if ((owner == self.owner) if own else not owner_is_alive(owner))
            ]
        for local_id, held, intent in ended:
            made = _load_intent(intent)
            tokens = TokenCounts(
                input_tokens=made.estimated_input_tokens,
                output_tokens=made.estimated_output_tokens,
            )
            reason = "settled at its hold: the proxy ended before the call did"
            self.settle(local_id, Settlement(held, tokens, outcome, reason))
        return len(ended)

    def settled_entries(self) -> list[JournalEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT local_id, owner, intent, grp, held_nanos, settlement FROM offline_calls "
                "WHERE state = 'settled' ORDER BY rowid"
            ).fetchall()
        return [
            JournalEntry(local_id, owner, _load_intent(intent), group, held, _load(settlement))
            for local_id, owner, intent, group, held, settlement in rows
        ]

    def forget(self, local_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM offline_calls WHERE local_id = ?", (local_id,))

    def pending(self) -> int:
        with self._lock:
            [(count,)] = self._db.execute("SELECT COUNT(*) FROM offline_calls").fetchall()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def replay(journal: OfflineJournal, ledger: OfflineLedger) -> int:
    """Write the journal's settled calls into the shared ledger, each exactly once: a crash
    between writing one and forgetting it only means it is found there next time. Returns how
    many were new to the ledger. Raises ``LedgerUnavailable`` while the ledger is away."""
    written = 0
    for entry in journal.settled_entries():
        written += ledger.record_offline_call(entry)
        journal.forget(entry.local_id)
    return written


class OfflineAllowance:
    """Per agent and day, the room the shared ledger reported last, and the local holds."""

    def __init__(self, share: Decimal, journal: OfflineJournal) -> None:
        self.share, self.journal = share, journal
        self._room: dict[str, tuple[str, int]] = {}  # agent → (day, room at the last contact)

    def saw(self, agent: str, day: str, room_nanos: int) -> None:
        if len(self._room) > 10_000:  # agent names are client input: stay bounded
            self._room.clear()
        self._room[agent] = (day, room_nanos)

    def allowance(self, agent: str, day: str) -> int:
        """The whole offline allowance of the agent's day; 0 if the ledger told nothing of it."""
        seen = self._room.get(agent)
        if seen is None or seen[0] != day:
            return 0
        return allowance_nanos(self.share, seen[1])

    def hold(self, intent: CallIntent, group: str, nanos: int) -> tuple[str, int] | None:
        """(local id, what is left of the allowance after it), or None: it does not fit."""
        allowance = self.allowance(intent.agent, intent.day)
        local_id = self.journal.hold(intent, group, nanos, allowance)
        if local_id is None:
            return None
        return local_id, allowance - self.journal.used_nanos(intent.agent, intent.day)


def _dump_intent(intent: CallIntent) -> str:
    fields = asdict(intent)
    fields["started_at"] = intent.started_at.isoformat()
    return json.dumps(fields)


def _load_intent(text: str) -> CallIntent:
    fields = json.loads(text)
    fields["started_at"] = datetime.fromisoformat(fields["started_at"])
    return CallIntent(**fields)


def _load(text: str) -> Settlement:
    fields = json.loads(text)
    fields["tokens"] = TokenCounts(**fields["tokens"])
    return Settlement(**fields)
