"""A proxy asked to stream large request bodies on unread does not start: such a call would reach
the provider before spendbrake held for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e_support import MITMDUMP, SPENDBRAKE, Certs, clean_environment, spendbrake_cli

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 60


def start(
    command: list[str | Path], certs: Certs, cache_dir: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        env=clean_environment(XDG_CACHE_HOME=str(cache_dir), SPENDBRAKE_CERTS=str(certs.directory)),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,  # a proxy that started would run until killed
        check=False,
    )


def test_spendbrake_up_refuses_stream_large_bodies(
    tmp_path: Path, certs: Certs, cache_dir: Path
) -> None:
    command: list[str | Path] = [SPENDBRAKE, "up", "--listen", "127.0.0.1:0"]
    command += ["--ledger", tmp_path / "ledger.db", "--set", "stream_large_bodies=1k"]
    result = start(command, certs, cache_dir)
    assert result.returncode == 1
    assert "spendbrake cannot meter calls with stream_large_bodies set" in result.stderr


def test_mitmdump_with_the_addon_refuses_stream_large_bodies(
    tmp_path: Path, certs: Certs, cache_dir: Path
) -> None:
    addon = spendbrake_cli("addon-path").stdout.strip()
    command: list[str | Path] = [MITMDUMP, "-s", addon, "--listen-host", "127.0.0.1"]
    command += ["--listen-port", "0", "--set", f"confdir={certs.directory}"]
    command += ["--set", f"spendbrake_ledger={tmp_path / 'ledger.db'}"]
    command += ["--set", "stream_large_bodies=1k"]
    result = start(command, certs, cache_dir)
    assert result.returncode != 0
    assert "spendbrake cannot meter calls with stream_large_bodies set" in result.stdout
