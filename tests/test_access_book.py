"""The ledger's access records: hashes in, hashes out, and an event for every change.
On both back ends (conftest): SQLite's ``SQLiteAccessBook``, PostgreSQL's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_hammer import open_at
from spendbrake.access_book import ApiKeyOwner, SQLiteAccessBook, access_book_of
from spendbrake.agent_keys import secret_hash
from spendbrake.ledger_url import LedgerLocation
from spendbrake.postgres_access_book import PostgresAccessBook
from spendbrake.sqlite_ledger import SQLiteLedger

BOTH_BACKENDS = True  # each test runs on SQLite and on PostgreSQL (conftest)

type Book = SQLiteAccessBook | PostgresAccessBook


@pytest.fixture
def book(path: LedgerLocation) -> Iterator[Book]:
    ledger = open_at(path)
    opened = access_book_of(ledger)
    assert isinstance(opened, SQLiteAccessBook | PostgresAccessBook)
    yield opened
    ledger.close()


def test_a_new_ledger_has_its_own_api_key_hash_key_and_no_admin_token(
    book: Book, path: LedgerLocation, tmp_path: Path
) -> None:
    records = book.records()
    assert len(records.api_key_hash_key) == 32
    assert records.admin_token_sha256 is None
    assert book.records() == records  # made once, when the ledger was created
    other = SQLiteLedger(tmp_path / "other.db")
    assert SQLiteAccessBook(other).records().api_key_hash_key != records.api_key_hash_key
    other.close()


def test_secrets_are_set_rotated_and_removed_with_events(book: Book) -> None:
    assert book.set_secret("research-bot", secret_hash("one"), actor="alice") is False
    assert book.set_secret("research-bot", secret_hash("two"), actor="alice") is True
    assert book.records().secrets == {"research-bot": secret_hash("two")}
    assert book.remove_secret("research-bot", actor="bob") is True
    assert book.remove_secret("research-bot", actor="bob") is False
    assert book.records().secrets == {}
    kinds = [(e.kind, e.actor) for e in book.ledger.events("research-bot")]
    assert kinds == [
        ("secret_removed", "bob"),
        ("secret_rotated", "alice"),
        ("secret_set", "alice"),
    ]
    assert all("one" not in e.detail and "two" not in e.detail for e in book.ledger.events())


def test_api_key_fingerprints_map_to_agents(book: Book) -> None:
    book.add_api_key("research-bot", "f" * 64, "…a1f3", actor="alice")
    book.add_api_key("ci", "e" * 64, "…9b2c", actor="alice")
    assert book.records().api_keys == {
        "f" * 64: ApiKeyOwner("research-bot", "…a1f3"),
        "e" * 64: ApiKeyOwner("ci", "…9b2c"),
    }
    [event] = book.ledger.events("ci")
    assert event.detail == "calls made with API key …9b2c belong to ci"
    assert book.remove_api_keys("research-bot", actor="alice") == 1
    assert set(book.records().api_keys) == {"e" * 64}


def test_the_admin_token_is_kept_as_its_hash(book: Book) -> None:
    book.set_admin_token(secret_hash("tok"), actor="alice")
    assert book.records().admin_token_sha256 == secret_hash("tok")
    book.set_admin_token(secret_hash("tok2"), actor="alice")
    assert book.records().admin_token_sha256 == secret_hash("tok2")
