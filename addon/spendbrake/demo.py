"""``spendbrake demo runaway``: a runaway agent stopped at its limit, offline, in one command.

The fake provider (a module of the project) stands in for api.openai.com; the agent is the
official openai SDK in a loop; between them runs the same ephemeral proxy as ``spendbrake run``,
with the agent's daily limit set to ``--limit``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from spendbrake.money import NANOS_PER_USD, format_usd
from spendbrake.run import RunOptions, RunSummary, shell_exit_code
from spendbrake.sandbox import RunError, run_sandboxed
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import make_test_pki

AGENT = "runaway-agent"
# What routes or configures the caller's own traffic has no place in an offline demo.
_NOT_INHERITED = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
_NOT_INHERITED_PREFIXES = ("OPENAI_", "SPENDBRAKE_")


def _dollars(nanos: float) -> str:
    """A rate for reading, not an amount of the ledger: to the cent."""
    return f"${nanos / NANOS_PER_USD:,.2f}"


def per_hour_nanos(summary: RunSummary) -> int | None:
    """What an hour at the rate observed until the wall would have cost without the governor."""
    if not summary.seconds_to_wall:
        return None
    return round(summary.spent_nanos * 3600 / summary.seconds_to_wall)


def burn_line(summary: RunSummary, limit_nanos: int) -> RenderableType:
    """The live line: spend against the limit, calls, the burn rate (until the wall, once it
    was hit), time."""
    seconds = summary.seconds_to_wall or summary.seconds
    rate = summary.spent_nanos * 60 / seconds if seconds > 0 else 0
    line = Table.grid(padding=(0, 1))
    line.add_row(
        ProgressBar(total=max(limit_nanos, 1), completed=summary.spent_nanos, width=24),
        Text(
            f"{format_usd(summary.spent_nanos)} of {format_usd(limit_nanos)} · "
            f"{summary.calls} calls · {_dollars(rate)}/min · {seconds:.1f} s"
        ),
    )
    return line


def demo_summary(
    summary: RunSummary, limit_nanos: int, agent_report: dict[str, Any]
) -> RenderableType:
    """How it ended: the wall, what was spent and refused, what no governor would have cost."""
    if summary.stopped_by and summary.seconds_to_wall is not None:
        title = (
            f"spendbrake stopped the runaway agent {summary.seconds_to_wall:.2f} s in "
            f"({summary.stopped_by})"
        )
    else:
        title = "the agent stopped before spendbrake had to stop it"
    calls = summary.refused_calls
    facts = [
        (
            "spent",
            f"{format_usd(summary.spent_nanos)} in {summary.calls} calls "
            f"(limit {format_usd(limit_nanos)})",
        ),
        (
            "refused",
            f"{calls} call{'' if calls == 1 else 's'}, "
            f"worth up to {format_usd(summary.refused_nanos)}",
        ),
    ]
    hourly = per_hour_nanos(summary)
    if hourly is not None:
        facts.append(
            (
                "no governor",
                f"{_dollars(hourly)} an hour at the observed rate "
                f"({_dollars(hourly / 60)} a minute)",
            )
        )
    if agent_report.get("error"):
        status = agent_report.get("status") or "an error"
        facts.append(("agent saw", f"{status}: {agent_report['error']}"))
    text = Text()
    text.append(title, style="bold")
    for label, value in facts:
        text.append(f"\n  {label:<12}", style="bold")
        text.append(value)
    return text


def _agent_report(output: Path) -> dict[str, Any]:
    lines = output.read_text(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {"error": lines[-1]}
    return report if isinstance(report, dict) else {}


def runaway(limit_nanos: int, interval: float, console: Console) -> int:
    """Run the demo; 0 when spendbrake stopped the agent at its limit."""
    if importlib.util.find_spec("openai") is None:
        raise RunError(
            "the demo's agent is the official openai SDK: run scripts/run once, or "
            "pip install 'spendbrake[demo]'"
        )
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in _NOT_INHERITED
        and not name.upper().startswith(_NOT_INHERITED_PREFIXES)
    }
    console.print(
        Text(
            f"spendbrake demo: a runaway agent (the openai SDK, a gpt-4o call every "
            f"{interval:g} s) against a daily limit of {format_usd(limit_nanos)}",
            style="bold",
        )
    )
    with tempfile.TemporaryDirectory(prefix="spendbrake-demo-") as tmp:
        pki = make_test_pki(Path(tmp) / "pki")
        with FakeProvider(pki) as fake:
            options = RunOptions(
                agent=AGENT,
                daily_nanos=limit_nanos,
                sets=(
                    f"spendbrake_upstream=127.0.0.1:{fake.port}",
                    f"ssl_verify_upstream_trusted_ca={pki.ca_cert}",
                ),
            )
            agent_output = Path(tmp) / "agent.out"
            empty = RunSummary(agent=AGENT, session="", seconds=0)
            # Not a terminal (a pipe, a CI log): no live line, only where it ended.
            live = Live(
                burn_line(empty, limit_nanos),
                console=console,
                refresh_per_second=10,
                transient=True,
            )
            with agent_output.open("wb") as out, live if console.is_terminal else nullcontext():
                result = run_sandboxed(
                    [sys.executable, "-m", "spendbrake.runaway_agent", str(interval)],
                    options,
                    environment=environment,
                    stdout=out,
                    watch=lambda summary: live.update(burn_line(summary, limit_nanos)),
                )
            report = _agent_report(agent_output)
    console.print(burn_line(result.summary, limit_nanos))
    console.print(demo_summary(result.summary, limit_nanos, report), soft_wrap=True)
    return 0 if result.summary.stopped_by else shell_exit_code(result.returncode) or 1
