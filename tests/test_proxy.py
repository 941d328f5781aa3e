"""The mitmproxy command line that `spendbrake up` runs."""

import itertools
from pathlib import Path

from spendbrake.proxy import mitmdump_arguments


def settings(arguments: list[str]) -> list[str]:
    return [value for flag, value in itertools.pairwise(arguments) if flag == "--set"]


def test_refused_calls_never_dial_the_provider_and_long_calls_are_not_cut() -> None:
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=8080,
        confdir=Path("/c"),
        config=None,
        ledger=Path("/l.db"),
    )
    assert "connection_strategy=lazy" in settings(arguments)
    assert "tcp_timeout=3600" in settings(arguments)
    assert "spendbrake_ledger=/l.db" in settings(arguments)
    assert not any(s.startswith("spendbrake_config=") for s in settings(arguments))


def test_a_users_setting_replaces_spendbrakes_own_and_scripts_load_after_it() -> None:
    arguments = mitmdump_arguments(
        listen_host="::1",
        listen_port=0,
        confdir=Path("/c"),
        config=Path("/s.toml"),
        ledger=Path("/l.db"),
        sets=["connection_strategy=eager"],
        scripts=["mine.py"],
    )
    assert settings(arguments)[-1] == "connection_strategy=eager"
    assert "connection_strategy=lazy" not in settings(arguments)  # mitmproxy refuses two values
    assert "spendbrake_config=/s.toml" in settings(arguments)
    assert arguments[-2:] == ["--scripts", "mine.py"]
    assert arguments[:4] == ["--listen-host", "::1", "--listen-port", "0"]
