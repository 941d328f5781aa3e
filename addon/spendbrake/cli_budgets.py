"""``spendbrake limit set``, ``reset``, ``resume`` and ``price``: what an agent may spend,
changed at run time."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from spendbrake.attribution import InvalidIdentity, identify
from spendbrake.cli import (  # the core: 'main' and the options every command shares
    _config_and_ledger_options,
    _ledger_to_change,
    _load_config,
    _open_ledger,
    _usd_option,
    main,
)
from spendbrake.ledger import LedgerUnavailable, TokenCounts
from spendbrake.money import format_usd
from spendbrake.pricing import Pricer, UnknownModel
from spendbrake.windows import day_window, utc_now


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
    ledger = _ledger_to_change(ledger_path, config, what="spending to reset")
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
    ledger = _ledger_to_change(ledger_path, _load_config(config_path), what="suspension to lift")
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
        ("a stream cut short", _cut_stream_charge(pricer.reasons_unseen(model, provider))),
    ]
    width = max(len(label) for label, _ in rows) + 1
    click.echo(f"{model} at {provider}, priced by {source}")
    for label, value in rows:
        click.echo(f"  {label + ':':<{width}} {value}")


def _cut_stream_charge(reasons_unseen: bool) -> str:
    if reasons_unseen:
        return "all the output held (it may reason unseen)"
    return "the text it relayed"
