"""Runs mitmproxy with spendbrake's addons built in (``spendbrake up``).

Built in, not loaded as a script: a script that fails to import leaves mitmproxy running
without it (every call unmetered), and a script's configuration errors are only logged. Here
either the addons load and accept their configuration, or the proxy does not start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import options
from mitmproxy.tools import cmdline
from mitmproxy.tools import main as mitm_main
from mitmproxy.tools.dump import DumpMaster

from spendbrake.mitm import spendbrake_addons

# Reasoning models can think for many minutes without sending a byte; mitmproxy's default of
# 600 s would cut those calls (and bill them) silently.
TCP_TIMEOUT_S = 3600


class SpendbrakeMaster(DumpMaster):
    def __init__(self, opts: options.Options, **kwargs: Any) -> None:
        super().__init__(opts, **kwargs)
        self.addons.add(*spendbrake_addons())


def mitmdump_arguments(
    *,
    listen_host: str,
    listen_port: int,
    confdir: Path,
    config: Path | None,
    ledger: Path,
    sets: Sequence[str] = (),
    scripts: Sequence[str] = (),
) -> list[str]:
    """mitmdump's command line; the user's ``--set`` come last so they win."""
    arguments = [
        "--listen-host",
        listen_host,
        "--listen-port",
        str(listen_port),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"spendbrake_ledger={ledger}",
        "--set",
        "flow_detail=0",
        "--set",
        f"tcp_timeout={TCP_TIMEOUT_S}",
        # Dial the provider only for a request that is forwarded: a refused call then opens no
        # connection to the provider at all, and refusals work while the provider is away.
        "--set",
        "connection_strategy=lazy",
    ]
    if config is not None:
        arguments += ["--set", f"spendbrake_config={config}"]
    for setting in sets:
        arguments += ["--set", setting]
    for script in scripts:
        arguments += ["--scripts", script]
    return arguments


def run_proxy(arguments: Sequence[str]) -> None:
    """Run until SIGINT/SIGTERM; exits the process with status 1 on a bad option."""
    mitm_main.run(SpendbrakeMaster, cmdline.mitmdump, list(arguments))
