"""``spendbrake run`` and ``spendbrake demo``: a command, or the runaway demo, through a proxy of
its own."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spendbrake.attribution import InvalidIdentity, identify
from spendbrake.cli import (  # the core: 'main' and the options every command shares
    _console,
    _path_from_env,
    _proxy_options,
    _usd_option,
    main,
)
from spendbrake.config import (
    LEDGER_ENV,
    resolve_config_path,
)


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
