"""What the ledger keeps about access: agents' secret hashes, API-key fingerprints, and the
admin token's hash. Written by the CLI, read by the proxy into memory (``AccessRecords``).

Every change is an event in the ledger's log, which names the agent and never the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from spendbrake.ledger_reads import ReadConn
from spendbrake.sqlite_brakes import iso
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


class LedgerAccessBook:
    """``AccessBook`` in the ledger's own tables (migration m010), in SQL both back ends take
    (``?`` placeholders; PostgreSQL's connection translates them). A back end says how it
    reads (``_reading``) and writes (``_writing``, one transaction)."""

    # Rotations of one agent's secret wait for each other, so each records what it replaced.
    lock_row = ""

    def _reading(self) -> AbstractContextManager[ReadConn]:
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[ReadConn]:
        raise NotImplementedError

    def records(self) -> AccessRecords:
        with self._reading() as db:
            settings = dict(db.execute("SELECT name, value FROM settings").fetchall())
            secrets = db.execute("SELECT agent, secret_sha256 FROM agent_secrets").fetchall()
            keys = db.execute("SELECT key_hmac, agent, hint FROM api_keys").fetchall()
        return AccessRecords(
            secrets=dict(secrets),
            api_keys={key_hmac: ApiKeyOwner(agent, hint) for key_hmac, agent, hint in keys},
            api_key_hash_key=bytes.fromhex(settings["api_key_hash_key"]),
            admin_token_sha256=settings.get("admin_token_sha256"),
        )

    def set_secret(self, agent: str, secret_sha256: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self._writing() as db:
            replaced = db.execute(
                f"SELECT 1 FROM agent_secrets WHERE agent = ?{self.lock_row}", (agent,)
            ).fetchone()
            db.execute(
                """
                INSERT INTO agent_secrets (agent, secret_sha256, set_at, actor) VALUES (?, ?, ?, ?)
                ON CONFLICT (agent) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                    set_at = excluded.set_at, actor = excluded.actor
                """,
                (agent, secret_sha256, iso(now), actor),
            )
            kind = "secret_rotated" if replaced else "secret_set"
            _record(db, agent, kind, "a new proxy secret", actor, now)
            return replaced is not None

    def remove_secret(self, agent: str, actor: str) -> bool:
        now = datetime.now(UTC)
        with self._writing() as db:
            removed = _deleted(db, "DELETE FROM agent_secrets WHERE agent = ? RETURNING 1", agent)
            if removed:
                _record(db, agent, "secret_removed", "proxy secret removed", actor, now)
            return removed > 0

    def add_api_key(self, agent: str, key_hmac: str, hint: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self._writing() as db:
            db.execute(
                """
                INSERT INTO api_keys (key_hmac, agent, hint, added_at, actor) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (key_hmac) DO UPDATE SET agent = excluded.agent,
                    added_at = excluded.added_at, actor = excluded.actor
                """,
                (key_hmac, agent, hint, iso(now), actor),
            )
            detail = f"calls made with API key {hint} belong to {agent}"
            _record(db, agent, "api_key_added", detail, actor, now)

    def remove_api_keys(self, agent: str, actor: str) -> int:
        now = datetime.now(UTC)
        with self._writing() as db:
            removed = _deleted(db, "DELETE FROM api_keys WHERE agent = ? RETURNING 1", agent)
            if removed:
                detail = f"{removed} API key fingerprint(s) removed"
                _record(db, agent, "api_keys_removed", detail, actor, now)
            return removed

    def set_admin_token(self, token_sha256: str, actor: str) -> None:
        now = datetime.now(UTC)
        with self._writing() as db:
            db.execute(
                """
                INSERT INTO settings (name, value) VALUES ('admin_token_sha256', ?)
                ON CONFLICT (name) DO UPDATE SET value = excluded.value
                """,
                (token_sha256,),
            )
            _record(db, "*", "admin_token_set", "a new admin token", actor, now)


def _deleted(db: ReadConn, sql: str, agent: str) -> int:
    return len(db.execute(sql, (agent,)).fetchall())


def _record(db: ReadConn, agent: str, kind: str, detail: str, actor: str, at: datetime) -> None:
    db.execute(
        "INSERT INTO events (at, agent, kind, detail, actor) VALUES (?, ?, ?, ?, ?)",
        (iso(at), agent, kind, detail, actor),
    )


class SQLiteAccessBook(LedgerAccessBook):
    """In a SQLite ledger: reads on its connection as they come (the proxy's never waits for a
    writer), writes in its write transaction."""

    def __init__(self, ledger: SQLiteLedger) -> None:
        self.ledger = ledger

    def _reading(self) -> AbstractContextManager[ReadConn]:
        return nullcontext(self.ledger.db.conn)

    def _writing(self) -> AbstractContextManager[ReadConn]:
        return self.ledger.write_transaction()


def access_book_of(ledger: SQLiteLedger | PostgresLedger) -> AccessBook:
    """The access book kept in ``ledger``'s own tables, whichever back end it is."""
    if isinstance(ledger, SQLiteLedger):
        return SQLiteAccessBook(ledger)
    from spendbrake.postgres_access_book import PostgresAccessBook

    return PostgresAccessBook(ledger)
