"""``spendbrake status``, ``report``, ``top`` and ``export``: what the ledger says, read-only."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from spendbrake import reports
from spendbrake.cli import (  # the core: 'main' and the options every command shares
    _config_and_ledger_options,
    _console,
    _ledger_to_read,
    _load_config,
    _usd_option,
    main,
)
from spendbrake.config import (
    Config,
    ConfigError,
    resolve_ledger_path,
)
from spendbrake.export import FORMATS as EXPORT_FORMATS
from spendbrake.export import TABLES as EXPORT_TABLES
from spendbrake.export import export
from spendbrake.ledger import LedgerUnavailable
from spendbrake.ledger_reads import Reader, open_reader
from spendbrake.money import format_usd
from spendbrake.reports import BY as REPORT_BY
from spendbrake.reports import since_day
from spendbrake.status import agent_statuses, status_document
from spendbrake.top import SORTS
from spendbrake.windows import utc_now


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
    now = utc_now()
    with _ledger_to_read(ledger_path, config) as ledger:
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


def _open_reader(ledger_path: str | None, config: Config) -> Reader:
    try:
        location = resolve_ledger_path(ledger_path, config)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    try:
        return open_reader(location)
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
                lambda agent: live.resume_agent(ledger.location, agent, actor),
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
