"""spendbrake top: one moment of the ledger read, drawn and steered by keys; pinned on the
fixed ledger of tests/fixed_ledger.py."""

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from click.testing import CliRunner
from rich.console import Console

import fixed_ledger
from fixed_ledger import NOW
from spendbrake import cli, cli_reports
from spendbrake.burn import Projection
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_reads import Reader, ReadOnlyLedger, open_reader
from spendbrake.ledger_url import LedgerLocation, PostgresUrl, open_ledger
from spendbrake.money import parse_usd
from spendbrake.postgres_ledger import AGENT_LOCKS
from spendbrake.sqlite_ledger import SQLiteLedger
from spendbrake.top import (
    AgentLine,
    Quit,
    Resume,
    View,
    decode_key,
    gather,
    on_key,
    render,
    resume_agent,
    sorted_lines,
    watch,
)

UTC = ZoneInfo("UTC")
PLAIN_TABLE = """\
                                                     spendbrake top: 2026-03-14 12:00:00 (UTC)
agent         state       today                  this month            $/min 1m  $/min 15m  limit reached in  calls  blocked  last refusal
───────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────
summarizer    suspended   $0.30 of $5.00 (6%)    $0.30                    $0.10      $0.02                        2        1  agent_suspended
research-bot  exhausted   $0.017 of $0.05 (34%)  $0.02 of $20.00 (0%)     $0.01     $0.001  2 min (day)           4        1  daily_budget_exceeded
idle-bot      ok          $0.00 of $5.00 (0%)    $0.00                    $0.00      $0.00                        0        0
translator    downgraded  $0.0012 of $5.00 (0%)  $0.0012                  $0.00      $0.00                        1        0"""  # noqa: E501


BOTH_BACKENDS = True  # each test on a SQLite file and on a PostgreSQL schema (conftest)


@pytest.fixture
def written(path: LedgerLocation) -> LedgerLocation:
    fixed_ledger.write(path)
    return path


@pytest.fixture
def reader(written: LedgerLocation) -> Iterator[Reader]:
    opened = open_reader(written)
    yield opened
    opened.close()


def printed(table: object, *, colour: bool = False) -> str:
    console = Console(
        file=io.StringIO(),
        width=200,
        force_terminal=colour,
        color_system="standard" if colour else None,
    )
    console.print(table)
    assert isinstance(console.file, io.StringIO)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def by_agent(lines: list[AgentLine]) -> dict[str, AgentLine]:
    return {line.agent: line for line in lines}


def test_not_on_a_terminal_top_prints_one_plain_table(
    written: LedgerLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "spendbrake.toml"
    config.write_text(fixed_ledger.CONFIG_TOML)
    monkeypatch.setattr(cli_reports, "utc_now", lambda: NOW)
    result = CliRunner().invoke(
        cli.main, ["top", "--config", str(config), "--ledger", str(written)]
    )
    assert result.exit_code == 0, result.output
    output = "\n".join(line.rstrip() for line in result.output.splitlines())
    assert output == PLAIN_TABLE


def test_a_line_has_the_days_and_months_spend_the_burn_and_where_it_leads(
    reader: Reader,
) -> None:
    lines = by_agent(gather(reader, fixed_ledger.config(), NOW))
    assert list(lines) == ["idle-bot", "research-bot", "summarizer", "translator"]
    assert lines["research-bot"] == AgentLine(
        agent="research-bot",
        state="exhausted",  # a call was refused for the day's budget
        spent_today=17_000_000,
        limit_today=50_000_000,
        spent_month=20_000_000,  # yesterday's $0.003 too
        limit_month=20_000_000_000,
        rate_1m=10_000_000,  # $0.01 started in the last minute
        rate_15m=1_000_000,  # $0.015 in the last 15
        red_above=1_000_000_000,  # no burn brake: $1.00 a minute
        # $0.05 - $0.017 spent - $0.004 held = $0.029 left, at $0.01 a minute
        projection=Projection("day", timedelta(minutes=2.9)),
        calls=4,
        blocked=1,
        last_refusal="daily_budget_exceeded",
    )
    summarizer = lines["summarizer"]
    assert (summarizer.state, summarizer.rate_1m, summarizer.rate_15m) == (
        "suspended",
        100_000_000,
        20_000_000,
    )
    assert summarizer.red_above == 50_000_000  # its own burn brake, $0.05 a minute
    assert lines["idle-bot"].projection is None  # nothing spent, nothing projected


def test_limits_set_at_run_time_win_over_the_config(written: LedgerLocation) -> None:
    ledger = open_ledger(written)
    ledger.set_limits(
        [
            ("monthly", "research-bot", parse_usd("0.03")),
            ("burn_usd_per_min", "research-bot", parse_usd("0.005")),
            ("burn_usd_per_min", "summarizer", 0),  # turned off: back to the default threshold
        ]
    )
    ledger.close()
    reader = open_reader(written)
    lines = by_agent(gather(reader, fixed_ledger.config(), NOW))
    reader.close()
    research = lines["research-bot"]
    assert (research.limit_month, research.red_above) == (30_000_000, 5_000_000)
    # The month has $0.03 - $0.02 - $0.004 = $0.006 left: reached before the day's $0.029.
    assert research.projection == Projection("month", timedelta(minutes=0.6))
    assert lines["summarizer"].red_above == 1_000_000_000


def test_the_day_is_the_calendar_day_of_the_configured_timezone(reader: Reader) -> None:
    # At 12:00 UTC it is already 02:00 on the 15th in Kiritimati (UTC+14): a new day, same month.
    config = replace(fixed_ledger.config(), timezone=ZoneInfo("Pacific/Kiritimati"))
    research = by_agent(gather(reader, config, NOW))["research-bot"]
    assert (research.spent_today, research.calls, research.last_refusal) == (0, 0, None)
    assert research.spent_month == 20_000_000
    assert research.rate_1m == 10_000_000  # a minute is a minute, whatever the day


@pytest.mark.sqlite_only
def test_top_reads_while_the_proxy_holds_the_write_lock(written: Path) -> None:
    proxy = SQLiteLedger(written)
    proxy.db.conn.execute("BEGIN IMMEDIATE")  # a hold in progress
    try:
        reader = ReadOnlyLedger(written)
        lines = gather(reader, fixed_ledger.config(), NOW)
        assert len(lines) == 4
    finally:
        proxy.db.conn.execute("COMMIT")
        proxy.close()
    with pytest.raises(LedgerUnavailable, match="readonly"):
        reader.resume("summarizer", actor="top")  # its connection cannot write at all
    reader.close()


def test_top_reads_while_a_postgresql_hold_is_in_progress(postgres_location: PostgresUrl) -> None:
    fixed_ledger.write(postgres_location)
    with psycopg.connect(postgres_location.url) as proxy:
        # A hold in progress: the agents' advisory locks, and a call's row being settled.
        proxy.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(agent)) FROM day_totals",
            (AGENT_LOCKS,),
        )
        proxy.execute("UPDATE calls SET reason = reason WHERE state = 'held'")
        reader = open_reader(postgres_location)
        lines = gather(reader, fixed_ledger.config(), NOW)
        assert len(lines) == 4
        proxy.rollback()
    with pytest.raises(LedgerUnavailable, match="read-only transaction"):
        reader.resume("summarizer", actor="top")  # its transactions cannot write at all
    reader.close()


@pytest.mark.sqlite_only
def test_a_missing_ledger_is_not_created_by_reading_it(tmp_path: Path) -> None:
    with pytest.raises(LedgerUnavailable, match=r"^no ledger at .*spendbrake migrate$"):
        ReadOnlyLedger(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_the_live_view_draws_bars_marks_the_selection_and_names_the_keys(
    reader: Reader,
) -> None:
    lines = sorted_lines(gather(reader, fixed_ledger.config(), NOW), "spend")
    view = View(sort="spend", selected="research-bot", message="idle-bot is not suspended")
    assert printed(render(lines, NOW, UTC, view)).splitlines()[1:] == [
        "agent           state       today                      this month                "
        "$/min 1m  $/min 15m  limit reached in  calls  blocked  last refusal",
        "─" * 157,
        "  summarizer    suspended   ░░░░░░░░ $0.30 of $5.00    $0.30                        "
        "$0.10      $0.02                        2        1  agent_suspended",
        "> research-bot  exhausted   ██░░░░░░ $0.017 of $0.05   ░░░░░░░░ $0.02 of $20.00     "
        "$0.01     $0.001  2 min (day)           4        1  daily_budget_exceeded",
        "  translator    downgraded  ░░░░░░░░ $0.0012 of $5.00  $0.0012                      "
        "$0.00      $0.00                        1        0",
        "  idle-bot      ok          ░░░░░░░░ $0.00 of $5.00    $0.00                        "
        "$0.00      $0.00                        0        0",
        "                                                           "
        "s sort · ↑↓ select · r resume · q quit",
        "                                                                  "
        "idle-bot is not suspended",
    ]


def test_a_burn_rate_above_the_threshold_is_red(reader: Reader) -> None:
    def red(figure: str, line: AgentLine) -> bool:
        drawn = printed(render([line], NOW, UTC, None), colour=True)
        assert figure in drawn
        return re.search(r"\x1b\[1;31m *" + re.escape(figure), drawn) is not None

    lines = by_agent(gather(reader, fixed_ledger.config(), NOW))
    assert red("$0.10", lines["summarizer"])  # a minute: above its $0.05 brake
    assert not red("$0.02", lines["summarizer"])  # fifteen minutes: below it
    research = lines["research-bot"]
    assert not red("$0.01", research)  # below the default $1.00
    assert red("$0.01", replace(research, red_above=parse_usd("0.005")))


def test_sorting_by_burn_spend_state_or_name(reader: Reader) -> None:
    lines = gather(reader, fixed_ledger.config(), NOW)

    def order(sort: str) -> list[str]:
        return [line.agent for line in sorted_lines(lines, sort)]

    assert order("burn") == ["summarizer", "research-bot", "idle-bot", "translator"]
    assert order("spend") == ["summarizer", "research-bot", "translator", "idle-bot"]
    assert order("state") == ["summarizer", "research-bot", "translator", "idle-bot"]
    assert order("agent") == ["idle-bot", "research-bot", "summarizer", "translator"]


def test_keys_sort_select_resume_and_quit(reader: Reader) -> None:
    lines = sorted_lines(gather(reader, fixed_ledger.config(), NOW), "burn")
    view = View()
    sorts = []
    for _ in range(4):
        view, action = on_key(view, "s", lines)
        assert action is None
        sorts.append(view.sort)
    assert sorts == ["spend", "state", "agent", "burn"]

    # The first line (summarizer) is selected until a move; moves stop at either end.
    assert on_key(View(), "r", lines) == (View(selected="summarizer"), Resume("summarizer"))
    view, _ = on_key(View(), "down", lines)
    assert view.selected == "research-bot"
    view, _ = on_key(view, "j", lines)
    view, _ = on_key(view, "j", lines)
    view, _ = on_key(view, "down", lines)
    assert view.selected == "translator"
    view, _ = on_key(view, "up", lines)
    assert view.selected == "idle-bot"
    assert on_key(View(selected="summarizer"), "k", lines)[0].selected == "summarizer"

    view, action = on_key(View(selected="idle-bot"), "r", lines)
    assert action is None
    assert view.message == "idle-bot is not suspended: nothing to resume"
    assert on_key(view, "x", lines) == (View(selected="idle-bot"), None)  # clears the message
    assert on_key(View(), "q", lines) == (View(), Quit())
    assert on_key(View(), "s", [])[0].sort == "spend"  # no agents: keys still work
    assert on_key(View(), "r", []) == (View(), None)


def test_keys_are_read_as_the_terminal_sends_them() -> None:
    assert decode_key(b"\x1b[A") == "up"
    assert decode_key(b"\x1b[B") == "down"
    assert decode_key(b"\x1bOB") == "down"  # an application-mode keypad
    assert decode_key(b"s") == "s"
    assert decode_key(b"qq") == "q"


class ScriptedKeys:
    """Keys as a person would press them, then q."""

    def __init__(self, *keys: str | None) -> None:
        self.keys = list(keys)

    def read(self, timeout: float) -> str | None:
        return self.keys.pop(0) if self.keys else "q"


def test_the_resume_key_lifts_a_suspension_through_the_ledger(written: LedgerLocation) -> None:
    reader = open_reader(written)
    config = fixed_ledger.config()
    drawn = io.StringIO()
    console = Console(file=drawn, width=200, force_terminal=True, color_system=None)
    watch(
        lambda: (NOW, gather(reader, config, NOW)),
        lambda agent: resume_agent(written, agent, "dana"),
        ScriptedKeys(None, "r"),  # None: a second passes without a key
        console,
        UTC,
        sort="state",  # the suspended agent comes first, and is selected
    )
    reader.close()
    ledger = open_ledger(written)
    last = ledger.events(limit=1)[0]
    assert (last.agent, last.kind, last.actor) == ("summarizer", "resumed", "dana")
    assert ledger.suspended_agents() == {}
    ledger.close()
    screen = drawn.getvalue()
    assert (
        "summarizer: resumed (it was suspended for agent_suspended); recorded as done by dana"
        in screen
    )
    assert screen.count("> summarizer    suspended") == 2  # before the key, and at it
    assert "> summarizer    exhausted" not in screen
    assert "summarizer    ok" in screen  # drawn again once resumed


def test_resuming_an_agent_that_is_not_suspended_changes_nothing(written: LedgerLocation) -> None:
    assert resume_agent(written, "idle-bot", "dana") == "idle-bot: was not suspended (any more)"
    ledger = open_ledger(written)
    assert ledger.events("idle-bot") == []
    ledger.close()
