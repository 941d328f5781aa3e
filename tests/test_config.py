"""The TOML configuration, its defaults, and the errors a user sees for a bad file."""

from decimal import Decimal
from pathlib import Path

import pytest

from spendbrake.brakes import Brakes
from spendbrake.config import (
    DEFAULT_DAILY_NANOS,
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    resolve_ledger_path,
)
from spendbrake.ledger import Limits
from spendbrake.quota import Quota


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spendbrake.toml"
    path.write_text(text)
    return path


def test_without_a_file_every_agent_gets_five_dollars_a_day_in_utc() -> None:
    config = load_config(None)
    assert config.timezone.key == "UTC"
    assert config.daily_limit("anyone") == DEFAULT_DAILY_NANOS == 5_000_000_000


def test_agent_limits_override_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'timezone = "Europe/Berlin"\n[defaults]\ndaily_usd = 1.25\n'
            "[agents.research-bot]\ndaily_usd = 0.05\n[agents.other]\n",
        )
    )
    assert config.timezone.key == "Europe/Berlin"
    assert config.daily_limit("research-bot") == 50_000_000
    assert config.daily_limit("other") == 1_250_000_000
    assert config.daily_limit("unlisted") == 1_250_000_000


def test_unknown_keys_are_errors_naming_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[agents.bot]\ndaily_usdd = 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: unknown key agents.bot.daily_usdd"


def test_every_window_is_configured_per_agent_with_defaults_and_shared_groups(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [defaults]
            daily_usd = 5.00
            session_tokens = 50000

            [agents.research-bot]
            daily_usd = 0.05
            monthly_usd = 20.00
            session_usd = 0.50
            group = "research"

            [agents.scraper]
            session_tokens = 1000

            [groups.research]
            daily_usd = 50.00
            monthly_usd = 400
            """,
        )
    )
    assert config.limits("research-bot") == Limits(
        monthly_nanos=20_000_000_000,
        session_nanos=500_000_000,
        session_tokens=50_000,  # from [defaults]
        group="research",
        group_daily_nanos=50_000_000_000,
        group_monthly_nanos=400_000_000_000,
    )
    assert config.limits("scraper") == Limits(session_tokens=1_000)
    assert config.limits("anyone") == Limits(session_tokens=50_000)
    assert config.daily_limit("research-bot") == 50_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[agents.bot]\ngroup = "ops"\n',
            r"agents\.bot\.group is 'ops', but there is no \[groups\.ops\]",
        ),
        ("[agents.bot]\ngroup = 3\n", r"agents\.bot\.group must name a \[groups\.NAME\] table"),
        ("[agents.bot]\nsession_tokens = -5\n", "must be a whole number of tokens"),
        ("[agents.bot]\nsession_tokens = 1.5\n", "must be a whole number of tokens"),
        ("[agents.bot]\nmonthly_usd = -1\n", "non-negative dollar amount"),
        ("[groups.ops]\nweekly_usd = 1\n", r"unknown key groups\.ops\.weekly_usd"),
        ('[groups."a b"]\ndaily_usd = 1\n', "a group name is letters"),
        ("groups = 1\n", r"\[groups\] must be a table"),
    ],
)
def test_bad_windows_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('timezone = "Mars/Olympus"\n', "is not an IANA time zone"),
        ("[defaults]\ndaily_usd = -1\n", "non-negative dollar amount"),
        ('[defaults]\ndaily_usd = "lots"\n', "must be a dollar amount"),
        ("[defaults]\ndaily_usd = true\n", "must be a dollar amount"),
        ("ledger = 5\n", "ledger must be a path string"),
        ("[agents]\nbot = 1\n", r"\[agents\.bot\] must be a table"),
        ("daily_usd = [\n", "not valid TOML"),
    ],
)
def test_bad_values_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_ledger_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, 'ledger = "data/ledger.db"\n'))
    monkeypatch.delenv("SPENDBRAKE_LEDGER", raising=False)
    assert resolve_ledger_path(None, config) == tmp_path / "data" / "ledger.db"  # beside the file
    monkeypatch.setenv("SPENDBRAKE_LEDGER", "/from/env.db")
    assert resolve_ledger_path(None, config) == Path("/from/env.db")
    assert resolve_ledger_path("/from/flag.db", config) == Path("/from/flag.db")


def test_default_ledger_lives_in_the_users_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPENDBRAKE_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert resolve_ledger_path(None, load_config(None)) == Path("/data/spendbrake/ledger.db")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPENDBRAKE_CONFIG", raising=False)
    assert resolve_config_path(None) is None
    monkeypatch.setenv("SPENDBRAKE_CONFIG", "/env.toml")
    assert resolve_config_path(None) == Path("/env.toml")
    assert resolve_config_path("/flag.toml") == Path("/flag.toml")


def test_operator_prices_override_and_a_fallback_prices_unknown_models(tmp_path: Path) -> None:
    from decimal import Decimal

    config = load_config(
        write(
            tmp_path,
            '[prices."my-finetune"]\ninput_usd_per_mtok = 3.00\noutput_usd_per_mtok = "12"\n'
            "cached_input_usd_per_mtok = 1.5\nmax_output_tokens = 4096\n"
            '[prices."*"]\ninput_usd_per_mtok = 15\noutput_usd_per_mtok = 75\n',
        )
    )
    own = config.prices["my-finetune"]
    assert (own.input_per_mtok, own.output_per_mtok) == (Decimal(3), Decimal(12))
    assert (own.cached_input_per_mtok, own.cache_write_per_mtok) == (Decimal("1.5"), None)
    assert own.max_output_tokens == 4096
    assert config.prices["*"].output_per_mtok == Decimal(75)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[prices."m"]\ninput_usd_per_mtok = 1\n',
            "needs input_usd_per_mtok and output_usd_per_mtok",
        ),
        ('[prices."m"]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = -2\n', "non-negative"),
        (
            '[prices."m"]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 2\n'
            "max_output_tokens = 0\n",
            "positive integer",
        ),
        (
            '[prices."m"]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 2\ninput_usd = 1\n',
            r'unknown key prices\."m"\.input_usd',
        ),
    ],
)
def test_bad_prices_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_routes_the_operator_vouches_for_pass_unmetered(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, 'allow_unmetered_routes = ["POST /v1/files", "POST /v1/uploads/*"]\n')
    )
    assert config.allows_unmetered("POST", "/v1/files?purpose=batch")
    assert config.allows_unmetered("post", "/v1/uploads/upload_1/parts")
    assert not config.allows_unmetered("POST", "/v1/files/extra")
    assert not config.allows_unmetered("POST", "/v1/images/generations")
    assert not load_config(None).allows_unmetered("POST", "/v1/files")


@pytest.mark.parametrize("value", ['"POST /v1/files"', '["/v1/files"]', '["FETCH /x"]'])
def test_badly_written_routes_are_an_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="allow_unmetered_routes must be a list like"):
        load_config(write(tmp_path, f"allow_unmetered_routes = {value}\n"))


def test_a_price_can_name_the_published_model_it_is_priced_as(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[prices."my-deployment"]\nprice_as = "gpt-4o"\n'))
    assert config.prices["my-deployment"].price_as == "gpt-4o"
    with pytest.raises(ConfigError, match="price_as must be a model name"):
        load_config(write(tmp_path, '[prices."d"]\nprice_as = 4\n'))


def test_a_price_can_say_whether_its_model_reasons_unseen(tmp_path: Path) -> None:
    own = '[prices."my-model"]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 2\n'
    assert load_config(write(tmp_path, own)).prices["my-model"].reasons_unseen is None
    config = load_config(write(tmp_path, own + "reasons_unseen = false\n"))
    assert config.prices["my-model"].reasons_unseen is False
    with pytest.raises(ConfigError, match="reasons_unseen must be true or false"):
        load_config(write(tmp_path, own + 'reasons_unseen = "no"\n'))


def test_server_tools_the_operator_allows_are_known_tools(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'allow_server_tools = ["web_search", "mcp"]\n'))
    assert config.allow_server_tools == {"web_search", "mcp"}
    with pytest.raises(ConfigError, match="allow_server_tools names 'web_serch'; the server tools"):
        load_config(write(tmp_path, 'allow_server_tools = ["web_serch"]\n'))
    with pytest.raises(ConfigError, match="must be a list"):
        load_config(write(tmp_path, 'allow_server_tools = "web_search"\n'))


def test_loop_and_backoff_brakes_are_on_by_default_and_the_others_off(tmp_path: Path) -> None:
    assert Config().brakes("anyone") == Brakes(
        loop_repeats=8, loop_window_s=60, backoff_steps_s=(1, 5)
    )
    config = load_config(
        write(
            tmp_path,
            """
            [defaults]
            calls_per_minute = 60
            backoff_steps_s = [2]

            [agents.research-bot]
            loop_repeats = 0          # off
            backoff_steps_s = []      # off
            tokens_per_minute = 200000
            max_concurrent = 8
            burn_usd_per_min = 1.00
            loop_window_s = 30
            """,
        )
    )
    assert config.brakes("research-bot") == Brakes(
        loop_repeats=None,
        loop_window_s=30,
        backoff_steps_s=(),
        calls_per_minute=60,
        tokens_per_minute=200_000,
        max_concurrent=8,
        burn_nanos_per_min=1_000_000_000,
    )
    assert config.brakes("other").backoff_steps_s == (2,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nloop_repeats = 1\n", "would refuse every request"),
        ("[defaults]\ncalls_per_minute = -1\n", r"must be a whole number >= 0 \(0 turns it off\)"),
        ("[defaults]\nloop_window_s = 0\n", "must be a whole number >= 1"),
        ("[defaults]\nbackoff_steps_s = [1, 600]\n", "a list of waits in seconds"),
        ("[defaults]\nmax_concurrent = true\n", "must be a whole number"),
    ],
)
def test_bad_brakes_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_monthly_token_bucket_with_downgrades_and_capped_output(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [defaults]
            downgrade = { "gpt-4o" = "gpt-4o-mini" }

            [agents.research-bot]
            monthly_tokens = 5000000
            downgrade_below = 0.2
            cap_output = true

            [agents.keeper]
            monthly_tokens = 1000
            when_quota_empty = "downgrade"
            cap_output = true
            cap_output_min_tokens = 64
            """,
        )
    )
    assert config.quota("research-bot") == Quota(
        monthly_tokens=5_000_000,
        downgrade_below=Decimal("0.2"),
        downgrade={"gpt-4o": "gpt-4o-mini"},
    )
    assert config.limits("research-bot").monthly_tokens == 5_000_000  # an empty bucket refuses
    assert config.limits("keeper").monthly_tokens is None  # it keeps the cheaper model instead
    assert config.quota("keeper").keep_downgraded_when_empty is True
    assert (config.cap_output_minimum("research-bot"), config.cap_output_minimum("keeper")) == (
        256,
        64,
    )
    assert config.cap_output_minimum("anyone") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\ndowngrade_below = 1.5\n", "a share like 0.2"),
        ('[defaults]\ndowngrade = { "gpt-4o" = 3 }\n', "must map models to cheaper ones"),
        ('[defaults]\nwhen_quota_empty = "panic"\n', '"refuse" or "downgrade"'),
        ("[defaults]\ncap_output_min_tokens = 10\n", "needs cap_output = true"),
        ('[defaults]\ncap_output = "yes"\n', "is true or false"),
        ("[defaults]\nmonthly_tokens = -1\n", "whole number of tokens"),
    ],
)
def test_bad_quotas_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_throttle_is_a_brake_setting_per_agent(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[agents.patient]\nthrottle = true\n"))
    assert config.brakes("patient").throttle is True
    assert config.brakes("anyone").throttle is False
    with pytest.raises(ConfigError, match=r"agents\.x\.throttle is true or false"):
        load_config(write(tmp_path, '[agents.x]\nthrottle = "yes"\n'))


def test_a_groups_bucket_comes_before_defaults_and_an_agent_can_turn_capping_off(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [defaults]
            monthly_tokens = 1000000
            cap_output = true

            [agents.member]
            group = "team"
            cap_output = false

            [agents.own]
            group = "team"
            monthly_tokens = 10

            [groups.team]
            monthly_tokens = 50
            """,
        )
    )
    assert (config.quota("member").monthly_tokens, config.quota("member").group) == (50, "team")
    assert (config.quota("own").monthly_tokens, config.quota("own").group) == (10, "")
    assert config.quota("loner").monthly_tokens == 1_000_000
    assert config.cap_output_minimum("member") is None  # its own false beats [defaults]
    assert config.cap_output_minimum("loner") == 256
