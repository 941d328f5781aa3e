"""The mitmproxy command line that `spendbrake up` runs."""

import itertools
from pathlib import Path

import pytest

from spendbrake.proxy import mitmdump_arguments, upstream_auth, upstream_mode


def settings(arguments: list[str]) -> list[str]:
    return [value for flag, value in itertools.pairwise(arguments) if flag == "--set"]


def test_tunnels_are_dialled_at_once_and_long_calls_are_not_cut() -> None:
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=8080,
        confdir=Path("/c"),
        config=None,
        ledger=Path("/l.db"),
    )
    assert "connection_strategy=eager" in settings(arguments)
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
        sets=["connection_strategy=lazy"],
        scripts=["mine.py"],
    )
    assert settings(arguments)[-1] == "connection_strategy=lazy"
    assert "connection_strategy=eager" not in settings(arguments)  # mitmproxy refuses two values
    assert "spendbrake_config=/s.toml" in settings(arguments)
    assert arguments[-2:] == ["--scripts", "mine.py"]
    assert arguments[:4] == ["--listen-host", "::1", "--listen-port", "0"]


def test_an_upstream_proxy_becomes_mitmproxys_upstream_mode_without_its_password() -> None:
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=0,
        confdir=Path("/c"),
        config=None,
        ledger=Path("/l.db"),
        upstream_proxy="http://alice:s%40cret@proxy.corp.example:3128",
    )
    assert "mode=upstream:http://proxy.corp.example:3128" in settings(arguments)
    assert not any("s%40cret" in a or "s@cret" in a for a in arguments)  # argv is public
    assert upstream_auth("http://alice:s%40cret@proxy.corp.example:3128") == "alice:s@cret"
    assert upstream_auth("http://proxy.corp.example:3128") is None


def test_an_upstream_proxy_url_is_normalised_as_clients_read_it() -> None:
    assert upstream_mode("proxy.corp.example:3128") == "upstream:http://proxy.corp.example:3128"
    assert upstream_mode("https://proxy.corp.example/") == "upstream:https://proxy.corp.example:443"
    assert upstream_mode("http://[fd00::1]:8080") == "upstream:http://[fd00::1]:8080"
    for bad in ("socks5://proxy:1080", "http://", "http://proxy:port"):
        with pytest.raises(ValueError, match="the upstream proxy must be http://HOST:PORT"):
            upstream_mode(bad)


def test_a_users_mode_setting_wins_over_the_upstream_proxy() -> None:
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=0,
        confdir=Path("/c"),
        config=None,
        ledger=Path("/l.db"),
        sets=["mode=regular"],
        upstream_proxy="http://proxy.corp.example:3128",
    )
    assert [s for s in settings(arguments) if s.startswith("mode=")] == ["mode=regular"]
