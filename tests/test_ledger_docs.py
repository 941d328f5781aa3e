"""docs/ledger.md describes every table and view of the ledger, so a new one comes with its doc."""

import re
from pathlib import Path

from ledger_hammer import query
from spendbrake.sqlite_ledger import SQLiteLedger

DOC = Path(__file__).resolve().parent.parent / "docs" / "ledger.md"


def test_every_table_and_view_has_a_section_in_the_ledger_doc(tmp_path: Path) -> None:
    SQLiteLedger(tmp_path / "ledger.db").close()
    names = {
        name
        for (name,) in query(
            tmp_path / "ledger.db",
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%'",
        )
    }
    described = set(re.findall(r"^### `(\w+)`$", DOC.read_text(), flags=re.MULTILINE))
    assert names - described == set(), "add a section for each to docs/ledger.md"
    assert described - names == set(), "docs/ledger.md describes what the ledger no longer has"


def test_every_column_of_calls_is_described(tmp_path: Path) -> None:
    SQLiteLedger(tmp_path / "ledger.db").close()
    columns = {name for (_, name, *_) in query(tmp_path / "ledger.db", "PRAGMA table_info(calls)")}
    section = DOC.read_text().split("### `calls`")[1].split("###")[0]
    described = set(re.findall(r"`(\w+)`", section))
    assert columns - described == set()
