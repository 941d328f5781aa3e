"""Fixtures the ledger tests share: a ledger of the test's own, and the ledger on it.

A module that sets ``BOTH_BACKENDS = True`` runs each of its tests on a SQLite file and on a
PostgreSQL schema of its own (``[sqlite]`` / ``[postgresql]`` in the test id), except tests
marked ``sqlite_only`` (file modes, WAL, the write lock). PostgreSQL comes from a throwaway
cluster started once per session (``pg_cluster``); where none can be started, those tests are
skipped with a message that says how to run them.
"""

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import psycopg
import pytest

import pg_cluster
from spendbrake.ledger_url import LedgerLocation, PostgresUrl, open_ledger
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a ledger test about SQLite itself (files, WAL, locks)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        getattr(metafunc.module, "BOTH_BACKENDS", False)
        and "backend" in metafunc.fixturenames
        and not metafunc.definition.get_closest_marker("sqlite_only")
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for the whole session (started here, stopped at the end)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(pg_cluster.running_cluster())
        except pg_cluster.NoPostgres as e:
            pytest.skip(str(e))
        yield url


@pytest.fixture
def postgres_location(postgres_server: str) -> Iterator[PostgresUrl]:
    """A fresh, empty schema: a new ledger, as a new file is for SQLite."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield pg_cluster.schema_url(postgres_server, schema)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        # A test that left a transaction open keeps its schema; the cluster goes at the end.
        with suppress(psycopg.errors.LockNotAvailable):
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> LedgerLocation:
    """Where the test's ledger lives: a file, or (``[postgresql]``) a schema of its own."""
    if backend == "postgresql":
        location: PostgresUrl = request.getfixturevalue("postgres_location")
        return location
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: LedgerLocation) -> Iterator[SQLiteLedger | PostgresLedger]:
    opened = open_ledger(path)
    yield opened
    opened.close()
