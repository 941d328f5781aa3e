"""Alerts in the SQLite ledger (migration m011): who fires, and what became of each delivery.

Firing is one ``INSERT OR IGNORE`` on the alert's unique key in a write transaction: of several
proxies on one ledger, or a proxy and its restarted self, exactly one gets the row and delivers
it. Its webhook deliveries are written in the same transaction, as pending.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spendbrake.alerts import Alert
from spendbrake.alerts_config import Webhook
from spendbrake.sqlite_brakes import iso
from spendbrake.sqlite_ledger import SQLiteLedger


@dataclass(frozen=True)
class FiredAlert:
    id: int
    fired_at: datetime
    agent: str
    kind: str
    window: str
    period: str
    threshold: str
    summary: str


@dataclass(frozen=True)
class Delivery:
    alert_id: int
    webhook: int
    target: str
    format: str
    state: str  # pending, delivered, failed
    attempts: int
    last_error: str


class SQLiteAlertBook:
    def __init__(self, ledger: SQLiteLedger) -> None:
        self.ledger = ledger

    def claim(
        self, alert: Alert, webhooks: Sequence[Webhook], unless_since: datetime | None = None
    ) -> int | None:
        """Record the alert if its key is new (and, given ``unless_since``, if the agent had no
        alert of its kind since then); its id, or None when it was fired before."""
        with self.ledger.write_transaction() as conn:
            if (
                unless_since is not None
                and conn.execute(
                    "SELECT 1 FROM alerts WHERE agent = ? AND kind = ? AND fired_at >= ?",
                    (alert.agent, alert.kind, iso(unless_since)),
                ).fetchone()
            ):
                return None
            cursor = conn.execute(
                """
                INSERT OR IGNORE INTO alerts (fired_at, agent, kind, window, period, threshold,
                    summary, owner)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (iso(alert.at), *alert.key, alert.message, self.ledger.owner),
            )
            if cursor.rowcount == 0:
                return None
            alert_id = cursor.lastrowid
            assert alert_id is not None
            conn.executemany(
                """
                INSERT INTO alert_deliveries (alert_id, webhook, target, format, state,
                    updated_at)
                VALUES (?, ?, ?, ?, 'pending', ?)
                """,
                [(alert_id, i, h.target, h.format, iso(alert.at)) for i, h in enumerate(webhooks)],
            )
            return alert_id

    def record_delivery(
        self, alert_id: int, webhook: int, *, delivered: bool, attempts: int, error: str
    ) -> None:
        with self.ledger.write_transaction() as conn:
            conn.execute(
                """
                UPDATE alert_deliveries SET state = ?, attempts = ?, last_error = ?,
                    updated_at = ?
                WHERE alert_id = ? AND webhook = ?
                """,
                (
                    "delivered" if delivered else "failed",
                    attempts,
                    error,
                    iso(datetime.now(UTC)),
                    alert_id,
                    webhook,
                ),
            )

    def alerts(self, agent: str | None = None) -> list[FiredAlert]:
        rows = self.ledger.db.conn.execute(
            """
            SELECT id, fired_at, agent, kind, window, period, threshold, summary FROM alerts
            WHERE ? IS NULL OR agent = ? ORDER BY id
            """,
            (agent, agent),
        )
        return [FiredAlert(i, datetime.fromisoformat(at), *rest) for i, at, *rest in rows]

    def deliveries(self) -> list[Delivery]:
        rows = self.ledger.db.conn.execute(
            """
            SELECT alert_id, webhook, target, format, state, attempts, last_error
            FROM alert_deliveries ORDER BY alert_id, webhook
            """
        )
        return [Delivery(*row) for row in rows]


# -- what the heartbeat reads, on a connection of its own (off the event loop) -----------------


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection: WAL readers neither wait for the proxies' writes nor block them."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2, check_same_thread=False)


def calls_after(
    conn: sqlite3.Connection, after_id: int, since: datetime
) -> tuple[list[tuple[str, datetime]], int]:
    """(agent, started_at) of the calls recorded after call ``after_id`` that started at or
    after ``since``, oldest first, and the last id read. With ``after_id`` 0 it walks back from
    the newest call only as far as ``since`` (no index orders calls by time; ids nearly do)."""
    cutoff = iso(since)
    if after_id:
        rows = conn.execute(
            "SELECT id, agent, started_at FROM calls WHERE id > ? ORDER BY id", (after_id,)
        ).fetchall()
    else:
        rows = []
        for row in conn.execute("SELECT id, agent, started_at FROM calls ORDER BY id DESC"):
            if row[2] < cutoff:
                break
            rows.append(row)
        rows.reverse()
    last_id = rows[-1][0] if rows else after_id or _last_id(conn)
    seen = [(agent, datetime.fromisoformat(at)) for _, agent, at in rows if at >= cutoff]
    return seen, last_id


def _last_id(conn: sqlite3.Connection) -> int:
    (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()
    return int(last)
