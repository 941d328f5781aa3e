"""spendbrake report: spend since a day per agent, model, day or session, pinned on a fixed
ledger (tests/fixed_ledger.py) exactly as the command prints it."""

import json
from datetime import date
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

import fixed_ledger
from spendbrake import cli, cli_reports
from spendbrake.ledger_url import LedgerLocation, PostgresUrl
from spendbrake.reports import since_day

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


def report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["report", *args], prog_name="spendbrake")
    lines = result.output.splitlines()
    return result.exit_code, "\n".join(line.rstrip() for line in lines)


@pytest.mark.sqlite_only  # no ledger is read
def test_since_counts_calendar_days_back_today_included_or_starts_at_a_date() -> None:
    today = date(2026, 3, 14)
    assert since_day("1d", today) == "2026-03-14"
    assert since_day("7d", today) == "2026-03-08"
    assert since_day("2026-03-01", today) == "2026-03-01"
    with pytest.raises(ValueError, match=r"^at least one day \(1d is today\), not '0d'$"):
        since_day("0d", today)
    with pytest.raises(ValueError, match=r"a number of days \(7d\) or a date .*not '3w'$"):
        since_day("3w", today)


def test_by_agent_the_biggest_spender_comes_first_and_the_totals_last() -> None:
    assert report("--by", "agent", "--since", "2d") == (
        0,
        """\
                   spendbrake: spend by agent since 2026-03-13 (UTC)
┏━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┓
┃ agent        ┃ calls ┃ blocked ┃ input tokens ┃ output tokens ┃   spent ┃ in flight ┃
┡━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━┩
│ summarizer   │     2 │       1 │        6,000 │         1,500 │   $0.30 │     $0.00 │
│ research-bot │     5 │       1 │          250 │            63 │   $0.02 │    $0.004 │
│ translator   │     1 │       0 │        1,000 │           200 │ $0.0012 │     $0.00 │
├──────────────┼───────┼─────────┼──────────────┼───────────────┼─────────┼───────────┤
│ total        │     8 │       2 │        7,250 │         1,763 │ $0.3212 │    $0.004 │
└──────────────┴───────┴─────────┴──────────────┴───────────────┴─────────┴───────────┘""",
    )


def test_by_model_keeps_the_estimates_against_what_was_billed() -> None:
    # gpt-4o: held twice what was billed (50.0%); 180 input tokens billed of 200 estimated.
    assert report("--since", "2d") == (  # --by model is the default, as before
        0,
        """\
                                                       spendbrake: spend by model since 2026-03-13 (UTC)
┏━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┓
┃ provider  ┃ model            ┃ calls ┃ blocked ┃ input tokens ┃ output tokens ┃   spent ┃ in flight ┃ actual / held ┃ input actual / estimated ┃ worst call ┃
┡━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━┩
│ anthropic │ claude-haiku-4-5 │     2 │       1 │        6,000 │         1,500 │   $0.30 │     $0.00 │               │                          │            │
│ openai    │ gpt-4o           │     5 │       1 │          250 │            63 │   $0.02 │    $0.004 │         50.0% │                    90.0% │     100.0% │
│ openai    │ gpt-4o-mini      │     1 │       0 │        1,000 │           200 │ $0.0012 │     $0.00 │               │                          │            │
├───────────┼──────────────────┼───────┼─────────┼──────────────┼───────────────┼─────────┼───────────┼───────────────┼──────────────────────────┼────────────┤
│ total     │                  │     8 │       2 │        7,250 │         1,763 │ $0.3212 │    $0.004 │         50.0% │                    90.0% │     100.0% │
└───────────┴──────────────────┴───────┴─────────┴──────────────┴───────────────┴─────────┴───────────┴───────────────┴──────────────────────────┴────────────┘
                   actual / held: what was billed against the worst case held; input actual / estimated above 100% means an estimate ran low""",  # noqa: E501
    )


def test_by_day_and_by_session() -> None:
    code, by_day = report("--by", "day", "--days", "2")  # --days N: the older spelling
    assert code == 0
    assert by_day.splitlines()[4:6] == [
        "│ 2026-03-13 │     1 │       0 │           40 │             8 │  $0.003 │     $0.00 │",
        "│ 2026-03-14 │     7 │       2 │        7,210 │         1,755 │ $0.3182 │    $0.004 │",
    ]
    code, by_session = report("--by", "session", "--since", "2026-03-14")
    assert code == 0
    assert by_session.splitlines()[4:7] == [
        "│ summarizer   │ run-42    │     2 │       1 │        6,000 │         1,500 │   $0.30 │     $0.00 │",  # noqa: E501
        "│ research-bot │ (unnamed) │     4 │       1 │          210 │            55 │  $0.017 │    $0.004 │",  # noqa: E501
        "│ translator   │ (unnamed) │     1 │       0 │        1,000 │           200 │ $0.0012 │     $0.00 │",  # noqa: E501
    ]


def test_json_has_exact_dollars_rows_and_totals() -> None:
    code, output = report("--by", "agent", "--since", "1d", "--json")
    assert code == 0
    document = json.loads(output)
    assert document["since"] == "2026-03-14"
    assert document["by"] == "agent"
    assert document["timezone"] == "UTC"
    assert document["rows"][1] == {
        "agent": "research-bot",
        "calls": 4,  # yesterday's call is before the 14th
        "blocked": 1,
        "input_tokens": 210,
        "output_tokens": 55,
        "spent_usd": "0.017000000",
        "in_flight_usd": "0.004000000",
    }
    assert document["totals"]["spent_usd"] == "0.318200000"
    assert "models" not in document  # the estimates go with --by model


def test_csv_is_one_line_a_row_with_exact_dollars() -> None:
    assert report("--by", "day", "--since", "2d", "--csv") == (
        0,
        "day,calls,blocked,input_tokens,output_tokens,spent_usd,in_flight_usd\n"
        "2026-03-13,1,0,40,8,0.003000000,0.000000000\n"
        "2026-03-14,7,2,7210,1755,0.318200000,0.004000000",
    )


@pytest.mark.sqlite_only  # no ledger is read
def test_report_refuses_what_it_cannot_read() -> None:
    assert report("--since", "3w") == (
        2,
        "Usage: spendbrake report [OPTIONS]\n"
        "Try 'spendbrake report --help' for help.\n\n"
        "Error: Invalid value for --since: expected a number of days (7d) or a date "
        "(2026-03-01), not '3w'",
    )
    assert report("--since", "2d", "--days", "2")[1].endswith(
        "Error: give --since or --days, not both"
    )
    assert report("--json", "--csv")[1].endswith("Error: give --json or --csv, not both")


@pytest.mark.sqlite_only  # no ledger is read
def test_report_on_a_missing_ledger_says_how_to_make_one(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.db"
    assert report("--ledger", str(missing)) == (
        1,
        f"Error: no ledger at {missing}: start the proxy (spendbrake up) or create it with "
        "spendbrake migrate",
    )
    assert not missing.exists()  # a report writes nothing, not even an empty ledger


@pytest.mark.sqlite_only  # the fixed ledger goes into a file: this database stays empty
def test_report_on_a_database_without_a_ledger_says_how_to_make_one(
    postgres_location: PostgresUrl,
) -> None:
    assert report("--ledger", str(postgres_location)) == (
        1,
        f"Error: no ledger at {postgres_location}: start the proxy (spendbrake up) or create it "
        "with spendbrake migrate",
    )
    with psycopg.connect(postgres_location.url) as conn:  # a report creates no tables
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        assert tables.fetchall() == []
