"""The TOML configuration: limits per agent, the timezone of calendar windows, the ledger path.

Without a file the embedded defaults apply: every agent may spend $5.00 a day, days in UTC.
Unknown keys are errors that name the key and the file, because a misspelt limit is a limit
that silently does not exist.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spendbrake.access import Access, IdentifyRules, parse_access, parse_identify
from spendbrake.alerts_config import AlertsConfig, parse_alerts
from spendbrake.brakes import Brakes

# ConfigError is re-exported: callers catch it from here.
from spendbrake.config_errors import ConfigError as ConfigError
from spendbrake.config_errors import reject_unknown
from spendbrake.fleet_config import FleetConfig, parse_fleet
from spendbrake.ledger import Limits
from spendbrake.ledger_url import BadLedgerLocation, LedgerLocation, parse_location
from spendbrake.money import MoneyError, nanos_to_decimal, parse_usd
from spendbrake.pricing import OverridePrice
from spendbrake.quota import DEFAULT_CAP_MINIMUM, Quota

DEFAULT_DAILY_NANOS = 5_000_000_000  # $5.00
CONFIG_ENV = "SPENDBRAKE_CONFIG"
LEDGER_ENV = "SPENDBRAKE_LEDGER"

_QUOTA_KEYS = frozenset(
    {
        "monthly_tokens",
        "downgrade_below",
        "downgrade",
        "when_quota_empty",
        "cap_output",
        "cap_output_min_tokens",
    }
)
_BRAKE_KEYS = frozenset(
    {
        "calls_per_minute",
        "tokens_per_minute",
        "max_concurrent",
        "loop_repeats",
        "loop_window_s",
        "backoff_steps_s",
        "burn_usd_per_min",
        "throttle",
    }
)
_AGENT_KEYS = (
    frozenset(
        {"daily_usd", "monthly_usd", "session_usd", "session_tokens", "group", "secret_sha256"}
    )
    | _BRAKE_KEYS
    | _QUOTA_KEYS
)
_GROUP_KEYS = frozenset({"daily_usd", "monthly_usd", "monthly_tokens"})
_TOP_KEYS = frozenset(
    {
        "timezone",
        "ledger",
        "defaults",
        "agents",
        "groups",
        "prices",
        "allow_unmetered_routes",
        "allow_server_tools",
        "access",
        "identify",
        "alerts",
        "fleet",
    }
)
SERVER_TOOLS = frozenset(
    {
        "web_search",
        "web_fetch",
        "code_execution",
        "file_search",
        "image_generation",
        "mcp",
        "url_context",
        "google_maps",
        "tool_search",
    }
)
# Group names share the agent names' alphabet: they appear in messages and commands too.
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PRICE_KEYS = frozenset(
    {
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "cache_write_usd_per_mtok",
        "max_output_tokens",
        "price_as",
        "reasons_unseen",
    }
)


@dataclass(frozen=True)
class AgentLimits:
    """Limits of one agent; ``None`` means "not set here, inherit"."""

    daily_nanos: int | None = None
    monthly_nanos: int | None = None
    session_nanos: int | None = None
    session_tokens: int | None = None
    group: str | None = None
    # Brakes: None inherits; 0 (or [] for backoff steps) turns a brake off.
    loop_repeats: int | None = None
    loop_window_s: int | None = None
    backoff_steps_s: tuple[int, ...] | None = None
    calls_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    burn_nanos_per_min: int | None = None
    throttle: bool | None = None
    # The monthly token bucket and the rewrites that keep an agent going.
    monthly_tokens: int | None = None
    downgrade_below: Decimal | None = None
    downgrade: Mapping[str, str] | None = None
    keep_downgraded_when_empty: bool | None = None
    cap_output_min_tokens: int | None = None  # set: cap_output is on, with this minimum


@dataclass(frozen=True)
class GroupLimits:
    """Limits several agents share (``group = "NAME"`` in their tables)."""

    daily_nanos: int | None = None
    monthly_nanos: int | None = None
    monthly_tokens: int | None = None  # the group's token bucket, when its agents have none


@dataclass(frozen=True)
class AgentPolicy:
    """Everything the configuration says about one agent, worked out once."""

    daily_nanos: int
    limits: Limits
    brakes: Brakes
    quota: Quota
    cap_output_minimum: int | None


@dataclass(frozen=True)
class Config:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    ledger: LedgerLocation | None = None  # a file, or a postgresql:// URL
    defaults: AgentLimits = AgentLimits(daily_nanos=DEFAULT_DAILY_NANOS)
    agents: Mapping[str, AgentLimits] = field(default_factory=dict)
    groups: Mapping[str, GroupLimits] = field(default_factory=dict)
    prices: Mapping[str, OverridePrice] = field(default_factory=dict)  # model (or "*") → price
    # "POST /v1/files", "POST /v1/uploads/*": routes on LLM hosts let through without metering.
    allow_unmetered_routes: tuple[str, ...] = ()
    # Server-side tools let through although their per-use fees and results are not held.
    allow_server_tools: frozenset[str] = frozenset()
    access: Access = field(default_factory=Access)
    identify: IdentifyRules = field(default_factory=IdentifyRules)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    # agent → SHA-256 (hex) of its proxy secret; 'spendbrake agent add' keeps others in the ledger.
    agent_secrets: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None

    def allows_unmetered(self, method: str, path: str) -> bool:
        route = f"{method.upper()} {path.split('?', 1)[0]}"
        return any(
            route.startswith(allowed[:-1]) if allowed.endswith("*") else route == allowed
            for allowed in self.allow_unmetered_routes
        )

    def policy(self, agent: str) -> AgentPolicy:
        return AgentPolicy(
            daily_nanos=self.daily_limit(agent),
            limits=self.limits(agent),
            brakes=self.brakes(agent),
            quota=self.quota(agent),
            cap_output_minimum=self.cap_output_minimum(agent),
        )

    def daily_limit(self, agent: str) -> int:
        """The configured daily limit in nanos (a run-time override in the ledger wins over it)."""
        daily = self._setting(agent, "daily_nanos")
        return daily if isinstance(daily, int) else DEFAULT_DAILY_NANOS

    def limits(self, agent: str) -> Limits:
        """Every other window the agent's calls must fit, as configured (run-time overrides in
        the ledger win over these)."""
        group = self._setting(agent, "group")
        shared = self.groups.get(group) if isinstance(group, str) else None
        quota = self.quota(agent)
        return Limits(
            monthly_nanos=self._int_setting(agent, "monthly_nanos"),
            session_nanos=self._int_setting(agent, "session_nanos"),
            session_tokens=self._int_setting(agent, "session_tokens"),
            group=group if isinstance(group, str) else "",
            group_daily_nanos=shared.daily_nanos if shared else None,
            group_monthly_nanos=shared.monthly_nanos if shared else None,
            # A bucket that keeps the downgraded model when empty never refuses.
            monthly_tokens=None
            if quota.keep_downgraded_when_empty or quota.group
            else quota.monthly_tokens,
            group_monthly_tokens=None
            if quota.keep_downgraded_when_empty or not quota.group
            else quota.monthly_tokens,
            keep_downgraded_when_empty=quota.keep_downgraded_when_empty,
        )

    def brakes(self, agent: str) -> Brakes:
        """The agent's brakes: its own settings, else [defaults], else the built-in ones (loop
        and backoff on, the others off)."""
        built_in = Brakes()

        def setting(name: str, fallback: int | None) -> int | None:
            value = self._int_setting(agent, name)
            return fallback if value is None else (value or None)  # 0 turns it off

        own = self.agents.get(agent)
        steps = own.backoff_steps_s if own and own.backoff_steps_s is not None else None
        if steps is None:
            steps = self.defaults.backoff_steps_s
        window = self._int_setting(agent, "loop_window_s")
        return Brakes(
            loop_repeats=setting("loop_repeats", built_in.loop_repeats),
            loop_window_s=window if window is not None else built_in.loop_window_s,
            backoff_steps_s=built_in.backoff_steps_s if steps is None else steps,
            calls_per_minute=setting("calls_per_minute", None),
            tokens_per_minute=setting("tokens_per_minute", None),
            max_concurrent=setting("max_concurrent", None),
            burn_nanos_per_min=setting("burn_nanos_per_min", None),
            throttle=bool(self._setting(agent, "throttle")),
        )

    def quota(self, agent: str) -> Quota:
        own, defaults = self.agents.get(agent), self.defaults

        def pick(name: str) -> Any:
            value = getattr(own, name) if own is not None else None
            return value if value is not None else getattr(defaults, name)

        # The bucket: the agent's own, else its group's shared one, else [defaults].
        own_bucket = own.monthly_tokens if own is not None else None
        group = self._setting(agent, "group")
        shared = self.groups.get(group) if isinstance(group, str) else None
        if shared is not None and (own_bucket is not None or shared.monthly_tokens is None):
            shared = None
        if own_bucket is None and shared is None:
            own_bucket = defaults.monthly_tokens
        return Quota(
            monthly_tokens=own_bucket if shared is None else shared.monthly_tokens,
            group=group if shared is not None and isinstance(group, str) else "",
            downgrade_below=pick("downgrade_below"),
            downgrade=pick("downgrade") or {},
            keep_downgraded_when_empty=bool(pick("keep_downgraded_when_empty")),
        )

    def cap_output_minimum(self, agent: str) -> int | None:
        """With ``cap_output`` on: the fewest output tokens a capped call may keep."""
        return self._int_setting(agent, "cap_output_min_tokens") or None  # 0: set off

    def _setting(self, agent: str, name: str) -> int | str | None:
        """The agent's own value, else the [defaults] one."""
        own = self.agents.get(agent)
        value: int | str | None = getattr(own, name) if own is not None else None
        if value is None:
            value = getattr(self.defaults, name)
        return value

    def _int_setting(self, agent: str, name: str) -> int | None:
        value = self._setting(agent, name)
        return value if isinstance(value, int) else None


def load_config(path: Path | None) -> Config:
    """Read ``path``, or return the embedded defaults when ``path`` is None."""
    if path is None:
        return Config()
    path = path.expanduser()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, source=path)


def parse_config(data: Mapping[str, Any], *, source: Path | None = None) -> Config:
    where = str(source) if source else "config"
    reject_unknown(data, _TOP_KEYS, where, "")

    tz_name = data.get("timezone", "UTC")
    try:
        timezone = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: timezone {tz_name!r} is not an IANA time zone (e.g. 'Europe/Berlin')"
        ) from None

    ledger = data.get("ledger")
    if ledger is not None and not isinstance(ledger, str):
        raise ConfigError(f"{where}: ledger must be a path string, not {ledger!r}")

    defaults = _parse_limits(data.get("defaults", {}), where, "defaults")
    if defaults.daily_nanos is None:
        defaults = replace(defaults, daily_nanos=DEFAULT_DAILY_NANOS)

    agents_table = data.get("agents", {})
    if not isinstance(agents_table, Mapping):
        raise ConfigError(f"{where}: [agents] must be a table of [agents.NAME] tables")
    agents = {
        name: _parse_limits(table, where, f"agents.{name}") for name, table in agents_table.items()
    }
    groups_table = data.get("groups", {})
    if not isinstance(groups_table, Mapping):
        raise ConfigError(f"{where}: [groups] must be a table of [groups.NAME] tables")
    groups = {
        name: _parse_group(name, table, where, f"groups.{name}")
        for name, table in groups_table.items()
    }
    named = [("defaults", defaults), *((f"agents.{a}", own) for a, own in agents.items())]
    for section, limits in named:
        if limits.group is not None and limits.group not in groups:
            raise ConfigError(
                f"{where}: {section}.group is {limits.group!r}, "
                f"but there is no [groups.{limits.group}]"
            )
    try:
        ledger_path = parse_location(ledger) if ledger else None
    except BadLedgerLocation as e:
        raise ConfigError(f"{where}: {e}") from None
    if isinstance(ledger_path, Path) and not ledger_path.is_absolute() and source is not None:
        ledger_path = source.parent / ledger_path  # relative to the config file, not the cwd
    prices_table = data.get("prices", {})
    if not isinstance(prices_table, Mapping):
        raise ConfigError(f'{where}: [prices] must be a table of [prices."MODEL"] tables')
    prices = {
        model: _parse_price(entry, where, f'prices."{model}"')
        for model, entry in prices_table.items()
    }
    access = parse_access(data.get("access"), where)
    identify = parse_identify(data.get("identify"), where)
    alerts = parse_alerts(data.get("alerts"), where)
    fleet = parse_fleet(data.get("fleet"), where, source.parent if source else None)
    return Config(
        timezone=timezone,
        ledger=ledger_path,
        defaults=defaults,
        agents=agents,
        groups=groups,
        prices=prices,
        allow_unmetered_routes=_parse_routes(data.get("allow_unmetered_routes", []), where),
        allow_server_tools=_parse_server_tools(data.get("allow_server_tools", []), where),
        access=access,
        identify=identify,
        alerts=alerts,
        fleet=fleet,
        agent_secrets=_parse_secrets(agents_table, where),
        source=source,
    )


_ROUTE = re.compile(r"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /\S*")


def _parse_routes(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _ROUTE.fullmatch(v) for v in value
    ):
        raise ConfigError(
            f'{where}: allow_unmetered_routes must be a list like ["POST /v1/files", '
            '"POST /v1/uploads/*"]'
        )
    return tuple(value)


def _parse_server_tools(value: object, where: str) -> frozenset[str]:
    known = ", ".join(sorted(SERVER_TOOLS))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where}: allow_server_tools must be a list like ["web_search"]')
    for name in value:
        if name not in SERVER_TOOLS:
            raise ConfigError(
                f"{where}: allow_server_tools names {name!r}; the server tools are {known}"
            )
    return frozenset(value)


def _parse_limits(table: object, where: str, section: str) -> AgentLimits:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [{section}] must be a table")
    reject_unknown(table, _AGENT_KEYS, where, f"{section}.")
    group = table.get("group")
    if group is not None and (not isinstance(group, str) or not _GROUP_NAME.fullmatch(group)):
        raise ConfigError(
            f"{where}: {section}.group must name a [groups.NAME] table (letters, digits, '.', "
            "'_' or '-')"
        )
    return AgentLimits(
        daily_nanos=_usd(table, "daily_usd", where, section),
        monthly_nanos=_usd(table, "monthly_usd", where, section),
        session_nanos=_usd(table, "session_usd", where, section),
        session_tokens=_tokens(table, "session_tokens", where, section),
        group=group,
        loop_repeats=_count(table, "loop_repeats", where, section, allow_zero=True),
        loop_window_s=_count(table, "loop_window_s", where, section),
        backoff_steps_s=_steps(table, "backoff_steps_s", where, section),
        calls_per_minute=_count(table, "calls_per_minute", where, section, allow_zero=True),
        tokens_per_minute=_count(table, "tokens_per_minute", where, section, allow_zero=True),
        max_concurrent=_count(table, "max_concurrent", where, section, allow_zero=True),
        burn_nanos_per_min=_usd(table, "burn_usd_per_min", where, section),
        throttle=_flag(table, "throttle", where, section),
        **_parse_quota(table, where, section),
    )


def _parse_secrets(agents_table: Mapping[str, Any], where: str) -> dict[str, str]:
    secrets = {}
    for name, table in agents_table.items():
        value = table.get("secret_sha256")
        if value is None:
            continue
        if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value.lower()):
            raise ConfigError(
                f"{where}: agents.{name}.secret_sha256 is the SHA-256 of the agent's secret in "
                'hex (64 characters), e.g. from: printf %s "$SECRET" | sha256sum'
            )
        secrets[name] = value.lower()
    return secrets


def _flag(table: Mapping[str, Any], key: str, where: str, section: str) -> bool | None:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where}: {section}.{key} is true or false")
    return value


def _parse_quota(table: Mapping[str, Any], where: str, section: str) -> dict[str, Any]:
    share = table.get("downgrade_below")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1
    ):
        raise ConfigError(f"{where}: {section}.downgrade_below must be a share like 0.2")
    downgrade = table.get("downgrade")
    if downgrade is not None and not (
        isinstance(downgrade, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in downgrade.items())
    ):
        raise ConfigError(
            f"{where}: {section}.downgrade must map models to cheaper ones, like "
            '{ "gpt-4o" = "gpt-4o-mini" }'
        )
    empty = table.get("when_quota_empty")
    if empty is not None and empty not in ("refuse", "downgrade"):
        raise ConfigError(f'{where}: {section}.when_quota_empty is "refuse" or "downgrade"')
    cap = table.get("cap_output")
    if cap is not None and not isinstance(cap, bool):
        raise ConfigError(f"{where}: {section}.cap_output is true or false")
    minimum = _count(table, "cap_output_min_tokens", where, section)
    if minimum is not None and not cap:
        raise ConfigError(f"{where}: {section}.cap_output_min_tokens needs cap_output = true")
    return {
        "monthly_tokens": _tokens(table, "monthly_tokens", where, section),
        "downgrade_below": Decimal(str(share)) if share is not None else None,
        "downgrade": dict(downgrade) if downgrade is not None else None,
        "keep_downgraded_when_empty": None if empty is None else empty == "downgrade",
        # 0 records an explicit "cap_output = false", which [defaults] must not turn back on.
        "cap_output_min_tokens": (minimum or DEFAULT_CAP_MINIMUM)
        if cap
        else (0 if cap is False else None),
    }


def _count(
    table: Mapping[str, Any], key: str, where: str, section: str, *, allow_zero: bool = False
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        off = " (0 turns it off)" if allow_zero else ""
        raise ConfigError(f"{where}: {section}.{key} must be a whole number >= {lowest}{off}")
    if key == "loop_repeats" and value == 1:
        raise ConfigError(
            f"{where}: {section}.loop_repeats = 1 would refuse every request; use 2 or more "
            "(0 turns loop detection off)"
        )
    return value


def _steps(table: Mapping[str, Any], key: str, where: str, section: str) -> tuple[int, ...] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 60 for v in value
    ):
        raise ConfigError(
            f"{where}: {section}.{key} must be a list of waits in seconds (0-60), like [1, 5]; "
            "[] turns the backoff brake off"
        )
    return tuple(value)


def _parse_group(name: str, table: object, where: str, section: str) -> GroupLimits:
    if not _GROUP_NAME.fullmatch(name):
        raise ConfigError(f"{where}: [{section}]: a group name is letters, digits, '.', '_', '-'")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [{section}] must be a table")
    reject_unknown(table, _GROUP_KEYS, where, f"{section}.")
    return GroupLimits(
        daily_nanos=_usd(table, "daily_usd", where, section),
        monthly_nanos=_usd(table, "monthly_usd", where, section),
        monthly_tokens=_tokens(table, "monthly_tokens", where, section),
    )


def _usd(table: Mapping[str, Any], key: str, where: str, section: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {section}.{key} must be a dollar amount like 5.00")
    try:
        return parse_usd(value, what=f"{section}.{key}")
    except MoneyError as e:
        raise ConfigError(f"{where}: {e}") from None


def _tokens(table: Mapping[str, Any], key: str, where: str, section: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {section}.{key} must be a whole number of tokens like 50000")
    return value


def _parse_price(entry: object, where: str, section: str) -> OverridePrice:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: [{section}] must be a table")
    reject_unknown(entry, _PRICE_KEYS, where, f"{section}.")

    def rate(key: str) -> Decimal | None:
        value = entry.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {section}.{key} must be a dollar amount like 2.50")
        try:
            return nanos_to_decimal(parse_usd(value, what=f"{section}.{key}"))
        except MoneyError as e:
            raise ConfigError(f"{where}: {e}") from None

    price_as = entry.get("price_as")
    if price_as is not None and (not isinstance(price_as, str) or not price_as):
        raise ConfigError(f"{where}: {section}.price_as must be a model name like 'gpt-4o'")
    input_rate, output_rate = rate("input_usd_per_mtok"), rate("output_usd_per_mtok")
    if price_as is None and (input_rate is None or output_rate is None):
        raise ConfigError(
            f"{where}: [{section}] needs input_usd_per_mtok and output_usd_per_mtok "
            "(or price_as = 'a published model')"
        )
    max_output = entry.get("max_output_tokens")
    if max_output is not None and (
        isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1
    ):
        raise ConfigError(f"{where}: {section}.max_output_tokens must be a positive integer")
    reasons_unseen = entry.get("reasons_unseen")
    if reasons_unseen is not None and not isinstance(reasons_unseen, bool):
        raise ConfigError(f"{where}: {section}.reasons_unseen must be true or false")
    return OverridePrice(
        input_per_mtok=input_rate or Decimal(0),
        output_per_mtok=output_rate or Decimal(0),
        price_as=price_as,
        cached_input_per_mtok=rate("cached_input_usd_per_mtok"),
        cache_write_per_mtok=rate("cache_write_usd_per_mtok"),
        max_output_tokens=max_output,
        reasons_unseen=reasons_unseen,
    )


def default_ledger_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "spendbrake" / "ledger.db"


def resolve_config_path(cli_value: str | os.PathLike[str] | None) -> Path | None:
    """``--config``, else ``$SPENDBRAKE_CONFIG``, else no file (embedded defaults)."""
    value = cli_value or os.environ.get(CONFIG_ENV) or None
    return Path(value).expanduser() if value else None


def resolve_ledger_path(cli_value: str | os.PathLike[str] | None, config: Config) -> LedgerLocation:
    """``--ledger``, else ``$SPENDBRAKE_LEDGER``, else the config's ``ledger``, else the default.
    A path or ``sqlite:///PATH`` is a SQLite file; ``postgresql://...`` a shared database."""
    value = cli_value or os.environ.get(LEDGER_ENV) or None
    if value:
        try:
            return parse_location(value)
        except BadLedgerLocation as e:
            raise ConfigError(str(e)) from None
    return config.ledger or default_ledger_path()
