"""The ``spendbrake`` command: translates between the shell and the modules, nothing more."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from spendbrake import certs
from spendbrake.access import is_loopback_host
from spendbrake.attribution import InvalidIdentity, identify, valid_agent_name
from spendbrake.config import (
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    resolve_ledger_path,
)
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_url import LedgerLocation, describe, open_ledger
from spendbrake.money import MoneyError, parse_usd
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

DEFAULT_LISTEN = "127.0.0.1:8080"


def _config_and_ledger_options[F: Callable[..., Any]](command: F) -> F:
    command = click.option(
        "--ledger",
        "ledger_path",
        metavar="PATH|URL",
        help="Ledger: a SQLite file (or sqlite:///PATH), or a PostgreSQL database shared by a "
        "fleet of proxies (postgresql://HOST/DB). Default: $SPENDBRAKE_LEDGER, the config's "
        "'ledger', ~/.local/share/spendbrake/ledger.db.",
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Configuration file (TOML). Default: $SPENDBRAKE_CONFIG, else embedded defaults.",
    )(command)


def _load_config(config_path: Path | None) -> Config:
    try:
        return load_config(resolve_config_path(config_path))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _open_ledger(
    ledger_path: str | os.PathLike[str] | None, config: Config
) -> SQLiteLedger | PostgresLedger:
    """The ledger a command writes to; a SQLite file is created if missing, and says so (a
    mistyped path would otherwise take the command's change where no proxy reads it)."""
    return _open_at(_ledger_location(ledger_path, config))


def _ledger_to_change(
    ledger_path: str | os.PathLike[str] | None, config: Config, *, what: str
) -> SQLiteLedger | PostgresLedger:
    """The ledger a command changes what is already in (a suspension, a spent window, a
    secret). A SQLite file that does not exist is an error, not created: there is nothing in it
    to change, and the proxy reads another ledger (a mistyped --ledger, most likely)."""
    location = _ledger_location(ledger_path, config)
    if _no_ledger_file(location):
        raise click.ClickException(
            f"no ledger at {location}, so there is no {what} there; check --ledger "
            "(or SPENDBRAKE_LEDGER, or the config's ledger): it must be the proxy's"
        )
    return _open_at(location)


def _ledger_location(ledger_path: str | os.PathLike[str] | None, config: Config) -> LedgerLocation:
    try:
        return resolve_ledger_path(ledger_path, config)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _no_ledger_file(location: LedgerLocation) -> bool:
    """A SQLite ledger whose file does not exist (yet); a PostgreSQL one is never missing."""
    return isinstance(location, Path) and not location.exists()


def _open_at(
    location: LedgerLocation, *, announce_creation: bool = True
) -> SQLiteLedger | PostgresLedger:
    created = announce_creation and _no_ledger_file(location)
    try:
        ledger = open_ledger(location)
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None
    if created:
        click.echo(f"spendbrake: created a new ledger at {location}", err=True)
    return ledger


@contextmanager
def _ledger_to_read(
    ledger_path: str | os.PathLike[str] | None, config: Config
) -> Iterator[SQLiteLedger | PostgresLedger]:
    """The ledger a command only reads. A SQLite file that does not exist is not created: the
    command reads an empty ledger instead (the configured agents, nothing spent) and says so."""
    location = _ledger_location(ledger_path, config)
    if _no_ledger_file(location):
        click.echo(
            f"spendbrake: no ledger at {location} yet, so nothing is recorded (spendbrake up "
            "creates it)",
            err=True,
        )
        with (
            tempfile.TemporaryDirectory(prefix="spendbrake-empty-") as empty,
            closing(SQLiteLedger(Path(empty) / "ledger.db")) as empty_ledger,
        ):
            yield empty_ledger
        return
    with closing(_open_at(location)) as ledger:
        yield ledger


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT (e.g. {DEFAULT_LISTEN}), not {value!r}")
    return host.strip("[]"), int(port)


def _proxy_url(host: str, port: int, agent: str | None) -> str:
    netloc_host = f"[{host}]" if ":" in host else host
    return f"http://{agent + '@' if agent else ''}{netloc_host}:{port}"


def _export_lines(environment: dict[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spendbrake")
def main() -> None:
    """spendbrake: holds AI agents to dollar budgets before their calls reach the provider."""


def _proxy_options[F: Callable[..., Any]](command: F) -> F:
    command = click.option(
        "--script",
        "scripts",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Extra mitmproxy addon script, loaded after spendbrake's. Repeatable.",
    )(command)
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="NAME=VALUE",
        help="Any mitmproxy option, e.g. --set upstream_cert=false. Repeatable.",
    )(command)


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    # A pipe or a file (a CI log): never wrap a line or truncate a dollar figure.
    return console if console.is_terminal else Console(stderr=stderr, width=200)


def _path_from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _usd_option(value: str | None, option: str) -> int | None:
    try:
        return None if value is None else parse_usd(value, what=option)
    except MoneyError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def _parse_listeners(values: tuple[str, ...]) -> list[tuple[str, int, str | None]]:
    """``HOST:PORT`` or ``HOST:PORT=AGENT`` each; the default address when none is given."""
    listeners: list[tuple[str, int, str | None]] = []
    for value in values or (DEFAULT_LISTEN,):
        address, sep, agent = value.partition("=")
        host, port = _parse_listen(address)
        if sep and not valid_agent_name(agent):
            raise click.BadParameter(
                f"{agent!r} is not an agent name (1-64 letters, digits, '.', '_' or '-')",
                param_hint="--listen",
            )
        if sep and port == 0:
            raise click.BadParameter(
                f"{value!r}: an agent's listener needs a fixed port", param_hint="--listen"
            )
        listeners.append((host, port, agent if sep else None))
    return listeners


@main.command()
@_config_and_ledger_options
@click.option(
    "--listen",
    "listens",
    multiple=True,
    metavar="HOST:PORT[=AGENT]",
    help=f"Address the proxy listens on (default {DEFAULT_LISTEN}). Repeatable; with =AGENT, "
    "calls through that listener belong to AGENT, for clients that cannot name one.",
)
@_proxy_options
def up(
    config_path: Path | None,
    ledger_path: str | None,
    listens: tuple[str, ...],
    sets: tuple[str, ...],
    scripts: tuple[str, ...],
) -> None:
    """Start the proxy.

    \b
    Examples:
        spendbrake up --config spendbrake.toml
        export HTTPS_PROXY=http://research-bot@127.0.0.1:8080   # plus the lines it prints
        spendbrake up --listen 127.0.0.1:8080 --listen 127.0.0.1:8081=research-bot
    """
    from spendbrake.proxy import mitmdump_arguments, run_proxy

    listeners = _parse_listeners(listens)
    (host, port, _), more = listeners[0], listeners[1:]
    config = _load_config(config_path)
    exposed = [h for h, _, _ in listeners if not is_loopback_host(h)]
    if exposed and not config.access.open_to_the_network:
        raise click.ClickException(
            f"listening on {exposed[0] or 'every interface'} would let anyone on the network "
            "spend through the proxy. Set [access] strict = true (every call needs its agent's "
            "secret: 'spendbrake agent add') or [access] allow_clients = [...] in the "
            "configuration, or listen on 127.0.0.1."
        )
    # Fail here, readably, not inside mitmproxy. (No "created" notice: the proxy's own first
    # line names the ledger it enforces with.)
    _open_at(_ledger_location(ledger_path, config), announce_creation=False).close()
    ledger_file = resolve_ledger_path(ledger_path, config)
    confdir = certs.certs_dir()
    bundle = certs.write_bundle(confdir)
    click.echo(f"spendbrake: proxy on {host}:{port}, ledger {describe(ledger_file)}")
    for other_host, other_port, agent in more:
        owner = f": calls through it belong to {agent}" if agent else ""
        click.echo(f"spendbrake: also on {other_host}:{other_port}{owner}")
    click.echo("Route a shell through it (replace AGENT with the agent's name):")
    for line in _export_lines(certs.client_environment(_proxy_url(host, port, "AGENT"), bundle)):
        click.echo(f"  {line}")
    sys.stdout.flush()
    run_proxy(
        mitmdump_arguments(
            listen_host=host,
            listen_port=port,
            confdir=confdir,
            config=resolve_config_path(config_path),
            ledger=ledger_file,
            sets=sets,
            scripts=scripts,
            more_listeners=[(h, p) for h, p, _ in more],
            port_agents={p: agent for _, p, agent in listeners if agent},
        )
    )


@main.command("addon-path")
def addon_path() -> None:
    """Print the addon script's path, for mitmdump or mitmweb.

    \b
    Example:
        mitmdump -s "$(spendbrake addon-path)" --set spendbrake_config=spendbrake.toml
    """
    from spendbrake import addon_script

    click.echo(str(Path(addon_script.__file__).resolve()))


@main.command()
@click.option(
    "--listen", default=DEFAULT_LISTEN, show_default=True, help="Address the proxy listens on."
)
@click.option("--agent", help="Agent name to put in the proxy URL (default: 'default').")
def env(listen: str, agent: str | None) -> None:
    """Print the exports that route a shell's clients through the proxy.

    \b
    Example:
        eval "$(spendbrake env --agent research-bot)"
    """
    host, port = _parse_listen(listen)
    if agent is not None:
        try:
            identify((agent, ""), {})
        except InvalidIdentity as e:
            raise click.BadParameter(str(e), param_hint="--agent") from None
    bundle = certs.write_bundle(certs.certs_dir())
    for line in _export_lines(certs.client_environment(_proxy_url(host, port, agent), bundle)):
        click.echo(line)


@main.command()
@_config_and_ledger_options
def migrate(config_path: Path | None, ledger_path: str | None) -> None:
    """Create the ledger or bring its schema up to date.

    \b
    Example:
        spendbrake migrate --ledger /var/lib/spendbrake/ledger.db
    """
    config = _load_config(config_path)
    ledger = _open_ledger(ledger_path, config)
    ledger.close()
    click.echo(f"ledger {ledger.path} is up to date")


# Commands kept in modules of their own register themselves on ``main`` when imported.
from spendbrake import cli_agents, cli_budgets, cli_reports, cli_run  # noqa: E402, F401
