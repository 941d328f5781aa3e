"""Fixtures the ledger tests share: a ledger file of the test's own, and the ledger on it."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from spendbrake.sqlite_ledger import SQLiteLedger


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[SQLiteLedger]:
    opened = SQLiteLedger(path)
    yield opened
    opened.close()
