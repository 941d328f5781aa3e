"""What the ledger keeps about access: agents' secret hashes, API-key fingerprints, and the
admin token's hash. Written by the CLI, read by the proxy into memory (``AccessRecords``).

Every change is an event in the ledger's log, which names the agent and never the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from spendbrake import sqlite_brakes
from spendbrake.sqlite_ledger import SQLiteLedger

if TYPE_CHECKING:
    from spendbrake.postgres_ledger import PostgresLedger


@dataclass(frozen=True)
class ApiKeyOwner:
    agent: str
    hint: str  # "…a1f3"


@dataclass(frozen=True)
class AccessRecords:
    secrets: Mapping[str, str] = field(default_factory=dict)  # agent → SHA-256 of its secret
    api_keys: Mapping[str, ApiKeyOwner] = field(default_factory=dict)  # HMAC → owner
    api_key_hash_key: bytes = b""
    admin_token_sha256: str | None = None


class AccessBook(Protocol):
    def records(self) -> AccessRecords: ...

    def set_secret(self, agent: str, secret_sha256: str, actor: str) -> bool:
        """Store the agent's secret hash; True if it replaced one."""
        ...

    def remove_secret(self, agent: str, actor: str) -> bool: ...

    def add_api_key(self, agent: str, key_hmac: str, hint: str, actor: str) -> None: ...

    def remove_api_keys(self, agent: str, actor: str) -> int: ...

    def set_admin_token(self, token_sha256: str, actor: str) -> None: ...


class SQLiteAccessBook:
    """``AccessBook`` in the tables of a SQLite ledger (migration m010)."""

    def __init__(self, ledger: SQLiteLedger) -> None:
        self.ledger = ledger

    def records(self) -> AccessRecords:
        conn = self.ledger.db.conn
        settings = dict(conn.execute("SELECT name, value FROM settings"))
        return AccessRecords(
            secrets=dict(conn.execute("SELECT agent, secret_sha256 FROM agent_secrets")),
            api_keys={
                key_hmac: ApiKeyOwner(agent, hint)
                for key_hmac, agent, hint in conn.execute(
                    "SELECT key_hmac, agent, hint FROM api_keys"
                )
            },
            api_key_hash_key=bytes.fromhex(settings["api_key_hash_key"]),
            admin_token_sha256=settings.get("admin_token_sha256"),
        )

    def set_secret(self, agent: str, secret_sha256: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            replaced = conn.execute(
                "SELECT 1 FROM agent_secrets WHERE agent = ?", (agent,)
            ).fetchone()
            conn.execute(
                """
                INSERT INTO agent_secrets (agent, secret_sha256, set_at, actor) VALUES (?, ?, ?, ?)
                ON CONFLICT (agent) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                    set_at = excluded.set_at, actor = excluded.actor
                """,
                (agent, secret_sha256, sqlite_brakes.iso(now), actor),
            )
            kind = "secret_rotated" if replaced else "secret_set"
            sqlite_brakes.record(conn, agent, kind, "a new proxy secret", actor, now)
            return replaced is not None

    def remove_secret(self, agent: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            removed = conn.execute("DELETE FROM agent_secrets WHERE agent = ?", (agent,)).rowcount
            if removed:
                sqlite_brakes.record(
                    conn, agent, "secret_removed", "proxy secret removed", actor, now
                )
            return removed > 0

    def add_api_key(self, agent: str, key_hmac: str, hint: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            conn.execute(
                """
                INSERT INTO api_keys (key_hmac, agent, hint, added_at, actor) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (key_hmac) DO UPDATE SET agent = excluded.agent,
                    added_at = excluded.added_at, actor = excluded.actor
                """,
                (key_hmac, agent, hint, sqlite_brakes.iso(now), actor),
            )
            detail = f"calls made with API key {hint} belong to {agent}"
            sqlite_brakes.record(conn, agent, "api_key_added", detail, actor, now)

    def remove_api_keys(self, agent: str, actor: str) -> int:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            removed = conn.execute("DELETE FROM api_keys WHERE agent = ?", (agent,)).rowcount
            if removed:
                detail = f"{removed} API key fingerprint(s) removed"
                sqlite_brakes.record(conn, agent, "api_keys_removed", detail, actor, now)
            return removed

    def set_admin_token(self, token_sha256: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self.ledger.write_transaction() as conn:
            conn.execute(
                """
                INSERT INTO settings (name, value) VALUES ('admin_token_sha256', ?)
                ON CONFLICT (name) DO UPDATE SET value = excluded.value
                """,
                (token_sha256,),
            )
            sqlite_brakes.record(conn, "*", "admin_token_set", "a new admin token", actor, now)


def access_book_of(ledger: SQLiteLedger | PostgresLedger) -> AccessBook:
    """The access book kept in ``ledger``'s own tables, whichever back end it is."""
    if isinstance(ledger, SQLiteLedger):
        return SQLiteAccessBook(ledger)
    from spendbrake.postgres_access_book import PostgresAccessBook

    return PostgresAccessBook(ledger)
