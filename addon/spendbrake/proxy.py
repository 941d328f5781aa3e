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
    """mitmdump's command line. A user's ``--set`` replaces spendbrake's own value of that
    option: mitmproxy refuses two values for one option, so both cannot be passed."""
    own = {
        "confdir": str(confdir),
        "spendbrake_ledger": str(ledger),
        "flow_detail": "0",
        "tcp_timeout": str(TCP_TIMEOUT_S),
        # Dial the provider only for a request that is forwarded: a refused call then opens no
        # connection to the provider at all, and refusals work while the provider is away.
        "connection_strategy": "lazy",
    }
    if config is not None:
        own["spendbrake_config"] = str(config)
    users = {setting.partition("=")[0].strip() for setting in sets}
    arguments = ["--listen-host", listen_host, "--listen-port", str(listen_port)]
    for name, value in own.items():
        if name not in users:
            arguments += ["--set", f"{name}={value}"]
    for setting in sets:
        arguments += ["--set", setting]
    for script in scripts:
        arguments += ["--scripts", script]
    return arguments


def run_proxy(arguments: Sequence[str]) -> None:
    """Run until SIGINT/SIGTERM; exits the process with status 1 on a bad option."""
    mitm_main.run(SpendbrakeMaster, cmdline.mitmdump, list(arguments))
