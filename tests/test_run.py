"""``spendbrake run`` without processes: its configuration, its command's environment, its
summary from the ledger rows, and its exit code."""

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from spendbrake.cli import main
from spendbrake.config import parse_config
from spendbrake.run import (
    BUDGET_EXIT_CODE,
    CallRow,
    RunOptions,
    RunSummary,
    caller_ca_files,
    child_environment,
    dropped_no_proxy,
    exempts_llm_host,
    exit_code,
    new_session_id,
    no_proxy,
    own_option_conflicts,
    render_summary,
    run_config,
    summarize,
    toml_document,
    upstream_proxy_of,
)

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
BUNDLE = Path("/tmp/run/certs/spendbrake-ca-bundle.pem")
URL = "http://ci-bot:run-1@127.0.0.1:41000"


# -- the configuration ------------------------------------------------------------------------


def test_the_runs_limits_go_into_its_agents_table_over_the_users_own() -> None:
    user = {
        "timezone": "Europe/Berlin",
        "ledger": "ledger.db",
        "agents": {
            "ci-bot": {"daily_usd": 2.5, "session_usd": 9.0},
            "other": {"daily_usd": 1.0},
        },
    }
    options = RunOptions(agent="ci-bot", budget_nanos=500_000_000, session_tokens=20_000)

    document = run_config(user, options)

    assert document == {
        "timezone": "Europe/Berlin",
        "agents": {
            "ci-bot": {"daily_usd": 2.5, "session_usd": "0.5", "session_tokens": 20_000},
            "other": {"daily_usd": 1.0},
        },
    }
    assert user["agents"]["ci-bot"]["session_usd"] == 9.0  # the user's document is not touched
    assert "ledger" in user


def test_the_written_configuration_is_the_one_the_proxy_reads() -> None:
    options = RunOptions(agent="ci-bot", budget_nanos=20_000_000, daily_nanos=50_000_000)
    document = run_config({"defaults": {"daily_usd": 5}}, options)

    config = parse_config(tomllib.loads(toml_document(document)))

    assert config.limits("ci-bot").session_nanos == 20_000_000
    assert config.daily_limit("ci-bot") == 50_000_000
    assert config.daily_limit("someone-else") == 5_000_000_000


def test_a_run_without_limits_writes_no_keys() -> None:
    assert run_config({}, RunOptions()) == {"agents": {"run": {}}}


def test_a_budget_above_the_built_in_daily_limit_raises_the_runs_day() -> None:
    def day(user: dict[str, Any], budget: str) -> int:
        options = RunOptions(agent="ci", budget_nanos=int(float(budget) * 1e9))
        return parse_config(run_config(user, options)).daily_limit("ci")

    assert day({}, "20") == 20_000_000_000  # not stopped by the built-in $5.00 a day
    assert day({}, "0.50") == 5_000_000_000  # never lowered
    assert day({"agents": {"ci": {"daily_usd": 2}}}, "20") == 2_000_000_000  # the user's own
    assert day({"defaults": {"daily_usd": 3}}, "20") == 3_000_000_000


_KEYS = st.text(min_size=1, max_size=8)
_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
)
_TOML = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(_KEYS, _TOML, max_size=5))
def test_toml_document_reads_back_as_what_was_read(document: dict[str, Any]) -> None:
    assert tomllib.loads(toml_document(document)) == document


# -- the command's environment ----------------------------------------------------------------


def test_the_command_is_routed_through_the_proxy_for_every_client_stack() -> None:
    env = child_environment({"PATH": "/usr/bin", "HOME": "/home/ci"}, URL, BUNDLE)

    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/ci",
        "HTTPS_PROXY": URL,
        "https_proxy": URL,
        "HTTP_PROXY": URL,
        "http_proxy": URL,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "SSL_CERT_FILE": str(BUNDLE),
        "REQUESTS_CA_BUNDLE": str(BUNDLE),
        "CURL_CA_BUNDLE": str(BUNDLE),
        "NODE_EXTRA_CA_CERTS": str(BUNDLE),
        "NODE_USE_ENV_PROXY": "1",
    }


def test_the_callers_proxy_settings_are_replaced_and_its_own_upstream_remembered() -> None:
    caller = {"HTTPS_PROXY": "http://proxy.corp:3128", "SSL_CERT_FILE": "/etc/corp.pem"}

    env = child_environment(caller, URL, BUNDLE)

    assert upstream_proxy_of(caller) == "http://proxy.corp:3128"
    assert upstream_proxy_of({"https_proxy": "http://p:1"}) == "http://p:1"
    assert upstream_proxy_of({"HTTPS_PROXY": ""}) is None
    assert env["HTTPS_PROXY"] == URL
    assert env["SSL_CERT_FILE"] == str(BUNDLE)


def test_no_proxy_keeps_the_callers_hosts_and_loopback_but_never_everything() -> None:
    caller = {"NO_PROXY": "intranet.corp, *,localhost", "no_proxy": "git.corp"}
    assert no_proxy(caller) == "intranet.corp,localhost,git.corp,127.0.0.1,::1"


@pytest.mark.parametrize(
    "entry",
    [
        "api.openai.com",
        "API.OpenAI.com.",
        ".openai.com",
        "openai.com",
        "*.openai.com",
        "api.anthropic.com:443",
        "googleapis.com",
        "my-resource.openai.azure.com",
        ".openai.azure.com",
        "azure.com",
        "openrouter.ai",
        ".ai",
        "com",
    ],
)
def test_a_no_proxy_entry_that_covers_an_llm_host_is_an_exemption(entry: str) -> None:
    assert exempts_llm_host(entry)


@pytest.mark.parametrize(
    "entry", ["intranet.corp", "openai.com.evil", "platform-openai.com", "10.0.0.0/8", "::1", ""]
)
def test_other_no_proxy_entries_are_not(entry: str) -> None:
    assert not exempts_llm_host(entry)


def test_no_proxy_never_lets_an_llm_call_past_the_budget() -> None:
    caller = {
        "NO_PROXY": "intranet.corp,.openai.com,api.anthropic.com",
        "no_proxy": "*.azure.com,git.corp,*",
    }

    assert dropped_no_proxy(caller) == [".openai.com", "api.anthropic.com", "*.azure.com", "*"]
    assert no_proxy(caller) == "intranet.corp,git.corp,localhost,127.0.0.1,::1"
    assert child_environment(caller, URL, BUNDLE)["no_proxy"] == no_proxy(caller)
    assert dropped_no_proxy({"NO_PROXY": "intranet.corp"}) == []


def test_the_callers_own_ca_bundles_are_found_for_the_runs_bundle() -> None:
    caller = {
        "SSL_CERT_FILE": "/etc/corp/ca.pem",
        "REQUESTS_CA_BUNDLE": "/etc/corp/ca.pem",
        "CURL_CA_BUNDLE": "",
        "NODE_EXTRA_CA_CERTS": "/etc/corp/node-extra.pem",
    }
    assert caller_ca_files(caller) == [Path("/etc/corp/ca.pem"), Path("/etc/corp/node-extra.pem")]
    assert caller_ca_files({}) == []


def test_options_the_run_sets_itself_are_refused_with_the_flag_to_use() -> None:
    sets = ["upstream_cert=false", "spendbrake_ledger=/tmp/x.db", " spendbrake_config = c.toml"]
    sets += ["confdir=/c", "spendbrake_default_agent=a", "spendbrake_default_session=s"]

    assert own_option_conflicts(sets) == [
        "spendbrake_ledger is set by the run itself: use --ledger PATH",
        "spendbrake_config is set by the run itself: use --config FILE",
        "confdir is set by the run itself: the run makes a CA of its own",
        "spendbrake_default_agent is set by the run itself: use --agent NAME",
        "spendbrake_default_session is set by the run itself: each run has a session of its own",
    ]
    assert own_option_conflicts(["spendbrake_block_all=true", "mode=regular"]) == []


def test_spendbrake_run_refuses_to_set_its_own_ledger_before_it_starts() -> None:
    args = ["run", "--set", "spendbrake_ledger=/tmp/elsewhere.db", "--", "false"]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2
    assert result.output.endswith(
        "Error: Invalid value for --set: spendbrake_ledger is set by the run itself: "
        "use --ledger PATH\n"
    )


def test_each_run_has_a_fresh_readable_session() -> None:
    assert new_session_id(T0, "3f9a2c") == "run-20261122T101500Z-3f9a2c"
    assert new_session_id(T0) != new_session_id(T0)


# -- the summary ------------------------------------------------------------------------------


def row(seconds: float, state: str, reason: str = "", model: str = "gpt-4o", **kw: int) -> CallRow:
    return CallRow(
        started_at=T0 + timedelta(seconds=seconds), model=model, state=state, reason=reason, **kw
    )


GPT_4O_CALL = {"input_tokens": 12, "output_tokens": 400, "held_nanos": 4_035_000}
MINI_CALL = {"input_tokens": 10, "output_tokens": 9, "held_nanos": 9_000, "actual_nanos": 7_000}
RUNAWAY_ROWS = [
    row(0.1, "settled", **GPT_4O_CALL, actual_nanos=4_030_000),
    row(0.2, "refused", "unknown_model", model="gpt-9"),
    row(0.3, "settled", model="gpt-4o-mini", **MINI_CALL),
    row(0.4, "settled", **GPT_4O_CALL, actual_nanos=4_030_000),
    row(0.5, "held", held_nanos=4_035_000),  # the proxy stopped before it was settled
    row(1.25, "refused", "session_budget_exceeded", held_nanos=4_035_000),
    row(1.5, "refused", "session_budget_exceeded", held_nanos=4_035_000),
]


def test_the_summary_counts_calls_spend_and_tokens_by_model_and_refusals_by_reason() -> None:
    summary = summarize(
        RUNAWAY_ROWS,
        agent="ci-bot",
        session="run-1",
        started_at=T0,
        seconds=2.0,
        budget_nanos=20_000_000,
    )

    assert summary.as_json() == {
        "agent": "ci-bot",
        "session": "run-1",
        "calls": 4,
        "refused": 3,
        # A call still held when the proxy stopped counts at its hold, the most it can cost.
        "spent_usd": "0.012102000",
        "budget_usd": "0.020000000",
        "stopped_by": "session_budget_exceeded",
        "by_model": {
            "gpt-4o": {
                "calls": 3,
                "input_tokens": 24,
                "output_tokens": 800,
                "spent_usd": "0.012095000",
            },
            "gpt-4o-mini": {
                "calls": 1,
                "input_tokens": 10,
                "output_tokens": 9,
                "spent_usd": "0.000007000",
            },
        },
        "seconds": 2.0,
    }
    assert summary.refused == {"session_budget_exceeded": 2, "unknown_model": 1}
    assert summary.refused_nanos == 2 * 4_035_000
    assert summary.seconds_to_wall == 1.25  # the first budget refusal, not the unknown model


def test_a_request_spendbrake_cannot_meter_is_not_a_wall() -> None:
    rows = [row(0.1, "refused", "unknown_model"), row(0.2, "refused", "unreadable_request")]
    summary = summarize(rows, agent="a", session="s", started_at=T0, seconds=1.0)
    assert summary.stopped_by is None
    assert summary.seconds_to_wall is None
    assert summary.as_json()["budget_usd"] is None


def test_every_budget_and_brake_refusal_stops_the_run() -> None:
    for code in (
        "daily_budget_exceeded",
        "monthly_budget_exceeded",
        "session_budget_exceeded",
        "session_tokens_exceeded",
        "rate_limited",  # even when the SDK waited it out: the run went over its rate
        "backoff",
        "agent_suspended",
        "loop_detected",
        "llm_calls_blocked",
    ):
        summary = summarize(
            [row(0, "refused", code)], agent="a", session="s", started_at=T0, seconds=1
        )
        assert summary.stopped_by == code


# -- the exit code ----------------------------------------------------------------------------


def test_a_budget_stop_exits_87_even_when_the_command_swallowed_it() -> None:
    stopped = RunSummary(agent="a", session="s", seconds=1, stopped_by="session_budget_exceeded")
    assert exit_code(0, stopped) == BUDGET_EXIT_CODE == 87
    assert exit_code(3, stopped) == 87


def test_otherwise_the_run_exits_as_its_command_did() -> None:
    clean = RunSummary(agent="a", session="s", seconds=1)
    assert exit_code(0, clean) == 0
    assert exit_code(3, clean) == 3
    assert exit_code(-2, clean) == 130  # ended by SIGINT, as a shell reports it
    assert exit_code(-15, clean) == 143


# -- what it prints ---------------------------------------------------------------------------


def printed(summary: RunSummary, code: int, returncode: int) -> str:
    console = Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_summary(summary, code, returncode))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_the_printed_summary_says_what_stopped_the_run_and_why_it_exits_87() -> None:
    summary = summarize(
        RUNAWAY_ROWS[:2] + RUNAWAY_ROWS[3:4] + RUNAWAY_ROWS[5:6],
        agent="ci-bot",
        session="run-1",
        started_at=T0,
        seconds=2.04,
        budget_nanos=10_000_000,
    )
    assert printed(summary, 87, 0) == (
        "spendbrake run: agent ci-bot, session run-1, 2.0 s\n"
        "  calls   2 forwarded, 2 refused (unknown_model: 1, session_budget_exceeded: 1)\n"
        "  spent   $0.00806 of the $0.01 budget\n"
        "  stopped by session_budget_exceeded, 1.25 s into the run\n"
        "  raise   --budget to let the run go further ('spendbrake limit set' does not change a "
        "run's limits)\n"
        "\n"
        "  model    calls   input tokens   output tokens      spent\n"
        " ──────────────────────────────────────────────────────────\n"
        "  gpt-4o       2             24             800   $0.00806\n"
        "\n"
        "spendbrake run: exit 87: session_budget_exceeded refused an LLM call (the command "
        "itself exited with 0)"
    )


def test_a_run_the_budget_did_not_stop_reports_the_commands_own_exit_code() -> None:
    summary = RunSummary(agent="run", session="run-2", seconds=0.5)
    assert printed(summary, 3, 3) == (
        "spendbrake run: agent run, session run-2, 0.5 s\n"
        "  calls   0 forwarded, 0 refused\n"
        "  spent   $0.00\n"
        "spendbrake run: exit 3, the command's own"
    )


def test_a_run_stopped_by_its_tokens_says_which_flag_raises_them() -> None:
    def raise_line(reason: str) -> list[str]:
        rows = [row(0.5, "refused", reason)]
        summary = summarize(rows, agent="a", session="s", started_at=T0, seconds=1.0)
        return [line for line in printed(summary, 87, 0).splitlines() if "raise" in line]

    assert raise_line("session_tokens_exceeded") == [
        "  raise   --session-tokens to let the run go further ('spendbrake limit set' does not "
        "change a run's limits)"
    ]
    assert raise_line("daily_budget_exceeded") == []
