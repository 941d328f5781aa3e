"""``spendbrake up`` starts with the configuration and ledger it was given, from the first moment.

mitmproxy applies a command line's ``--set`` only after it has built its master, and building
spendbrake's master already configures spendbrake. These tests start the proxy where the
defaults would fail or leave traces (``$SPENDBRAKE_CONFIG`` names a missing file, the default
ledger's directory cannot be made, or is a fresh home of its own) and check that the defaults are
never touched: DESIGN.md, ``--config`` wins over ``$SPENDBRAKE_CONFIG``.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from e2e_support import (
    SPENDBRAKE,
    TEST_ID_HEADER,
    Certs,
    Proxy,
    clean_environment,
    ledger_calls,
    raw_client,
    requests_of,
    running_proxy,
    settled_calls,
    upstream_settings,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

CHAT_URL = "https://api.openai.com/v1/chat/completions"
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

# Only this file knows these agents: a refused call of tiny-bot shows the file is in force.
CONFIG = """
[agents.startup-bot]
daily_usd = 1.00

[agents.tiny-bot]
daily_usd = 0.000001
"""

_ENFORCING = re.compile(r"spendbrake: enforcing with ledger (\S+)")


def _command(tmp_path: Path, fake: FakeProvider, pki: TestPKI, ledger: Path) -> list[str | Path]:
    config = tmp_path / "spendbrake.toml"
    config.write_text(CONFIG)
    command: list[str | Path] = [SPENDBRAKE, "up", "--listen", "127.0.0.1:0"]
    command += ["--config", config, "--ledger", ledger]
    for setting in upstream_settings(fake, pki):
        command += ["--set", setting]
    return command


def _up(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    ledger: Path,
    env: dict[str, str],
) -> AbstractContextManager[Proxy]:
    """``spendbrake up`` with this file's config and ``ledger``, in ``env``."""
    return running_proxy(
        _command(tmp_path, fake, pki, ledger),
        log=tmp_path / "proxy.log",
        ledger=ledger,
        config=tmp_path / "spendbrake.toml",
        certs=certs,
        env=env,
    )


def _environment(certs: Certs, cache_dir: Path, **extra: str) -> dict[str, str]:
    return clean_environment(
        SPENDBRAKE_CERTS=str(certs.directory), XDG_CACHE_HOME=str(cache_dir), **extra
    )


def _chat(proxy: Proxy, agent: str, test_id: str) -> int:
    with raw_client(proxy, agent) as client:
        response = client.post(CHAT_URL, json=CHAT_BODY, headers={TEST_ID_HEADER: test_id})
    return response.status_code


def test_the_given_config_and_ledger_are_the_only_ones_ever_opened(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    test_id: str,
) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    data.mkdir()
    ledger = tmp_path / "given" / "ledger.db"
    env = _environment(
        certs,
        cache_dir,
        SPENDBRAKE_CONFIG=str(tmp_path / "missing.toml"),  # --config must win over it
        HOME=str(home),
        XDG_DATA_HOME=str(data),
    )
    with _up(tmp_path, fake, pki, certs, ledger, env) as proxy:
        assert _chat(proxy, "startup-bot", test_id) == 200
        assert _chat(proxy, "tiny-bot", test_id) == 402  # refused by the given file's budget
        (call,) = settled_calls(ledger, "startup-bot", 1)
        assert call["state"] == "settled"
        assert (call["outcome"], call["actual_nanos"] > 0) == ("ok", True)
        assert [row["state"] for row in ledger_calls(ledger, "tiny-bot")] == ["refused"]
        assert len(requests_of(fake, test_id)) == 1
        # One ledger, opened once: no default one first, however briefly.
        assert _ENFORCING.findall(proxy.output()) == [str(ledger)]
    assert list(data.iterdir()) == []
    assert list(home.iterdir()) == []


def test_a_default_ledger_directory_that_cannot_be_made_does_not_matter(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    test_id: str,
) -> None:
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("a regular file where XDG_DATA_HOME should be a directory\n")
    ledger = tmp_path / "ledger.db"
    env = _environment(certs, cache_dir, XDG_DATA_HOME=str(not_a_directory))
    with _up(tmp_path, fake, pki, certs, ledger, env) as proxy:
        assert _chat(proxy, "startup-bot", test_id) == 200
        settled_calls(ledger, "startup-bot", 1)
        assert _ENFORCING.findall(proxy.output()) == [str(ledger)]


def test_a_ledger_set_by_the_user_that_cannot_be_opened_stops_the_proxy_in_one_line(
    tmp_path: Path, fake: FakeProvider, pki: TestPKI, certs: Certs, cache_dir: Path
) -> None:
    """``--set spendbrake_ledger`` reaches mitmproxy past ``spendbrake up``'s own checks."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    command = _command(tmp_path, fake, pki, tmp_path / "ledger.db")
    command += ["--set", f"spendbrake_ledger={blocker / 'ledger.db'}"]
    result = subprocess.run(
        [str(part) for part in command],
        env=_environment(certs, cache_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"{SPENDBRAKE}: cannot open the ledger {blocker / 'ledger.db'}: ")
    assert "HTTP(S) proxy listening" not in result.stdout
