"""The ``[alerts]`` section: when to tell people, and where.

Parsed here so ``config`` stays about limits:

```toml
[alerts]
thresholds = [0.5, 0.8, 1.0]          # shares of each agent's daily and monthly limit
burn_usd_per_min = 1.00               # tell (not suspend) above this burn rate
heartbeat_silent_after_s = 600        # an agent that was calling and then went quiet this long
heartbeat_busy_for_s = 3600           # an agent calling without a pause this long
webhooks = [
    { url = "https://hooks.slack.com/services/T000/B000/XXXX", format = "slack" },
    { url = "https://alerts.example.com/spendbrake", format = "json" },
]

[alerts.agents.research-bot]          # an agent's own thresholds and burn rate
thresholds = [0.9, 1.0]
```

Every alert also goes to the proxy's log. A webhook URL is a secret of a kind (a Slack URL
carries its token in the path): only its scheme and host are ever logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from spendbrake.config_errors import ConfigError, reject_unknown
from spendbrake.money import MoneyError, parse_usd

DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
FORMATS = ("json", "slack")
_ALERTS_KEYS = frozenset(
    {
        "thresholds",
        "burn_usd_per_min",
        "webhooks",
        "delivery_attempts",
        "retry_backoff_s",
        "heartbeat_silent_after_s",
        "heartbeat_busy_for_s",
        "heartbeat_gap_s",
        "heartbeat_every_s",
        "agents",
    }
)
_AGENT_KEYS = frozenset({"thresholds", "burn_usd_per_min"})
_WEBHOOK_KEYS = frozenset({"url", "format"})
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AlertsConfigError(ConfigError):
    """An [alerts] value cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Webhook:
    url: str
    format: str = "json"  # "json" (spendbrake's own object) or "slack" (incoming webhook)

    @property
    def target(self) -> str:
        """What may be shown of the URL: its scheme and host, never the path or query (a
        Slack URL's path is its token)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"

    def __repr__(self) -> str:  # a repr in a log or a traceback must not carry the token
        return f"Webhook({self.target!r}, format={self.format!r})"


@dataclass(frozen=True)
class AgentAlerts:
    """One agent's own settings; ``None`` inherits [alerts]."""

    thresholds: tuple[Decimal, ...] | None = None
    burn_nanos_per_min: int | None = None


@dataclass(frozen=True)
class AlertsConfig:
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    burn_nanos_per_min: int | None = None  # None: no burn-rate alert
    webhooks: tuple[Webhook, ...] = ()
    delivery_attempts: int = 5
    retry_backoff_s: float = 1.0  # the wait after the first failed attempt; doubles each time
    heartbeat_silent_after_s: int | None = None  # None: not checked
    heartbeat_busy_for_s: int | None = None
    heartbeat_gap_s: int = 60  # a pause longer than this ends a run of calls
    heartbeat_every_s: int = 30
    agents: Mapping[str, AgentAlerts] = field(default_factory=dict)

    def thresholds_for(self, agent: str) -> tuple[Decimal, ...]:
        own = self.agents.get(agent)
        return own.thresholds if own and own.thresholds is not None else self.thresholds

    def burn_for(self, agent: str) -> int | None:
        own = self.agents.get(agent)
        if own and own.burn_nanos_per_min is not None:
            return own.burn_nanos_per_min or None  # 0 turns it off for this agent
        return self.burn_nanos_per_min

    @property
    def heartbeat_on(self) -> bool:
        return self.heartbeat_silent_after_s is not None or self.heartbeat_busy_for_s is not None


def parse_alerts(table: object, where: str) -> AlertsConfig:
    if table is None:
        return AlertsConfig()
    if not isinstance(table, Mapping):
        raise AlertsConfigError(f"{where}: [alerts] must be a table")
    reject_unknown(table, _ALERTS_KEYS, where, "alerts.", AlertsConfigError)
    agents_table = table.get("agents", {})
    if not isinstance(agents_table, Mapping):
        raise AlertsConfigError(f"{where}: [alerts.agents] must be a table of [alerts.agents.NAME]")
    defaults = AlertsConfig()
    thresholds = _thresholds(table, where, "alerts")
    return AlertsConfig(
        thresholds=defaults.thresholds if thresholds is None else thresholds,
        burn_nanos_per_min=_usd(table, "burn_usd_per_min", where, "alerts") or None,
        webhooks=_webhooks(table.get("webhooks", []), where),
        delivery_attempts=_whole(table, "delivery_attempts", where, defaults.delivery_attempts),
        retry_backoff_s=_seconds(table, "retry_backoff_s", where, defaults.retry_backoff_s),
        heartbeat_silent_after_s=_optional_whole(table, "heartbeat_silent_after_s", where),
        heartbeat_busy_for_s=_optional_whole(table, "heartbeat_busy_for_s", where),
        heartbeat_gap_s=_whole(table, "heartbeat_gap_s", where, defaults.heartbeat_gap_s),
        heartbeat_every_s=_whole(table, "heartbeat_every_s", where, defaults.heartbeat_every_s),
        agents={name: _agent(name, own, where) for name, own in agents_table.items()},
    )


def _agent(name: str, table: object, where: str) -> AgentAlerts:
    section = f"alerts.agents.{name}"
    if not _AGENT_NAME.fullmatch(name):
        raise AlertsConfigError(f"{where}: [{section}]: {name!r} is not an agent name")
    if not isinstance(table, Mapping):
        raise AlertsConfigError(f"{where}: [{section}] must be a table")
    reject_unknown(table, _AGENT_KEYS, where, f"{section}.", AlertsConfigError)
    return AgentAlerts(
        thresholds=_thresholds(table, where, section),
        burn_nanos_per_min=_usd(table, "burn_usd_per_min", where, section),
    )


def _thresholds(table: Mapping[str, Any], where: str, section: str) -> tuple[Decimal, ...] | None:
    value = table.get("thresholds")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1 for v in value
    ):
        raise AlertsConfigError(
            f"{where}: {section}.thresholds is a list of shares of a limit above 0 and at most "
            "1, like [0.5, 0.8, 1.0]; [] turns them off"
        )
    return tuple(sorted({Decimal(str(v)) for v in value}))


def _webhooks(value: object, where: str) -> tuple[Webhook, ...]:
    if not isinstance(value, list):
        raise AlertsConfigError(
            f'{where}: alerts.webhooks is a list like [{{ url = "https://...", format = "slack" }}]'
        )
    hooks = []
    for i, entry in enumerate(value):
        section = f"alerts.webhooks[{i}]"
        if not isinstance(entry, Mapping):
            raise AlertsConfigError(f'{where}: {section} is a table like {{ url = "https://..." }}')
        reject_unknown(entry, _WEBHOOK_KEYS, where, f"{section}.", AlertsConfigError)
        url, form = entry.get("url"), entry.get("format", "json")
        if not isinstance(url, str):
            raise AlertsConfigError(f"{where}: {section}.url must be an http:// or https:// URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Never echo the URL: it may hold a token.
            raise AlertsConfigError(f"{where}: {section}.url must be an http:// or https:// URL")
        if form not in FORMATS:
            raise AlertsConfigError(f'{where}: {section}.format is "json" or "slack"')
        hooks.append(Webhook(url=url, format=form))
    return tuple(hooks)


def _whole(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = _optional_whole(table, key, where)
    return default if value is None else value


def _optional_whole(table: Mapping[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AlertsConfigError(f"{where}: alerts.{key} must be a whole number >= 1")
    return value


def _seconds(table: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = table.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise AlertsConfigError(f"{where}: alerts.{key} is seconds above 0, like 1 or 0.5")
    return float(value)


def _usd(table: Mapping[str, Any], key: str, where: str, section: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise AlertsConfigError(f"{where}: {section}.{key} must be a dollar amount like 1.00")
    try:
        return parse_usd(value, what=f"{section}.{key}")
    except MoneyError as e:
        raise AlertsConfigError(f"{where}: {e}") from None
