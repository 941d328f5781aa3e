"""spendbrake export: the ledger's calls and events as CSV or JSON lines, columns as stored;
and the ledger itself opened as is by sqlite-utils, as docs/ledger.md says."""

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlite_utils.cli import cli as sqlite_utils_cli

import fixed_ledger
from spendbrake import cli, cli_reports
from spendbrake.ledger_url import LedgerLocation

BOTH_BACKENDS = True  # each test on a SQLite file and on a PostgreSQL schema (conftest)


@pytest.fixture(autouse=True)
def ledger_file(
    path: LedgerLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LedgerLocation:
    fixed_ledger.write(path)
    config = tmp_path / "spendbrake.toml"
    config.write_text(fixed_ledger.CONFIG_TOML)
    monkeypatch.setenv("SPENDBRAKE_LEDGER", str(path))
    monkeypatch.setenv("SPENDBRAKE_CONFIG", str(config))
    monkeypatch.setattr(cli_reports, "utc_now", lambda: fixed_ledger.NOW)
    return path


def export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["export", *args], prog_name="spendbrake")
    return result.exit_code, result.output


def test_calls_export_as_csv_with_the_ledgers_columns_and_exact_dollars() -> None:
    code, output = export("--since", "2d")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(output)))
    assert len(rows) == 10  # every call of both days, refused and in flight too
    first = rows[0]
    assert list(first)[:10] == [
        "id", "started_at", "day", "agent", "session", "provider", "endpoint",
        "requested_model", "forwarded_model", "stream",
    ]  # fmt: skip
    assert list(first)[-2:] == ["held_usd", "actual_usd"]
    assert {
        k: first[k] for k in ("agent", "state", "held_nanos", "actual_nanos", "actual_usd")
    } == {
        "agent": "research-bot",
        "state": "settled",
        "held_nanos": "20000000",
        "actual_nanos": "10000000",
        "actual_usd": "0.010000000",
    }
    in_flight = next(row for row in rows if row["state"] == "held")
    assert (in_flight["held_usd"], in_flight["actual_usd"]) == ("0.004000000", "")


def test_since_keeps_the_calls_of_those_calendar_days() -> None:
    code, output = export("--format", "jsonl", "--since", "1d")
    assert code == 0
    calls = [json.loads(line) for line in output.splitlines()]
    assert len(calls) == 9  # yesterday's call is left out
    assert {call["day"] for call in calls} == {"2026-03-14"}
    refused = [c for c in calls if c["state"] == "refused"]
    assert [(c["agent"], c["reason"], c["actual_nanos"], c["actual_usd"]) for c in refused] == [
        ("research-bot", "daily_budget_exceeded", None, None),
        ("summarizer", "agent_suspended", None, None),
    ]


def test_events_export_as_json_lines() -> None:
    assert export("events", "--format", "jsonl") == (
        0,
        '{"id": 1, "at": "2026-03-14T11:59:20.000000+00:00", "agent": "summarizer", '
        '"kind": "suspended", "detail": "agent_suspended: $0.10 spent in the last minute", '
        '"actor": "spendbrake"}\n',
    )
    # A day starts at the configured timezone's midnight: nothing happened on the 15th.
    assert export("events", "--since", "2026-03-15") == (0, "id,at,agent,kind,detail,actor\n")


def test_an_export_to_a_file_says_how_many_rows_it_wrote(tmp_path: Path) -> None:
    target = tmp_path / "events.csv"
    result = CliRunner().invoke(cli.main, ["export", "events", "-o", str(target)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"{target}: 1 events since 2026-03-08\n"
    assert target.read_text().splitlines()[0] == "id,at,agent,kind,detail,actor"


@pytest.mark.sqlite_only
def test_sqlite_utils_opens_the_ledger_as_is(ledger_file: Path) -> None:
    runner = CliRunner()
    tables = runner.invoke(sqlite_utils_cli, ["tables", str(ledger_file), "--csv"])
    assert tables.exit_code == 0, tables.output
    assert {"calls", "day_totals", "events"} <= set(tables.output.splitlines()[1:])
    views = runner.invoke(sqlite_utils_cli, ["views", str(ledger_file), "--csv"])
    assert views.output.splitlines()[1:] == ["windows_after_resets"]
    spent = runner.invoke(
        sqlite_utils_cli,
        [
            "query",
            str(ledger_file),
            "SELECT agent, SUM(actual_nanos) AS nanos FROM calls GROUP BY agent ORDER BY agent",
        ],
    )
    assert json.loads(spent.output) == [
        {"agent": "research-bot", "nanos": 20_000_000},
        {"agent": "summarizer", "nanos": 300_000_000},
        {"agent": "translator", "nanos": 1_200_000},
    ]
