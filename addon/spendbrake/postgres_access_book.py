"""``AccessBook`` in the tables of a PostgreSQL ledger (migration m010), as ``access_book``'s
SQLite version keeps it: hashes only, and every change an event in the ledger's log."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from spendbrake import postgres_brakes
from spendbrake.access_book import AccessRecords, ApiKeyOwner
from spendbrake.ledger import LedgerUnavailable
from spendbrake.postgres_ledger import Conn, PostgresLedger
from spendbrake.sqlite_brakes import iso


class PostgresAccessBook:
    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger

    def records(self) -> AccessRecords:
        with self.ledger.write_transaction() as conn:  # one snapshot of the three tables
            settings = {
                name: value
                for name, value in conn.execute("SELECT name, value FROM settings").fetchall()
            }
            secrets = conn.execute("SELECT agent, secret_sha256 FROM agent_secrets").fetchall()
            keys = conn.execute("SELECT key_hmac, agent, hint FROM api_keys").fetchall()
        return AccessRecords(
            secrets={agent: sha for agent, sha in secrets},
            api_keys={key_hmac: ApiKeyOwner(agent, hint) for key_hmac, agent, hint in keys},
            api_key_hash_key=bytes.fromhex(settings["api_key_hash_key"]),
            admin_token_sha256=settings.get("admin_token_sha256"),
        )

    def set_secret(self, agent: str, secret_sha256: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            replaced = conn.execute(
                "SELECT 1 FROM agent_secrets WHERE agent = %s FOR UPDATE", (agent,)
            ).fetchone()
            conn.execute(
                """
                INSERT INTO agent_secrets (agent, secret_sha256, set_at, actor)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (agent) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                    set_at = excluded.set_at, actor = excluded.actor
                """,
                (agent, secret_sha256, iso(now), actor),
            )
            kind = "secret_rotated" if replaced else "secret_set"
            postgres_brakes.record(conn, agent, kind, "a new proxy secret", actor, now)
            return replaced is not None

    def remove_secret(self, agent: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            removed = conn.execute("DELETE FROM agent_secrets WHERE agent = %s", (agent,)).rowcount
            if removed:
                postgres_brakes.record(
                    conn, agent, "secret_removed", "proxy secret removed", actor, now
                )
            return removed > 0

    def add_api_key(self, agent: str, key_hmac: str, hint: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            conn.execute(
                """
                INSERT INTO api_keys (key_hmac, agent, hint, added_at, actor)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (key_hmac) DO UPDATE SET agent = excluded.agent,
                    added_at = excluded.added_at, actor = excluded.actor
                """,
                (key_hmac, agent, hint, iso(now), actor),
            )
            detail = f"calls made with API key {hint} belong to {agent}"
            postgres_brakes.record(conn, agent, "api_key_added", detail, actor, now)

    def remove_api_keys(self, agent: str, actor: str) -> int:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            removed = conn.execute("DELETE FROM api_keys WHERE agent = %s", (agent,)).rowcount
            if removed:
                detail = f"{removed} API key fingerprint(s) removed"
                postgres_brakes.record(conn, agent, "api_keys_removed", detail, actor, now)
            return removed

    def set_admin_token(self, token_sha256: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            _set(conn, "admin_token_sha256", token_sha256)
            postgres_brakes.record(conn, "*", "admin_token_set", "a new admin token", actor, now)


def _set(conn: Conn, name: str, value: str) -> None:
    conn.execute(
        """
        INSERT INTO settings (name, value) VALUES (%s, %s)
        ON CONFLICT (name) DO UPDATE SET value = excluded.value
        """,
        (name, value),
    )


class PrefetchedAccessBook(PostgresAccessBook):
    """For the proxy: ``records`` answers from a copy a thread of its own reads every
    ``every_s``, so the event loop never waits on the network. Until the first read succeeds
    it raises, and the proxy trusts no claim (fail closed)."""

    def __init__(self, ledger: PostgresLedger, every_s: float = 2.0) -> None:
        super().__init__(ledger)
        self._copy: AccessRecords | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._refresh, args=(every_s,), name="spendbrake-access", daemon=True
        )
        self._thread.start()

    def _refresh(self, every_s: float) -> None:
        while True:
            try:
                self._copy = super().records()
            except Exception as e:  # the database away: keep the last copy
                self._error = e
            if self.ledger.closed.wait(every_s):
                return

    def records(self) -> AccessRecords:
        if self._copy is None:
            raise LedgerUnavailable(f"access records not read yet: {self._error}")
        return self._copy
