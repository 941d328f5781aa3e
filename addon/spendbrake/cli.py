"""The ``spendbrake`` command: translates between the shell and the modules, nothing more."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from spendbrake import certs, reports
from spendbrake.access import is_loopback_host
from spendbrake.attribution import InvalidIdentity, identify, valid_agent_name
from spendbrake.config import (
    LEDGER_ENV,
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    resolve_ledger_path,
)
from spendbrake.export import FORMATS as EXPORT_FORMATS
from spendbrake.export import TABLES as EXPORT_TABLES
from spendbrake.export import export
from spendbrake.ledger import LedgerUnavailable, TokenCounts
from spendbrake.ledger_reads import ReadOnlyLedger
from spendbrake.ledger_url import PostgresUrl, describe, open_ledger
from spendbrake.money import MoneyError, format_usd, parse_usd
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.pricing import Pricer, UnknownModel
from spendbrake.reports import BY as REPORT_BY
from spendbrake.reports import since_day
from spendbrake.sqlite_ledger import SQLiteLedger
from spendbrake.status import agent_statuses, status_document
from spendbrake.top import SORTS
from spendbrake.windows import day_window, utc_now

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
    try:
        return open_ledger(resolve_ledger_path(ledger_path, config))
    except (ConfigError, LedgerUnavailable) as e:
        raise click.ClickException(str(e)) from None


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
    _open_ledger(ledger_path, config).close()  # fail here, readably, not inside mitmproxy
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see DESIGN.md).")
def status(config_path: Path | None, ledger_path: str | None, as_json: bool) -> None:
    """Show each agent's spend today against its limit.

    \b
    Example:
        spendbrake status --json
    """
    config = _load_config(config_path)
    ledger = _open_ledger(ledger_path, config)
    now = utc_now()
    try:
        if as_json:
            click.echo(json.dumps(status_document(ledger, config, now), indent=2))
            return
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # a pipe or a file: never truncate a dollar figure
        table = Table(title=f"spendbrake: today ({config.timezone.key})")
        for column in ("agent", "spent", "held", "limit", "remaining", "calls", "blocked", "state"):
            table.add_column(column, justify="left" if column in ("agent", "state") else "right")
        for entry in agent_statuses(ledger, config, now):
            t = entry.totals
            table.add_row(
                t.agent,
                format_usd(t.spent_nanos),
                format_usd(t.held_nanos),
                format_usd(t.limit_nanos),
                format_usd(t.remaining_nanos),
                str(t.calls),
                str(t.blocked),
                entry.state,
            )
        console.print(table)
    finally:
        ledger.close()


def _open_reader(ledger_path: str | None, config: Config) -> ReadOnlyLedger:
    try:
        location = resolve_ledger_path(ledger_path, config)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if isinstance(location, PostgresUrl):
        raise click.ClickException(
            "report, top and export read a SQLite ledger only, so far; for a PostgreSQL ledger "
            "use spendbrake status (or query its tables: see docs/fleet.md)"
        )
    try:
        return ReadOnlyLedger(location)
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None


def _since_day(since: str | None, days: int | None, config: Config) -> str:
    if since is not None and days is not None:
        raise click.UsageError("give --since or --days, not both")
    today = utc_now().astimezone(config.timezone).date()
    try:
        return since_day(since or f"{days or 7}d", today)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


def _since_options[F: Callable[..., Any]](command: F) -> F:
    command = click.option(
        "--days", type=click.IntRange(min=1), help="How many calendar days back (as --since Nd)."
    )(command)
    return click.option(
        "--since",
        metavar="7d|DATE",
        help="From how many calendar days back, today included (7d), or from a date "
        "(2026-03-01). Default: 7d.",
    )(command)


@main.command()
@_config_and_ledger_options
@_since_options
@click.option(
    "--by",
    type=click.Choice(REPORT_BY),
    default="model",
    show_default=True,
    help="One row per agent, model, calendar day or session.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one line per row.")
def report(
    config_path: Path | None,
    ledger_path: str | None,
    since: str | None,
    days: int | None,
    by: str,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Show what was spent, with totals, per agent, model, day or session.

    Per model it also compares the estimates behind the holds with what was billed: a hold is
    the worst case, so actual/held is at most 1; the input ratio is the billed input tokens over
    the estimated ones, and above 1 it means an estimate ran low.

    \b
    Examples:
        spendbrake report --since 30d
        spendbrake report --by agent --since 2026-03-01 --csv > spend.csv
    """
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    config = _load_config(config_path)
    first_day = _since_day(since, days, config)
    ledger = _open_reader(ledger_path, config)
    try:
        spend = reports.build(ledger, by, first_day, config.timezone.key)
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    if as_json:
        click.echo(json.dumps(reports.as_json(spend), indent=2))
    elif as_csv:
        reports.write_csv(spend, sys.stdout)
    else:
        _console().print(reports.table(spend))


@main.command()
@_config_and_ledger_options
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="burn",
    show_default=True,
    help="The first order (the 's' key cycles through them).",
)
@click.option(
    "--red-above",
    metavar="USD",
    help="Show a burn rate above this many dollars a minute in red. Default: each agent's "
    "burn_usd_per_min brake, else 1.00.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between redraws.",
)
@click.option("--once", is_flag=True, help="Print one plain table and exit (as in a pipe).")
def top(
    config_path: Path | None,
    ledger_path: str | None,
    sort: str,
    red_above: str | None,
    interval: float,
    once: bool,
) -> None:
    """Watch every agent's spend, burn rate and brakes, live, beside a running proxy.

    Keys: s cycles the order, up/down (or j/k) select an agent, r resumes it if it is
    suspended, q quits. Not on a terminal (or with --once) it prints one plain table.

    \b
    Example:
        spendbrake top --config spendbrake.toml
    """
    from spendbrake import top as live

    config = _load_config(config_path)
    threshold = _usd_option(red_above, "--red-above")
    ledger = _open_reader(ledger_path, config)
    tz = config.timezone

    def read() -> tuple[datetime, list[live.AgentLine]]:
        now = utc_now()
        try:
            return now, live.gather(ledger, config, now, threshold)
        except LedgerUnavailable as e:
            raise click.ClickException(str(e)) from None

    console = _console()
    try:
        if once or not console.is_terminal:
            now, lines = read()
            console.print(live.render(live.sorted_lines(lines, sort), now, tz, None))
            return
        actor = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
        keys = live.TerminalKeys() if sys.stdin.isatty() else live.NoKeys()
        with keys:
            live.watch(
                read,
                lambda agent: live.resume_agent(ledger.path, agent, actor),
                keys,
                console,
                tz,
                interval=interval,
                sort=sort,
            )
    except KeyboardInterrupt:
        pass
    finally:
        ledger.close()


@main.command("export")
@_config_and_ledger_options
@click.argument("table", type=click.Choice(EXPORT_TABLES), default="calls")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="csv",
    show_default=True,
    help="CSV with a header line, or one JSON object a line.",
)
@_since_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write. Default: standard output.",
)
def export_rows(
    config_path: Path | None,
    ledger_path: str | None,
    table: str,
    fmt: str,
    since: str | None,
    days: int | None,
    output: Path | None,
) -> None:
    """Write the ledger's calls (default) or events as CSV or JSON lines, columns as in the
    ledger (docs/ledger.md), plus each call's money in exact dollars.

    \b
    Examples:
        spendbrake export calls --since 30d -o calls.csv
        spendbrake export events --format jsonl --since 2026-03-01
    """
    config = _load_config(config_path)
    first_day = _since_day(since, days, config)
    ledger = _open_reader(ledger_path, config)
    try:
        if output is None:
            export(ledger, table, first_day, config.timezone, fmt, sys.stdout)
            return
        with output.open("w", encoding="utf-8", newline="") as file:
            written = export(ledger, table, first_day, config.timezone, fmt, file)
        click.echo(f"{output}: {written:,} {table} since {first_day}", err=True)
    except (LedgerUnavailable, OSError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()


@main.group()
def limit() -> None:
    """Change limits at run time (the running proxy applies them on the next call)."""


@main.command()
@_config_and_ledger_options
@click.argument("agent")
@click.option(
    "--window",
    type=click.Choice(["day", "month", "session"]),
    required=True,
    help="Which window: today's, this month's (in the configured timezone), or a session's.",
)
@click.option("--session", "session_id", metavar="ID", help="The session, with --window session.")
def reset(
    config_path: Path | None,
    ledger_path: str | None,
    agent: str,
    window: str,
    session_id: str | None,
) -> None:
    """Zero what AGENT spent in a window, on purpose. The calls stay in the ledger as they
    happened; the reset is an event with who did it.

    \b
    Example:
        spendbrake reset research-bot --window day
    """
    if (window == "session") != (session_id is not None):
        raise click.UsageError("--session ID goes with --window session, and only with it")
    config = _load_config(config_path)
    day = day_window(utc_now(), config.timezone).day
    period = day if window == "day" else day[:7]
    actor = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    ledger = _open_ledger(ledger_path, config)
    try:
        forgiven = ledger.reset_window(agent, window, period, actor, session=session_id or "")
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    what = f"session {session_id}" if session_id is not None else f"{window} {period}"
    click.echo(
        f"{agent}: {what} reset, {format_usd(forgiven)} forgiven; recorded as done by {actor}"
    )


@main.command()
@_config_and_ledger_options
@click.argument("agent")
@click.option(
    "--session",
    "session_id",
    metavar="ID",
    help="Resume a session its breakers stopped (its dollars and tokens start over) instead.",
)
def resume(
    config_path: Path | None, ledger_path: str | None, agent: str, session_id: str | None
) -> None:
    """Lift an agent's suspension (a loop, repeated failures, a burn rate); its loop and burn
    history start over. With --session, lift a session's breakers. The running proxy lets the
    next call through.

    \b
    Examples:
        spendbrake resume research-bot
        spendbrake resume research-bot --session run-42
    """
    actor = os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
    ledger = _open_ledger(ledger_path, _load_config(config_path))
    if session_id is not None:
        try:
            forgiven = ledger.reset_window(agent, "session", "", actor, session=session_id)
        except LedgerUnavailable as e:
            raise click.ClickException(str(e)) from None
        finally:
            ledger.close()
        click.echo(
            f"{agent}: session {session_id} resumed, its {format_usd(forgiven)} and tokens start "
            f"over; recorded as done by {actor}"
        )
        return
    try:
        reason = ledger.suspended_agents().get(agent)
        lifted = ledger.resume(agent, actor=actor)
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    if lifted:
        click.echo(f"{agent}: resumed (it was suspended for {reason}); recorded as done by {actor}")
    else:
        click.echo(f"{agent}: was not suspended; its loop and failure history start over")


# limit set: (option, ledger window, what the user reads); dollars, then whole numbers.
_USD_LIMITS = (
    ("--daily", "daily", "daily limit"),
    ("--monthly", "monthly", "monthly limit"),
    ("--session-usd", "session_usd", "session limit"),
    ("--burn-usd-per-min", "burn_usd_per_min", "burn-rate brake (a minute)"),
)
_COUNT_LIMITS = (
    ("--session-tokens", "session_tokens", "session token limit"),
    ("--monthly-tokens", "monthly_tokens", "monthly token quota"),
    ("--calls-per-minute", "calls_per_minute", "calls per minute"),
    ("--tokens-per-minute", "tokens_per_minute", "tokens per minute"),
    ("--max-concurrent", "max_concurrent", "calls in flight"),
    ("--loop-repeats", "loop_repeats", "loop brake (identical requests)"),
)
_GROUP_OPTIONS = frozenset({"--daily", "--monthly", "--monthly-tokens"})


def _option_name(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _limit_options[F: Callable[..., Any]](command: F) -> F:
    for option, _, said in reversed(_USD_LIMITS):
        command = click.option(option, metavar="USD", help=f"The {said} in dollars.")(command)
    for option, _, said in reversed(_COUNT_LIMITS):
        help_text = f"The {said}; 0 turns it off."
        command = click.option(option, type=int, metavar="N", help=help_text)(command)
    return command


@limit.command("set")
@_config_and_ledger_options
@click.argument("agent", required=False)
@click.option("--group", metavar="NAME", help="Set a group's shared limits instead of an agent's.")
@_limit_options
def limit_set(
    config_path: Path | None,
    ledger_path: str | None,
    agent: str | None,
    group: str | None,
    **given: Any,
) -> None:
    """Set an agent's (or a group's) limits and brakes, overriding the config.

    \b
    Examples:
        spendbrake limit set research-bot --daily 0.10
        spendbrake limit set research-bot --monthly 20 --session-tokens 50000
        spendbrake limit set research-bot --calls-per-minute 30 --loop-repeats 0
        spendbrake limit set --group research --daily 50
    """
    if (agent is None) == (group is None):
        raise click.UsageError("name an AGENT or a --group (one of them)")
    name = agent or group or ""
    try:
        identify((name, ""), {})  # group names obey the same rule as agent names
    except InvalidIdentity as e:
        raise click.BadParameter(str(e), param_hint="--group" if group else "AGENT") from None
    wanted: list[tuple[str, str, int]] = []  # (window, what the user reads, limit)
    for option, window, said in _USD_LIMITS:
        if (value := given[_option_name(option)]) is not None:
            nanos = _usd_option(value, option)
            assert nanos is not None
            wanted.append((window, f"{said} set to {format_usd(nanos)}", nanos))
    for option, window, said in _COUNT_LIMITS:
        if (count := given[_option_name(option)]) is not None:
            if count < 0 or (window == "loop_repeats" and count == 1):
                lowest = "0 (off) or 2 or more" if window == "loop_repeats" else "0 or more"
                raise click.BadParameter(f"must be {lowest}", param_hint=option)
            wanted.append((window, f"{said} set to {count:,}" if count else f"{said} off", count))
    if group:
        if not_for_groups := [
            option
            for option, _, _ in (*_USD_LIMITS, *_COUNT_LIMITS)
            if option not in _GROUP_OPTIONS and given[_option_name(option)] is not None
        ]:
            raise click.UsageError(
                "a group has --daily, --monthly and --monthly-tokens limits only, not "
                + ", ".join(not_for_groups)
            )
        wanted = [(f"group_{window}", said, value) for window, said, value in wanted]
    if not wanted:
        raise click.UsageError("give at least one limit: --daily, --monthly, --session-usd, ...")
    config = _load_config(config_path)
    ledger = _open_ledger(ledger_path, config)
    try:
        ledger.set_limits([(window, name, new_limit) for window, _, new_limit in wanted])
    except LedgerUnavailable as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    who = f"group {name}" if group else name
    for _, said, _ in wanted:
        click.echo(f"{who}: {said} (applies from the next call)")


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file whose [prices] overrides apply. Default: $SPENDBRAKE_CONFIG.",
)
@click.argument("model")
@click.option("--provider", default="openai", show_default=True, help="genai-prices provider id.")
@click.option(
    "--input",
    "input_tokens",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Input tokens to price.",
)
@click.option(
    "--output",
    "output_tokens",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Output tokens to price.",
)
def price(
    config_path: Path | None, model: str, provider: str, input_tokens: int, output_tokens: int
) -> None:
    """Show what MODEL costs and where the price comes from.

    \b
    Example:
        spendbrake price claude-haiku-4-5 --provider anthropic --input 1200 --output 300
    """
    pricer = Pricer(_load_config(config_path).prices)
    try:
        source = pricer.source(model, provider)

        def cost(tokens: TokenCounts) -> int:
            return pricer.cost_nanos(tokens, model, provider_id=provider)

        # A per-request fee (Perplexity's) is in every figure once: shown on its own line.
        fee = cost(TokenCounts())
        inputs = cost(TokenCounts(input_tokens=input_tokens)) - fee
        outputs = cost(TokenCounts(output_tokens=output_tokens)) - fee
        together = cost(TokenCounts(input_tokens=input_tokens, output_tokens=output_tokens))
    except UnknownModel as e:
        raise click.ClickException(
            f'{e}; give it a price in the configuration\'s [prices."{model}"]'
        ) from None
    try:
        max_output = f"{pricer.max_output_tokens(model, provider):,} tokens"
    except UnknownModel:
        max_output = "unknown (requests must set their max output)"
    rows = [
        (f"{input_tokens:,} input tokens", format_usd(inputs)),
        (f"{output_tokens:,} output tokens", format_usd(outputs)),
        *([("per request", format_usd(fee))] if fee else []),
        ("together", format_usd(together)),
        ("maximum output", max_output),
    ]
    width = max(len(label) for label, _ in rows) + 1
    click.echo(f"{model} at {provider}, priced by {source}")
    for label, value in rows:
        click.echo(f"  {label + ':':<{width}} {value}")


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


@main.command(context_settings={"allow_interspersed_args": False})
@click.option("--agent", default="run", show_default=True, help="Agent the calls count for.")
@click.option("--budget", metavar="USD", help="The run's dollar limit (its session's), e.g. 0.50.")
@click.option(
    "--session-tokens", type=click.IntRange(min=0), metavar="N", help="Tokens the run may use."
)
@click.option(
    "--calls-per-minute",
    type=click.IntRange(min=1),
    metavar="N",
    help="Calls a minute the run may make (more are answered 429 'rate_limited').",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration under the run's limits. Default: $SPENDBRAKE_CONFIG, else defaults.",
)
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ledger to keep. Default: $SPENDBRAKE_LEDGER, else a temporary one (a clean start).",
)
@click.option("--block-all", is_flag=True, help="Refuse every LLM call (402 llm_calls_blocked).")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run's summary there as JSON (see DESIGN.md).",
)
@_proxy_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    agent: str,
    budget: str | None,
    session_tokens: int | None,
    calls_per_minute: int | None,
    config_path: Path | None,
    ledger_path: Path | None,
    block_all: bool,
    summary_json: Path | None,
    sets: tuple[str, ...],
    scripts: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with its LLM calls held to a budget, through a proxy of its own.

    Exits with COMMAND's exit code, or with 87 when a budget or brake refused an LLM call, even
    if COMMAND swallowed the error. An HTTPS_PROXY already set becomes the proxy's way out.

    \b
    Example:
        spendbrake run --budget 0.50 --summary-json spend.json -- pytest
    """
    from spendbrake.run import RunOptions, own_option_conflicts
    from spendbrake.sandbox import RunError, execute

    try:
        identify((agent, ""), {})
    except InvalidIdentity as e:
        raise click.BadParameter(str(e), param_hint="--agent") from None
    if conflicts := own_option_conflicts(sets):
        raise click.BadParameter("; ".join(conflicts), param_hint="--set")
    options = RunOptions(
        agent=agent,
        budget_nanos=_usd_option(budget, "--budget"),
        session_tokens=session_tokens,
        calls_per_minute=calls_per_minute,
        config_path=resolve_config_path(config_path),
        ledger_path=ledger_path or _path_from_env(LEDGER_ENV),
        block_all=block_all,
        sets=sets,
        scripts=scripts,
    )
    try:
        code = execute(command, options, summary_json=summary_json, console=_console(stderr=True))
    except RunError as e:
        click.echo(f"spendbrake run: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(code)


@main.group()
def demo() -> None:
    """Demonstrations that run offline, against a local fake provider."""


@demo.command("runaway")
@click.option(
    "--limit", default="0.05", show_default=True, metavar="USD", help="The agent's daily limit."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    metavar="SECONDS",
    help="Time between the agent's calls.",
)
def demo_runaway(limit: str, interval: float) -> None:
    """A runaway agent (the openai SDK in a loop) stopped at its daily limit.

    \b
    Example:
        spendbrake demo runaway --limit 0.05
    """
    from spendbrake.demo import runaway
    from spendbrake.sandbox import RunError

    try:
        sys.exit(runaway(_usd_option(limit, "--limit") or 0, interval, _console()))
    except RunError as e:
        raise click.ClickException(str(e)) from None


# Commands kept in modules of their own register themselves on ``main`` when imported.
from spendbrake import agent_commands  # noqa: E402, F401
