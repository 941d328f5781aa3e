"""Runs mitmproxy with spendbrake's addons built in (``spendbrake up``).

Built in, not loaded as a script: a script that fails to import leaves mitmproxy running
without it (every call unmetered), and a script's configuration errors are only logged. Here
either the addons load and accept their configuration, or the proxy does not start.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mitmproxy import exceptions, hooks, options
from mitmproxy.tools import cmdline
from mitmproxy.tools import main as mitm_main
from mitmproxy.tools.dump import DumpMaster

from spendbrake.ledger_url import LedgerLocation
from spendbrake.mitm import spendbrake_addons
from spendbrake.mitm.mitmproxy_options import TCP_TIMEOUT_S

SPENDBRAKE_OPTION_PREFIX = "spendbrake_"


class SpendbrakeMaster(DumpMaster):
    """mitmproxy's mitmdump with spendbrake's addons, which start with ``settings`` (its
    ``spendbrake_*`` settings, ``NAME=VALUE``) in force.

    mitmproxy applies its command line only after it has built the master, and adding the
    addons here already configures them: without the settings, spendbrake would first load
    ``$SPENDBRAKE_CONFIG`` and open the default ledger (creating it), and fail on either,
    before the ``--config`` and ``--ledger`` it was given arrive.
    """

    def __init__(self, opts: options.Options, settings: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(opts, **kwargs)
        # Deferred: the options do not exist yet. Adding the addon that declares them sets
        # them, before that addon joins the chain.
        opts.set(*settings, defer=True)
        # Flows are saved (save_stream_file, HAR) after spendbrake has annotated them and taken
        # its live state out of their metadata; saved before, they could not be written at all.
        savers = [a for a in (self.addons.get("save"), self.addons.get("savehar")) if a]
        for saver in savers:
            self.addons.remove(saver)
        try:
            for addon in spendbrake_addons():
                self.addons.add(addon)
                # Configured with every option, as mitmproxy's script loader does for a script
                # it adds: set before the addon joined the chain, its own were not announced.
                self.addons.invoke_addon_sync(addon, hooks.ConfigureHook(opts.keys()))
            self.addons.add(*savers)
        except exceptions.OptionsError as e:
            # As mitmproxy ends on a bad option of its command line: one line, status 1.
            print(f"{sys.argv[0]}: {e}", file=sys.stderr)
            sys.exit(1)


def mitmdump_arguments(
    *,
    listen_host: str,
    listen_port: int,
    confdir: Path,
    config: Path | None,
    ledger: LedgerLocation,
    sets: Sequence[str] = (),
    scripts: Sequence[str] = (),
    upstream_proxy: str | None = None,
    more_listeners: Sequence[tuple[str, int]] = (),
    port_agents: Mapping[int, str] | None = None,
) -> list[str]:
    """mitmdump's command line. A user's ``--set`` replaces spendbrake's own value of that
    option: mitmproxy refuses two values for one option, so both cannot be passed.

    ``more_listeners`` opens more listen addresses beside the first (one mitmproxy mode each);
    ``port_agents`` names the agent of calls through a listener's port.

    ``upstream_proxy`` (``http://[user:pass@]host:port``) sends every connection on through
    that proxy (mitmproxy's upstream mode). Its credentials are left out of the command line,
    which any local user can read: see ``upstream_auth``.
    """
    own = {
        "confdir": str(confdir),
        "spendbrake_ledger": str(ledger),
        "flow_detail": "0",
        "tcp_timeout": str(TCP_TIMEOUT_S),
        # Dial a tunnel's host as soon as the client asks for it: in SSH, SMTP or IMAP the
        # server speaks first. The hosts spendbrake opens up are answered by its addon instead
        # (Interception.http_connect) and dialled only for a call that is forwarded: a refused
        # call opens no connection to the provider, and refusals work while it is away.
        "connection_strategy": "eager",
    }
    if config is not None:
        own["spendbrake_config"] = str(config)
    mode = upstream_mode(upstream_proxy) if upstream_proxy else "regular"
    modes = [mode] if upstream_proxy else []
    if more_listeners:
        listeners = [(listen_host, listen_port), *more_listeners]
        modes = [f"{mode}@{host}:{port}" for host, port in listeners]
    own_lists = {
        "mode": modes,
        "spendbrake_port_agents": [
            f"{port}={agent}" for port, agent in (port_agents or {}).items()
        ],
    }
    users = {setting.partition("=")[0].strip() for setting in sets}
    arguments = ["--listen-host", listen_host, "--listen-port", str(listen_port)]
    for name, value in own.items():
        if name not in users:
            arguments += ["--set", f"{name}={value}"]
    for name, values in own_lists.items():
        if name not in users:
            for value in values:
                arguments += ["--set", f"{name}={value}"]
    for setting in sets:
        arguments += ["--set", setting]
    for script in scripts:
        arguments += ["--scripts", script]
    return arguments


def _split_proxy_url(url: str) -> tuple[str, str, int, str | None]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValueError(
            f"the upstream proxy must be http://HOST:PORT or https://HOST:PORT, not {url!r}"
        )
    credentials = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    default_port = 443 if parts.scheme == "https" else 80  # as Python's clients assume
    return parts.scheme, parts.hostname, port or default_port, credentials


def upstream_mode(url: str) -> str:
    """mitmproxy's ``mode`` for an upstream proxy URL, without its credentials (a mode spec
    cannot carry them: mitmproxy reads ``@`` as the start of a listen address)."""
    scheme, host, port, _ = _split_proxy_url(url)
    return f"upstream:{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def upstream_auth(url: str) -> str | None:
    """The ``user:password`` of an upstream proxy URL, for mitmproxy's ``upstream_auth``."""
    return _split_proxy_url(url)[3]


def split_settings(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """``arguments`` (as ``mitmdump_arguments`` makes them) without their ``--set
    spendbrake_*=...``, and those settings' values: spendbrake's addons take them when they
    are added, so mitmproxy need not set them again afterwards (which would open the ledger a
    second time)."""
    rest: list[str] = []
    settings: list[str] = []
    values = iter(arguments)
    for argument in values:
        if argument == "--set":
            value = next(values, None)
            if value is not None and value.startswith(SPENDBRAKE_OPTION_PREFIX):
                settings.append(value)
                continue
            rest.append(argument)
            if value is not None:
                rest.append(value)
        else:
            rest.append(argument)
    return rest, settings


def run_proxy(arguments: Sequence[str]) -> None:
    """Run until SIGINT/SIGTERM; exits the process with status 1 on a bad option."""
    rest, settings = split_settings(arguments)
    master = functools.partial(SpendbrakeMaster, settings=settings)
    # run() only calls master_cls(opts); its type asks for a class.
    mitm_main.run(master, cmdline.mitmdump, rest)  # type: ignore[arg-type]


if __name__ == "__main__":  # `spendbrake run` starts its proxy so, with arguments built above
    run_proxy(sys.argv[1:])
