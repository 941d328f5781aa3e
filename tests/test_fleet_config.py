"""The [fleet] section: the offline allowance is off unless asked for, and bounded."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from spendbrake.config import ConfigError, load_config
from spendbrake.fleet_config import FleetConfig


def config_of(tmp_path: Path, text: str) -> FleetConfig:
    path = tmp_path / "spendbrake.toml"
    path.write_text(text)
    return load_config(path).fleet


def test_without_a_fleet_section_the_proxy_fails_closed(tmp_path: Path) -> None:
    assert config_of(tmp_path, "").offline_share is None


def test_a_share_and_a_journal_relative_to_the_config_file(tmp_path: Path) -> None:
    fleet = config_of(
        tmp_path, '[fleet]\noffline_allowance = 0.05\noffline_journal = "j/offline.db"\n'
    )
    assert fleet.offline_share == Decimal("0.05")
    assert fleet.journal_path(Path("/unused")) == tmp_path / "j" / "offline.db"
    assert FleetConfig().journal_path(tmp_path) == tmp_path / "offline-journal.db"


@pytest.mark.parametrize(
    ("value", "shown"), [("0", "0"), ("0.3", "0.3"), ("-0.1", "-0.1"), ("1", "1")]
)
def test_a_share_outside_zero_to_a_quarter_is_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as e:
        config_of(tmp_path, f"[fleet]\noffline_allowance = {value}\n")
    assert str(e.value) == (
        f"{tmp_path / 'spendbrake.toml'}: fleet.offline_allowance {shown} "
        "must be above 0 and at most 0.25 (a share of each agent's remaining daily budget); "
        "leave it out to refuse calls while the database is away"
    )


def test_an_unknown_fleet_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key fleet\.offline_allowence"):
        config_of(tmp_path, "[fleet]\noffline_allowence = 0.05\n")
