"""``spendbrake run``: what a run is, apart from its processes.

Pure parts only: the run's configuration (the user's, with the run's limits written into the
run's agent table), the environment its command gets, the summary read from the ledger rows of
the run's session, and the exit code. Starting and stopping the processes is
``spendbrake.sandbox``'s business.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from spendbrake import certs
from spendbrake.config import DEFAULT_DAILY_NANOS
from spendbrake.money import format_usd, format_usd_exact, nanos_to_decimal
from spendbrake.providers import PROVIDERS, provider_for_host

BUDGET_EXIT_CODE = 87
DEFAULT_AGENT = "run"

# Refusals by a budget or a brake: any of them fails the run with 87 (DESIGN.md), a 429 that an
# SDK waited out included: in CI, a run that hit its rate or made the provider fail twice in a
# row is worth a look. A refusal of a request spendbrake cannot meter (unknown_model...) is not
# a budget's doing: the command sees that error itself.
STOPPING_CODES = frozenset(
    {
        "daily_budget_exceeded",
        "monthly_budget_exceeded",
        "session_budget_exceeded",
        "session_tokens_exceeded",
        "rate_limited",
        "backoff",
        "agent_suspended",
        "loop_detected",
        "llm_calls_blocked",
    }
)
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# The refusal inside a run names `spendbrake limit set`, which changes the user's own ledger and
# not the run's: the summary says which flag of the run raises the limit instead.
RAISED_BY = {
    "session_budget_exceeded": "--budget",
    "session_tokens_exceeded": "--session-tokens",
}
RAISE_HINT = "to let the run go further ('spendbrake limit set' does not change a run's limits)"
# The variables the run points at its own CA bundle: whatever the caller's clients trusted
# through them (a corporate CA) goes into that bundle too.
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
# The proxy options the run sets for itself, and what to use instead. A --set of one of them
# would point the proxy away from what the run reads back: another ledger, and the run would
# report no refusal and exit 0 although a call was refused.
RUN_OWN_OPTIONS = {
    "spendbrake_ledger": "use --ledger PATH",
    "spendbrake_config": "use --config FILE",
    "spendbrake_default_agent": "use --agent NAME",
    "spendbrake_default_session": "each run has a session of its own",
    "confdir": "the run makes a CA of its own",
}


@dataclass(frozen=True)
class RunOptions:
    """What ``spendbrake run`` (or the demo) asks of its proxy. Money in nanos."""

    agent: str = DEFAULT_AGENT
    budget_nanos: int | None = None  # the session's dollars (session_usd)
    session_tokens: int | None = None
    calls_per_minute: int | None = None
    daily_nanos: int | None = None  # the agent's day (the demo's --limit)
    config_path: Path | None = None  # the user's configuration (resolved), under the run's limits
    ledger_path: Path | None = None  # None: a temporary ledger of the run's own
    block_all: bool = False
    sets: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()

    def agent_settings(self) -> dict[str, object]:
        """The keys the run writes into its agent's table of the configuration."""
        settings: dict[str, object] = {}
        if self.daily_nanos is not None:
            settings["daily_usd"] = _usd_text(self.daily_nanos)
        if self.budget_nanos is not None:
            settings["session_usd"] = _usd_text(self.budget_nanos)
        if self.session_tokens is not None:
            settings["session_tokens"] = self.session_tokens
        if self.calls_per_minute is not None:
            settings["calls_per_minute"] = self.calls_per_minute
        return settings


def own_option_conflicts(sets: Iterable[str]) -> list[str]:
    """What is wrong with ``--set NAME=VALUE`` settings that would replace the run's own."""
    names = dict.fromkeys(setting.partition("=")[0].strip() for setting in sets)
    return [
        f"{name} is set by the run itself: {RUN_OWN_OPTIONS[name]}"
        for name in names
        if name in RUN_OWN_OPTIONS
    ]


def _usd_text(nanos: int) -> str:
    """Dollars as an exact decimal string (the config reads strings exactly, floats by repr)."""
    return format(nanos_to_decimal(nanos).normalize(), "f")


def new_session_id(now: datetime, token: str | None = None) -> str:
    """A fresh session per run, readable in the ledger: ``run-20261122T101500Z-3f9a2c``."""
    return f"run-{now:%Y%m%dT%H%M%SZ}-{token or secrets.token_hex(3)}"


# -- the configuration ------------------------------------------------------------------------


def run_config(user: Mapping[str, Any], options: RunOptions) -> dict[str, Any]:
    """The user's configuration with the run's settings in the run's agent table, where they win
    over the user's own values. The run's ledger is chosen by the run, so the file's is dropped.

    Where no configuration sets a daily limit, the built-in $5.00 a day applies; a bigger
    ``--budget`` raises the agent's day to the budget, or ``--budget 20`` would stop at $5.00.
    """
    document = copy.deepcopy(dict(user))
    document.pop("ledger", None)
    agents = document.setdefault("agents", {})
    own, settings = agents.get(options.agent, {}), options.agent_settings()
    daily_set = "daily_usd" in {**document.get("defaults", {}), **own, **settings}
    budget = options.budget_nanos
    if budget is not None and budget > DEFAULT_DAILY_NANOS and not daily_set:
        settings["daily_usd"] = _usd_text(budget)
    agents[options.agent] = {**own, **settings}
    return document


def toml_document(document: Mapping[str, Any]) -> str:
    """TOML for what ``tomllib`` read (tables become inline tables, one top-level key a line)."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in document.items())


def _toml_key(key: object) -> str:
    return _toml_string(str(key))


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char < " " or char == "\x7f":  # control characters are not allowed raw
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # the shortest repr reads back as the same float
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {value!r}")


# -- the command's environment ----------------------------------------------------------------


def proxy_url(agent: str, session: str, port: int) -> str:
    return f"http://{agent}:{session}@127.0.0.1:{port}"


def upstream_proxy_of(environment: Mapping[str, str]) -> str | None:
    """The proxy the caller already goes through: spendbrake's own way out to the providers."""
    return environment.get("HTTPS_PROXY") or environment.get("https_proxy") or None


def _no_proxy_name(entry: str) -> str:
    """A NO_PROXY entry as clients match it: without ``*.``, a leading dot or a port."""
    name = entry.strip().lower().removeprefix("*").lstrip(".").rstrip(".")
    host, sep, port = name.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else name


def exempts_llm_host(entry: str) -> bool:
    """Whether a NO_PROXY entry would let clients call a provider past the proxy: it names an
    LLM host, or a domain above one (``openai.com`` and ``.openai.com`` cover
    ``api.openai.com``, ``azure.com`` every Azure OpenAI resource)."""
    name = _no_proxy_name(entry)
    if not name:
        return False
    if provider_for_host(name):
        return True
    for provider in PROVIDERS:
        if any(host == name or host.endswith("." + name) for host in provider.hosts):
            return True
        if any(suffix.endswith("." + name) for suffix in provider.host_suffixes):
            return True
    return False


def _no_proxy_entries(environment: Mapping[str, str]) -> list[str]:
    hosts: list[str] = []
    for name in ("NO_PROXY", "no_proxy"):
        hosts += [h.strip() for h in environment.get(name, "").split(",")]
    return list(dict.fromkeys(h for h in hosts if h))


def dropped_no_proxy(environment: Mapping[str, str]) -> list[str]:
    """The caller's NO_PROXY entries the run leaves out: ``*``, and those that would send an
    LLM call past the proxy, and with it past the budget."""
    return [h for h in _no_proxy_entries(environment) if h == "*" or exempts_llm_host(h)]


def no_proxy(environment: Mapping[str, str]) -> str:
    """The caller's NO_PROXY hosts and loopback, without those ``dropped_no_proxy`` names."""
    dropped = set(dropped_no_proxy(environment))
    hosts = [h for h in _no_proxy_entries(environment) if h not in dropped]
    return ",".join(dict.fromkeys([*hosts, *LOOPBACK]))


def caller_ca_files(environment: Mapping[str, str]) -> list[Path]:
    """The CA bundles the caller's clients were told to trust (set, not checked: the bundle
    writer skips what it cannot read), each once."""
    paths = [Path(environment[name]).expanduser() for name in CA_VARIABLES if environment.get(name)]
    return list(dict.fromkeys(paths))


def child_environment(base: Mapping[str, str], url: str, bundle: Path) -> dict[str, str]:
    """``base`` routed through the proxy at ``url`` for every common client stack (Python,
    curl, Node), trusting the proxy's CA beside the system's."""
    environment = dict(base)
    environment.update(certs.client_environment(url, bundle))
    environment["HTTP_PROXY"] = environment["http_proxy"] = url
    environment["NO_PROXY"] = environment["no_proxy"] = no_proxy(base)
    environment["NODE_USE_ENV_PROXY"] = "1"  # Node ≥ 24 honours HTTPS_PROXY only when asked
    return environment


# -- the summary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRow:
    """The part of one ledger row (``calls``) a run's summary reads."""

    started_at: datetime
    model: str
    state: str  # held, settled or refused
    reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    held_nanos: int = 0
    actual_nanos: int | None = None

    @property
    def cost_nanos(self) -> int:
        """What a forwarded call cost; a call still held counts at its hold (the worst case)."""
        return self.actual_nanos if self.actual_nanos is not None else self.held_nanos


@dataclass(frozen=True)
class ModelUse:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    spent_nanos: int = 0


@dataclass(frozen=True)
class RunSummary:
    agent: str
    session: str
    seconds: float
    calls: int = 0  # forwarded
    spent_nanos: int = 0
    refused: Mapping[str, int] = field(default_factory=dict)  # reason → calls
    refused_nanos: int = 0  # what the refused calls could have cost (their holds)
    budget_nanos: int | None = None
    stopped_by: str | None = None  # the first refusal by a budget or brake
    seconds_to_wall: float | None = None
    by_model: Mapping[str, ModelUse] = field(default_factory=dict)

    @property
    def refused_calls(self) -> int:
        return sum(self.refused.values())

    def as_json(self) -> dict[str, Any]:
        """DESIGN.md's ``--summary-json`` document."""
        return {
            "agent": self.agent,
            "session": self.session,
            "calls": self.calls,
            "refused": self.refused_calls,
            "spent_usd": format_usd_exact(self.spent_nanos),
            "budget_usd": _usd_or_none(self.budget_nanos),
            "stopped_by": self.stopped_by,
            "by_model": {
                model: {
                    "calls": use.calls,
                    "input_tokens": use.input_tokens,
                    "output_tokens": use.output_tokens,
                    "spent_usd": format_usd_exact(use.spent_nanos),
                }
                for model, use in self.by_model.items()
            },
            "seconds": round(self.seconds, 3),
        }


def _usd_or_none(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd_exact(nanos)


def summarize(
    rows: Iterable[CallRow],
    *,
    agent: str,
    session: str,
    started_at: datetime,
    seconds: float,
    budget_nanos: int | None = None,
) -> RunSummary:
    """The run's summary from its session's ledger rows, oldest first."""
    by_model: dict[str, ModelUse] = {}
    refused: Counter[str] = Counter()
    calls = spent = refused_nanos = 0
    stopped_by, wall = None, None
    for row in rows:
        if row.state == "refused":
            refused[row.reason] += 1
            refused_nanos += row.held_nanos
            if stopped_by is None and row.reason in STOPPING_CODES:
                stopped_by = row.reason
                wall = max(0.0, (row.started_at - started_at).total_seconds())
            continue
        calls += 1
        spent += row.cost_nanos
        use = by_model.get(row.model, ModelUse())
        by_model[row.model] = ModelUse(
            calls=use.calls + 1,
            input_tokens=use.input_tokens + row.input_tokens,
            output_tokens=use.output_tokens + row.output_tokens,
            spent_nanos=use.spent_nanos + row.cost_nanos,
        )
    return RunSummary(
        agent=agent,
        session=session,
        seconds=seconds,
        calls=calls,
        spent_nanos=spent,
        refused=dict(refused.most_common()),
        refused_nanos=refused_nanos,
        budget_nanos=budget_nanos,
        stopped_by=stopped_by,
        seconds_to_wall=wall,
        by_model=dict(sorted(by_model.items())),
    )


def shell_exit_code(returncode: int) -> int:
    """A Popen return code as a shell reports it: 128 + N when signal N ended the process."""
    return 128 - returncode if returncode < 0 else returncode


def exit_code(returncode: int, summary: RunSummary) -> int:
    """87 when a budget or brake refused a call (even if the command swallowed the error),
    else the command's own exit code."""
    return BUDGET_EXIT_CODE if summary.stopped_by else shell_exit_code(returncode)


def render_summary(summary: RunSummary, code: int, returncode: int) -> RenderableType:
    """What ``spendbrake run`` prints at the end (on stderr, after the command's output)."""
    refused = ", ".join(f"{reason}: {count}" for reason, count in summary.refused.items())
    facts = [
        ("calls", f"{summary.calls} forwarded, {summary.refused_calls} refused")
        + ((f" ({refused})",) if refused else ()),
        ("spent", format_usd(summary.spent_nanos))
        + ((f" of the {format_usd(summary.budget_nanos)} budget",) if summary.budget_nanos else ()),
    ]
    if summary.stopped_by is not None and summary.seconds_to_wall is not None:
        facts.append(
            ("stopped", f"by {summary.stopped_by}, {summary.seconds_to_wall:.2f} s into the run")
        )
    if flag := RAISED_BY.get(summary.stopped_by or ""):
        facts.append(("raise", f"{flag} {RAISE_HINT}"))
    lines = Text()
    lines.append(
        f"spendbrake run: agent {summary.agent}, session {summary.session}, "
        f"{summary.seconds:.1f} s",
        style="bold",
    )
    for label, *values in facts:
        lines.append(f"\n  {label:<8}", style="bold")
        lines.append("".join(values))
    parts: list[RenderableType] = [lines]
    if summary.by_model:
        models = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
        for column in ("model", "calls", "input tokens", "output tokens", "spent"):
            models.add_column(column, justify="left" if column == "model" else "right")
        for model, use in summary.by_model.items():
            models.add_row(
                model or "?",
                str(use.calls),
                f"{use.input_tokens:,}",
                f"{use.output_tokens:,}",
                format_usd(use.spent_nanos),
            )
        parts.append(Padding(models, (1, 0, 1, 1), expand=False))
    own = shell_exit_code(returncode)
    if code == BUDGET_EXIT_CODE and summary.stopped_by:
        verdict = Text(
            f"spendbrake run: exit {code}: {summary.stopped_by} refused an LLM call "
            f"(the command itself exited with {own})",
            style="bold red",
        )
    else:
        verdict = Text(f"spendbrake run: exit {code}, the command's own")
    parts.append(verdict)
    return Group(*parts)
