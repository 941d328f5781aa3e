"""Where the ledger lives: a path, sqlite:///PATH, or postgresql://... (and nothing else)."""

from pathlib import Path

import pytest

from spendbrake.config import Config, ConfigError, load_config, resolve_ledger_path
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_url import (
    BadLedgerLocation,
    PostgresUrl,
    describe,
    open_ledger,
    parse_location,
)
from spendbrake.postgres_ledger import PostgresLedger


@pytest.mark.parametrize(
    ("given", "location"),
    [
        ("/var/lib/spendbrake/ledger.db", Path("/var/lib/spendbrake/ledger.db")),
        ("sqlite:///var/lib/spendbrake/ledger.db", Path("/var/lib/spendbrake/ledger.db")),
        ("postgresql://db.internal/spendbrake", PostgresUrl("postgresql://db.internal/spendbrake")),
        ("postgres://db.internal/spendbrake", PostgresUrl("postgres://db.internal/spendbrake")),
    ],
)
def test_a_ledger_location_is_a_file_or_a_postgresql_url(given: str, location: object) -> None:
    assert parse_location(given) == location


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("sqlite://relative.db", "three slashes"),
        ("mysql://db/spendbrake", "expected a file path, sqlite:///PATH or postgresql://HOST/DB"),
    ],
)
def test_other_urls_are_refused_with_the_fix(given: str, message: str) -> None:
    with pytest.raises(BadLedgerLocation, match=message):
        parse_location(given)
    with pytest.raises(ConfigError, match=message):
        resolve_ledger_path(given, Config())


def test_the_command_line_wins_and_a_url_is_kept_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDBRAKE_LEDGER", "/from/env.db")
    url = "postgresql://spendbrake:s3cret@db.internal/spendbrake"
    assert resolve_ledger_path(url, Config()) == PostgresUrl(url)
    assert str(PostgresUrl(url)) == url  # passed on to mitmdump as it is
    assert describe(PostgresUrl(url)) == "postgresql://spendbrake:***@db.internal/spendbrake"
    assert resolve_ledger_path(None, Config()) == Path("/from/env.db")


def test_an_unreachable_database_fails_closed_at_open_without_its_password() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    url = PostgresUrl("postgresql://spendbrake:s3cret@127.0.0.1:9/spendbrake")
    with pytest.raises(LedgerUnavailable, match="cannot open the ledger") as raised:
        open_ledger(url)
    assert "s3cret" not in str(raised.value)


def test_opening_a_postgresql_url_gives_the_postgresql_ledger(
    postgres_location: PostgresUrl,
) -> None:
    ledger = open_ledger(postgres_location)
    try:
        assert isinstance(ledger, PostgresLedger)
    finally:
        ledger.close()


def test_a_configs_ledger_url_is_not_taken_for_a_relative_path(tmp_path: Path) -> None:
    config_file = tmp_path / "spendbrake.toml"
    config_file.write_text('ledger = "postgresql://db.internal/spendbrake"\n')
    assert load_config(config_file).ledger == PostgresUrl("postgresql://db.internal/spendbrake")
    config_file.write_text('ledger = "ledger.db"\n')
    assert load_config(config_file).ledger == tmp_path / "ledger.db"
