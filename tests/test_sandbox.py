"""The parts of ``spendbrake run``'s process handling that need no process: the configuration
file it writes for its proxy, and the rows it reads back from the ledger."""

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendbrake.config import parse_config
from spendbrake.ledger import CallIntent, HoldGranted, Limits, Settlement, TokenCounts
from spendbrake.run import CallRow, RunOptions
from spendbrake.sandbox import RunError, prepare_config, read_calls, run_sandboxed
from spendbrake.sqlite_ledger import SQLiteLedger

NOW = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def test_the_users_config_is_merged_under_the_runs_budget(tmp_path: Path) -> None:
    user = tmp_path / "spendbrake.toml"
    user.write_text(
        'timezone = "Europe/Berlin"\nledger = "shared.db"\n'
        "[agents.ci-bot]\ndaily_usd = 0.10\nsession_usd = 5\n"
        '[prices."ft:gpt-4o-mini:acme"]\ninput_usd_per_mtok = 0.30\noutput_usd_per_mtok = 1.20\n'
    )
    options = RunOptions(agent="ci-bot", budget_nanos=500_000_000, config_path=user)

    text, config = prepare_config(options)

    assert parse_config(tomllib.loads(text)) == config
    assert config.timezone.key == "Europe/Berlin"
    assert config.ledger is None  # the run keeps its own ledger
    assert config.daily_limit("ci-bot") == 100_000_000
    assert config.limits("ci-bot").session_nanos == 500_000_000
    assert "ft:gpt-4o-mini:acme" in config.prices


def test_a_mistake_in_the_users_config_is_named_in_the_users_file(tmp_path: Path) -> None:
    user = tmp_path / "spendbrake.toml"
    user.write_text("[agents.ci-bot]\ndialy_usd = 0.10\n")
    with pytest.raises(RunError, match=f"{user}: unknown key agents.ci-bot.dialy_usd"):
        prepare_config(RunOptions(agent="ci-bot", config_path=user))


def test_a_missing_config_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="config file not found"):
        prepare_config(RunOptions(config_path=tmp_path / "nope.toml"))


def intent(session: str, agent: str = "ci-bot") -> CallIntent:
    return CallIntent(
        agent=agent,
        session=session,
        provider="openai",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        forwarded_model="gpt-4o",
        stream=False,
        day="2026-11-22",
        started_at=NOW,
    )


def test_the_runs_rows_are_read_back_from_the_ledger_and_no_others(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    try:
        granted = ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000)
        assert isinstance(granted, HoldGranted)
        usage = TokenCounts(input_tokens=12, output_tokens=400)
        ledger.settle(granted.call_id, Settlement(4_030_000, usage, "ok"), 5_000_000_000)
        ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000)  # still held
        ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000, Limits(session_nanos=8_000_000))
        ledger.hold(intent("run-2"), 1, 5_000_000_000)  # another run of the same agent
        ledger.hold(intent("run-1", agent="other"), 1, 5_000_000_000)
    finally:
        ledger.close()

    assert read_calls(path, "ci-bot", "run-1") == [
        CallRow(NOW, "gpt-4o", "settled", "", 12, 400, 4_035_000, 4_030_000),
        CallRow(NOW, "gpt-4o", "held", "", 0, 0, 4_035_000, None),
        CallRow(NOW, "gpt-4o", "refused", "session_budget_exceeded", 0, 0, 4_035_000, None),
    ]


def test_a_ledger_the_proxy_never_wrote_has_no_rows(tmp_path: Path) -> None:
    assert read_calls(tmp_path / "ledger.db", "ci-bot", "run-1") == []


def test_a_run_refuses_settings_that_would_replace_its_own(tmp_path: Path) -> None:
    options = RunOptions(sets=("spendbrake_ledger=/tmp/elsewhere.db",))
    with pytest.raises(RunError, match="spendbrake_ledger is set by the run itself: use --ledger"):
        run_sandboxed(["true"], options, environment={})
