"""The spendbrake command, output pinned exactly as users see it."""

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger_hammer import query
from spendbrake.brakes import Brake
from spendbrake.cli import main
from spendbrake.ledger import (
    CallIntent,
    HoldGranted,
    HoldRefused,
    Limits,
    Settlement,
    TokenCounts,
)
from spendbrake.sqlite_brakes import suspend
from spendbrake.sqlite_ledger import SQLiteLedger


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDBRAKE_CERTS", str(tmp_path / "certs"))
    monkeypatch.setenv("SPENDBRAKE_LEDGER", str(tmp_path / "ledger.db"))
    monkeypatch.delenv("SPENDBRAKE_CONFIG", raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "spendbrake.toml"
    path.write_text('timezone = "UTC"\n[agents.research-bot]\ndaily_usd = 0.05\n')
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    # A command's answer is its stdout; notices ("created a new ledger") and errors go to stderr.
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_addon_path_prints_the_script_alone() -> None:
    code, output = run("addon-path")
    assert code == 0
    path = Path(output.removesuffix("\n"))
    assert output.count("\n") == 1
    assert path.name == "addon_script.py"
    assert "addons = spendbrake_addons()" in path.read_text()


def test_env_prints_the_proxy_and_a_combined_ca_bundle(tmp_path: Path) -> None:
    code, output = run("env", "--agent", "research-bot", "--listen", "127.0.0.1:9090")
    bundle = tmp_path / "certs" / "spendbrake-ca-bundle.pem"
    assert code == 0
    assert output.splitlines() == [
        "export HTTPS_PROXY=http://research-bot@127.0.0.1:9090",
        "export https_proxy=http://research-bot@127.0.0.1:9090",
        "export NO_PROXY=localhost,127.0.0.1,::1",
        "export no_proxy=localhost,127.0.0.1,::1",
        f"export SSL_CERT_FILE={bundle}",
        f"export REQUESTS_CA_BUNDLE={bundle}",
        f"export CURL_CA_BUNDLE={bundle}",
        f"export NODE_EXTRA_CA_CERTS={bundle}",
    ]
    proxy_ca = (tmp_path / "certs" / "mitmproxy-ca-cert.pem").read_bytes()
    content = bundle.read_bytes()
    assert content.endswith(proxy_ca)
    assert content.count(b"BEGIN CERTIFICATE") > 10  # the system's CAs come first
    key_mode = stat.S_IMODE(os.stat(tmp_path / "certs" / "mitmproxy-ca.pem").st_mode)
    assert key_mode == 0o600


def test_env_rejects_an_unusable_agent_name() -> None:
    code, output = run("env", "--agent", "two words")
    assert code == 2
    assert "Invalid value for --agent: agent name 'two words' is not usable" in output


def test_status_json_lists_configured_and_active_agents(config: Path, tmp_path: Path) -> None:
    code, output = run("status", "--json", "--config", str(config))
    assert code == 0
    document = json.loads(output)
    assert set(document) == {"as_of", "timezone", "agents"}
    assert document["timezone"] == "UTC"
    assert document["agents"] == [
        {
            "agent": "research-bot",
            "spent_usd": "0.000000000",
            "held_usd": "0.000000000",
            "limit_usd": "0.050000000",
            "remaining_usd": "0.050000000",
            "calls": 0,
            "blocked": 0,
            "state": "ok",
        }
    ]


def test_reading_commands_create_no_ledger_at_a_path_that_has_none(
    config: Path, tmp_path: Path
) -> None:
    """A mistyped --ledger must not leave a stray ledger behind: status reports the configured
    agents with nothing spent, and says there is no ledger there."""
    mistyped = tmp_path / "ledgr.db"
    for command in (["status", "--json"], ["status"], ["agent", "list"]):
        result = CliRunner().invoke(
            main, [*command, "--config", str(config), "--ledger", str(mistyped)]
        )
        assert result.exit_code == 0, result.output
        assert f"no ledger at {mistyped} yet" in result.stderr
        assert not mistyped.exists()
        if command == ["status", "--json"]:
            [agent] = json.loads(result.stdout)["agents"]
            assert (agent["agent"], agent["spent_usd"]) == ("research-bot", "0.000000000")


@pytest.mark.parametrize(
    ("command", "nothing"),
    [
        (["resume", "research-bot"], "no suspension to lift"),
        (["resume", "research-bot", "--session", "run-42"], "no suspension to lift"),
        (["reset", "research-bot", "--window", "day"], "no spending to reset"),
        (["agent", "remove", "research-bot"], "no secret or API key to remove"),
    ],
)
def test_commands_that_change_recorded_state_refuse_a_path_with_no_ledger(
    config: Path, tmp_path: Path, command: list[str], nothing: str
) -> None:
    """Resuming an agent in a new, empty ledger would report success while the proxy, reading
    its own ledger, kept refusing: a mistyped --ledger is an error here, and creates nothing."""
    mistyped = tmp_path / "ledgr.db"
    result = CliRunner().invoke(
        main, [*command, "--config", str(config), "--ledger", str(mistyped)]
    )

    assert result.exit_code == 1
    assert f"Error: no ledger at {mistyped}, so there is {nothing} there" in result.stderr
    assert "check --ledger" in result.stderr
    assert not mistyped.exists()


def test_writing_commands_say_when_they_create_the_ledger(config: Path, tmp_path: Path) -> None:
    """limit set before the proxy's first start works, and a mistyped path shows."""
    ledger = tmp_path / "new.db"
    arguments = ["limit", "set", "research-bot", "--daily", "0.10"]
    arguments += ["--config", str(config), "--ledger", str(ledger)]

    first = CliRunner().invoke(main, arguments)
    again = CliRunner().invoke(main, arguments)

    assert (first.exit_code, again.exit_code) == (0, 0)
    assert first.stderr == f"spendbrake: created a new ledger at {ledger}\n"
    assert again.stderr == ""
    assert ledger.is_file()


def test_status_table_shows_every_agent_untruncated(config: Path) -> None:
    code, output = run("status", "--config", str(config))
    assert code == 0
    assert "research-bot" in output
    assert "$0.05" in output


def test_limit_set_overrides_the_config_from_the_next_call(config: Path, tmp_path: Path) -> None:
    code, output = run("limit", "set", "research-bot", "--daily", "0.10", "--config", str(config))
    assert (code, output) == (
        0,
        "research-bot: daily limit set to $0.10 (applies from the next call)\n",
    )
    assert SQLiteLedger(tmp_path / "ledger.db").daily_limit_overrides() == {
        "research-bot": 100_000_000
    }
    _, status_output = run("status", "--json", "--config", str(config))
    assert json.loads(status_output)["agents"][0]["limit_usd"] == "0.100000000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--daily", "ten"],
            "Invalid value for --daily: --daily must be a dollar amount like 0.05, not 'ten'",
        ),
        (
            ["--daily", "-1"],
            "Invalid value for --daily: --daily must be a non-negative dollar amount",
        ),
    ],
)
def test_limit_set_rejects_bad_amounts(args: list[str], message: str) -> None:
    code, output = run("limit", "set", "research-bot", *args)
    assert code == 2
    assert message in output


def test_the_ledger_and_config_can_come_from_the_environment(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.db"
    monkeypatch.setenv("SPENDBRAKE_CONFIG", str(config))
    monkeypatch.setenv("SPENDBRAKE_LEDGER", str(other))
    assert run("limit", "set", "research-bot", "--daily", "1")[0] == 0
    assert SQLiteLedger(other).daily_limit_overrides() == {"research-bot": 1_000_000_000}


def test_a_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.x]\nlimit = 1\n")
    for command in (["status"], ["up"], ["migrate"]):
        code, output = run(*command, "--config", str(bad))
        assert code == 1
        assert output == f"Error: {bad}: unknown key agents.x.limit\n"


def test_migrate_creates_the_ledger(tmp_path: Path) -> None:
    code, output = run("migrate")
    assert (code, output) == (0, f"ledger {tmp_path / 'ledger.db'} is up to date\n")


def test_price_shows_the_figure_and_its_source(tmp_path: Path) -> None:
    code, output = run("price", "gpt-4o-mini", "--input", "1000", "--output", "100")
    assert code == 0
    assert output == (
        "gpt-4o-mini at openai, priced by genai-prices 0.2.3 (openai)\n"
        "  1,000 input tokens: $0.00015\n"
        "  100 output tokens:  $0.00006\n"
        "  together:           $0.00021\n"
        "  maximum output:     16,384 tokens\n"
        "  a stream cut short: the text it relayed\n"
    )
    code, output = run("price", "o3")
    assert code == 0
    assert output.endswith(
        "  a stream cut short:      all the output held (it may reason unseen)\n"
    )


def test_price_names_an_override_and_refuses_the_unknown(tmp_path: Path) -> None:
    config = tmp_path / "prices.toml"
    config.write_text('[prices."my-ft"]\ninput_usd_per_mtok = 3\noutput_usd_per_mtok = 12\n')
    code, output = run(
        "price", "my-ft", "--config", str(config), "--input", "1000", "--output", "0"
    )
    assert code == 0
    assert "priced by the configuration's [prices] override" in output
    assert "1,000 input tokens: $0.003" in output
    assert "unknown (requests must set their max output)" in output
    code, output = run("price", "nope-model")
    assert code == 1
    assert output == (
        "Error: no price is known for model 'nope-model' at openai; "
        'give it a price in the configuration\'s [prices."nope-model"]\n'
    )


def test_report_compares_estimates_with_actuals_per_model(tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from spendbrake.ledger import CallIntent, HoldGranted, Settlement, TokenCounts

    ledger = SQLiteLedger(tmp_path / "ledger.db")
    now = datetime.now(UTC)
    base = CallIntent(
        "bot",
        "",
        "openai",
        "/v1/chat/completions",
        "gpt-4o",
        "gpt-4o",
        False,
        now.date().isoformat(),
        now,
    )
    for estimated, actual in ((100, 80), (50, 50)):
        call = replace(base, estimated_input_tokens=estimated, estimated_output_tokens=16)
        hold = ledger.hold(call, 1_000, 10**12)
        assert isinstance(hold, HoldGranted)
        ledger.settle(hold.call_id, Settlement(250, TokenCounts(input_tokens=actual), "ok"), 10**12)
    ledger.close()
    code, output = run("report", "--json")
    assert code == 0
    assert json.loads(output)["models"] == [
        {
            "provider": "openai",
            "model": "gpt-4o",
            "calls": 2,
            "held_usd": "0.000002000",
            "actual_usd": "0.000000500",
            "estimated_input_tokens": 150,
            "actual_input_tokens": 130,
            "max_input_ratio": 1.0,
        }
    ]
    code, table = run("report")
    assert code == 0
    assert "gpt-4o" in table
    assert "25.0%" in table  # actual / held


def test_limit_set_sets_every_window_of_an_agent_at_once(config: Path, tmp_path: Path) -> None:
    code, output = run(
        "limit", "set", "research-bot", "--monthly", "20", "--session-usd", "0.5",
        "--session-tokens", "50000", "--config", str(config),
    )  # fmt: skip
    assert code == 0, output
    assert output.splitlines() == [
        "research-bot: monthly limit set to $20.00 (applies from the next call)",
        "research-bot: session limit set to $0.50 (applies from the next call)",
        "research-bot: session token limit set to 50,000 (applies from the next call)",
    ]
    rows = query(tmp_path / "ledger.db", "SELECT agent, window, limit_nanos FROM limits")
    assert sorted(rows) == [
        ("research-bot", "monthly", 20_000_000_000),
        ("research-bot", "session_tokens", 50_000),
        ("research-bot", "session_usd", 500_000_000),
    ]


def test_limit_set_sets_a_groups_shared_limits(config: Path, tmp_path: Path) -> None:
    code, output = run(
        "limit", "set", "--group", "research", "--daily", "50", "--config", str(config)
    )
    assert (code, output) == (
        0,
        "group research: daily limit set to $50.00 (applies from the next call)\n",
    )
    rows = query(tmp_path / "ledger.db", "SELECT agent, window, limit_nanos FROM limits")
    assert rows == [("research", "group_daily", 50_000_000_000)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name an AGENT or a --group"),
        (["research-bot", "--group", "g", "--daily", "1"], "name an AGENT or a --group"),
        (["research-bot"], "give at least one limit"),
        (
            ["--group", "g", "--session-usd", "1"],
            "a group has --daily, --monthly and --monthly-tokens limits only",
        ),
        (["research-bot", "--session-tokens", "-1"], "must be 0 or more"),
        (["research-bot", "--loop-repeats", "1"], "must be 0 (off) or 2 or more"),
        (["--group", "g", "--calls-per-minute", "5"], "not --calls-per-minute"),
        (["research-bot", "--monthly", "lots"], "--monthly must be a dollar amount"),
        (["--group", "a b", "--daily", "1"], "Invalid value for --group"),
    ],
)
def test_limit_set_refuses_what_it_cannot_apply_and_writes_nothing(
    config: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = run("limit", "set", *args, "--config", str(config))
    assert code == 2
    assert message in output
    assert (
        not (tmp_path / "ledger.db").exists()
        or query(tmp_path / "ledger.db", "SELECT * FROM limits") == []
    )


def test_price_counts_a_per_request_fee_once() -> None:
    code, output = run(
        "price", "sonar", "--provider", "perplexity", "--input", "1007", "--output", "9"
    )
    assert code == 0, output
    lines = [line.split(":", 1) for line in output.splitlines()[1:]]
    figures = {label.strip(): value.strip() for label, value in lines}
    # $1 per million input and output tokens, and $12 per thousand requests
    assert figures["1,007 input tokens"] == "$0.001007"
    assert figures["9 output tokens"] == "$0.000009"
    assert figures["per request"] == "$0.012"
    assert figures["together"] == "$0.013016"


def test_price_shows_the_hosts_own_maximum_output() -> None:
    code, groq = run("price", "openai/gpt-oss-120b", "--provider", "groq")
    assert code == 0, groq
    assert "maximum output:          65,536 tokens" in groq  # Groq caps it below other hosts


def test_resume_lifts_a_suspension_and_records_who_did_it(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    with ledger.db.conn:
        suspend(
            ledger.db.conn, "research-bot", Brake("loop_detected", "8 times"), datetime.now(UTC)
        )
    ledger.close()
    _, before = run("status", "--json", "--config", str(config))
    assert json.loads(before)["agents"][0]["state"] == "suspended"

    monkeypatch.setenv("USER", "alice")
    code, output = run("resume", "research-bot", "--config", str(config))
    assert (code, output) == (
        0,
        "research-bot: resumed (it was suspended for loop_detected); recorded as done by alice\n",
    )
    _, after = run("status", "--json", "--config", str(config))
    assert json.loads(after)["agents"][0]["state"] == "ok"
    events = query(tmp_path / "ledger.db", "SELECT kind, actor FROM events ORDER BY id")
    assert events == [("suspended", "spendbrake"), ("resumed", "alice")]
    assert run("resume", "research-bot", "--config", str(config))[1].endswith(
        "was not suspended; its loop and failure history start over\n"
    )


def test_run_refuses_a_budget_that_is_not_money_before_starting_anything() -> None:
    code, output = run("run", "--budget", "lots", "--", "true")
    assert code == 2
    assert "Error: Invalid value for --budget: --budget must be a dollar amount" in output


def test_run_refuses_an_unusable_agent_name() -> None:
    code, output = run("run", "--agent", "two words", "--", "true")
    assert code == 2
    assert "Error: Invalid value for --agent: agent name 'two words' is not usable" in output


def test_run_needs_a_command() -> None:
    code, output = run("run", "--budget", "1")
    assert code == 2
    assert "Missing argument 'COMMAND...'" in output


def test_run_checks_where_the_summary_goes_before_the_command_runs(tmp_path: Path) -> None:
    code, output = run("run", "--summary-json", str(tmp_path / "no" / "s.json"), "--", "true")
    assert code == 1
    assert output == f"spendbrake run: --summary-json: there is no directory {tmp_path / 'no'}\n"


def test_limit_set_changes_brakes_and_quotas_too(config: Path, tmp_path: Path) -> None:
    code, output = run(
        "limit", "set", "research-bot", "--calls-per-minute", "30", "--loop-repeats", "0",
        "--burn-usd-per-min", "2", "--monthly-tokens", "1000000", "--config", str(config),
    )  # fmt: skip
    assert code == 0, output
    assert output.splitlines() == [
        "research-bot: burn-rate brake (a minute) set to $2.00 (applies from the next call)",
        "research-bot: monthly token quota set to 1,000,000 (applies from the next call)",
        "research-bot: calls per minute set to 30 (applies from the next call)",
        "research-bot: loop brake (identical requests) off (applies from the next call)",
    ]
    rows = query(tmp_path / "ledger.db", "SELECT window, limit_nanos FROM limits ORDER BY window")
    assert rows == [
        ("burn_usd_per_min", 2_000_000_000),
        ("calls_per_minute", 30),
        ("loop_repeats", 0),
        ("monthly_tokens", 1_000_000),
    ]


def test_reset_zeroes_todays_spend_and_says_who_did_it(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    today = datetime.now(UTC).date().isoformat()
    call = CallIntent(
        agent="research-bot", session="", provider="openai", endpoint="/v1/chat/completions",
        requested_model="gpt-4o", forwarded_model="gpt-4o", stream=False, day=today,
        started_at=datetime.now(UTC),
    )  # fmt: skip
    held = ledger.hold(call, 50_000_000, 50_000_000)  # the whole $0.05
    assert isinstance(held, HoldGranted)
    ledger.settle(held.call_id, Settlement(50_000_000, TokenCounts(), "ok"), 50_000_000)
    ledger.close()
    assert (
        json.loads(run("status", "--json", "--config", str(config))[1])["agents"][0]["state"]
        == "exhausted"
    )

    monkeypatch.setenv("USER", "carol")
    code, output = run("reset", "research-bot", "--window", "day", "--config", str(config))
    assert (code, output) == (
        0,
        f"research-bot: day {today} reset, $0.05 forgiven; recorded as done by carol\n",
    )
    agent = json.loads(run("status", "--json", "--config", str(config))[1])["agents"][0]
    assert (agent["state"], agent["spent_usd"]) == ("ok", "0.000000000")
    code, output = run("reset", "research-bot", "--window", "day", "--session", "x")
    assert code == 2
    assert "--session ID goes with --window session" in output


def test_resume_with_a_session_lifts_that_sessions_breakers(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    call = CallIntent(
        agent="research-bot", session="run-42", provider="openai",
        endpoint="/v1/chat/completions", requested_model="gpt-4o", forwarded_model="gpt-4o",
        stream=False, day=datetime.now(UTC).date().isoformat(), started_at=datetime.now(UTC),
        estimated_input_tokens=100,
    )  # fmt: skip
    capped = Limits(session_tokens=100)
    first = ledger.hold(call, 1, 10**9, capped)
    assert isinstance(first, HoldGranted)
    ledger.settle(first.call_id, Settlement(1, TokenCounts(input_tokens=100), "ok"), 10**9)
    assert isinstance(ledger.hold(call, 1, 10**9, capped), HoldRefused)  # the breaker is open

    monkeypatch.setenv("USER", "dana")
    code, output = run("resume", "research-bot", "--session", "run-42", "--config", str(config))
    assert code == 0, output
    assert "session run-42 resumed" in output
    assert "recorded as done by dana" in output
    assert isinstance(ledger.hold(call, 1, 10**9, capped), HoldGranted)
    ledger.close()


def test_status_says_when_an_agent_is_throttled_or_downgraded(config: Path, tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    now = datetime.now(UTC)
    base = CallIntent(
        agent="research-bot", session="", provider="openai", endpoint="/v1/chat/completions",
        requested_model="gpt-4o", forwarded_model="gpt-4o-mini", stream=False,
        day=now.date().isoformat(), started_at=now,
    )  # fmt: skip
    assert isinstance(ledger.hold(base, 1, 10**9), HoldGranted)
    ledger.close()
    [agent] = json.loads(run("status", "--json", "--config", str(config))[1])["agents"]
    assert agent["state"] == "downgraded"

    ledger = SQLiteLedger(tmp_path / "ledger.db")
    ledger.refuse(replace(base, forwarded_model="gpt-4o"), "rate_limited")
    ledger.close()
    [agent] = json.loads(run("status", "--json", "--config", str(config))[1])["agents"]
    assert agent["state"] == "throttled"  # held back in the last minute comes first
