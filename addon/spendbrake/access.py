"""Who may use the proxy, and the operator's rules that name the agent of a call.

Two config sections, parsed here so ``config`` stays about limits:

```toml
[access]
strict = true                         # every call needs its agent's secret, else 407
allow_clients = ["10.0.0.0/8"]        # networks that may use the proxy at all

[identify]
ports = { "8081" = "research-bot" }   # a listener per agent, for clients without credentials
networks = { "10.1.2.0/24" = "build-farm" }

[[identify.processes]]                # loopback clients, by the process that opened the socket
agent = "ci-agents"
name = "node"                         # glob patterns; every one given must match
user = "ci"
```

Without ``allow_clients`` only loopback clients are served, or every client in strict mode
(each call then proves its agent with a secret). Agents' secrets themselves are kept hashed
(``[agents.NAME] secret_sha256`` or ``spendbrake agent add``), never here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from spendbrake.config_errors import ConfigError, reject_unknown

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ACCESS_KEYS = frozenset({"strict", "allow_clients"})
_IDENTIFY_KEYS = frozenset({"ports", "networks", "processes"})
_PROCESS_KEYS = frozenset({"agent", "name", "exe", "cmdline", "user"})


class AccessConfigError(ConfigError):
    """An [access] or [identify] value cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class ProcessInfo:
    """The process at the other end of a loopback client's connection."""

    pid: int
    name: str
    exe: str
    cmdline: str  # the arguments joined by spaces
    user: str


@dataclass(frozen=True)
class ProcessRule:
    """Calls from a matching process belong to ``agent``; None matches anything."""

    agent: str
    name: str | None = None
    exe: str | None = None
    cmdline: str | None = None
    user: str | None = None

    def matches(self, process: ProcessInfo) -> bool:
        wanted = (
            (self.name, process.name),
            (self.exe, process.exe),
            (self.cmdline, process.cmdline),
            (self.user, process.user),
        )
        return all(pattern is None or fnmatchcase(seen, pattern) for pattern, seen in wanted)

    def describe(self) -> str:
        parts = [f"{key}={value!r}" for key, value in self._patterns() if value is not None]
        return ", ".join(parts)

    def _patterns(self) -> tuple[tuple[str, str | None], ...]:
        return (
            ("name", self.name),
            ("exe", self.exe),
            ("cmdline", self.cmdline),
            ("user", self.user),
        )


@dataclass(frozen=True)
class IdentifyRules:
    """The operator's rules, tried in this order after proxy-auth and the header."""

    ports: Mapping[int, str] = field(default_factory=dict)
    processes: tuple[ProcessRule, ...] = ()
    networks: tuple[tuple[Network, str], ...] = ()  # most specific first

    def with_ports(self, ports: Mapping[int, str]) -> IdentifyRules:
        """These rules with more listeners (``--listen``), which win over the config's."""
        return replace(self, ports={**self.ports, **ports})

    def agent_of_port(self, port: int | None) -> str | None:
        return self.ports.get(port) if port is not None else None

    def rule_for_process(self, process: ProcessInfo | None) -> ProcessRule | None:
        if process is None:
            return None
        return next((rule for rule in self.processes if rule.matches(process)), None)

    def network_of(self, client_ip: str | None) -> tuple[Network, str] | None:
        address = parse_ip(client_ip)
        if address is None:
            return None
        return next(
            ((net, agent) for net, agent in self.networks if address in net),
            None,
        )


@dataclass(frozen=True)
class Access:
    strict: bool = False
    allow_clients: tuple[Network, ...] | None = None  # None: loopback, or anyone when strict

    def client_allowed(self, client_ip: str | None) -> bool:
        if self.allow_clients is None and self.strict:
            return True
        address = parse_ip(client_ip)
        if address is None:
            return False
        return any(address in net for net in self.allow_clients or LOOPBACK)

    @property
    def open_to_the_network(self) -> bool:
        """Whether listening beyond loopback is allowed: strict mode or an explicit allow-list."""
        return self.strict or self.allow_clients is not None


def parse_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a client's peername gives it; IPv4 mapped into IPv6 becomes IPv4."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """Whether a listen host accepts only local clients ("" and 0.0.0.0 mean every interface)."""
    if host == "localhost":
        return True
    address = parse_ip(host.strip("[]"))
    return address is not None and address.is_loopback


# -- parsing ----------------------------------------------------------------------------------


def parse_access(table: object, where: str) -> Access:
    if table is None:
        return Access()
    if not isinstance(table, Mapping):
        raise AccessConfigError(f"{where}: [access] must be a table")
    reject_unknown(table, _ACCESS_KEYS, where, "access.", AccessConfigError)
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        raise AccessConfigError(f"{where}: access.strict is true or false")
    allow = table.get("allow_clients")
    networks = None
    if allow is not None:
        if not isinstance(allow, list) or not all(isinstance(n, str) for n in allow):
            raise AccessConfigError(
                f"{where}: access.allow_clients is a list of networks, "
                'e.g. ["127.0.0.1", "10.0.0.0/8"]'
            )
        networks = tuple(_network(n, where, "access.allow_clients") for n in allow)
    return Access(strict=strict, allow_clients=networks)


def parse_identify(table: object, where: str) -> IdentifyRules:
    if table is None:
        return IdentifyRules()
    if not isinstance(table, Mapping):
        raise AccessConfigError(f"{where}: [identify] must be a table")
    reject_unknown(table, _IDENTIFY_KEYS, where, "identify.", AccessConfigError)
    ports = {
        _port(port, where): _agent(agent, where, f'identify.ports."{port}"')
        for port, agent in _table(table.get("ports", {}), where, "identify.ports").items()
    }
    networks = [
        (
            _network(net, where, "identify.networks"),
            _agent(agent, where, f'identify.networks."{net}"'),
        )
        for net, agent in _table(table.get("networks", {}), where, "identify.networks").items()
    ]
    networks.sort(key=lambda pair: pair[0].prefixlen, reverse=True)  # most specific wins
    processes = table.get("processes", [])
    if not isinstance(processes, list):
        raise AccessConfigError(f"{where}: identify.processes is a list of [[identify.processes]]")
    return IdentifyRules(
        ports=ports,
        processes=tuple(_process_rule(rule, where, i) for i, rule in enumerate(processes)),
        networks=tuple(networks),
    )


def parse_port_agents(specs: list[str] | tuple[str, ...]) -> dict[int, str]:
    """``["8081=research-bot"]`` (option ``spendbrake_port_agents``) → {8081: "research-bot"}."""
    agents: dict[int, str] = {}
    for spec in specs:
        port, sep, agent = spec.partition("=")
        if not sep:
            raise AccessConfigError(f"{spec!r} is not PORT=AGENT (e.g. 8081=research-bot)")
        agents[_port(port.strip(), "spendbrake_port_agents")] = _agent(
            agent.strip(), "spendbrake_port_agents", spec
        )
    return agents


def _process_rule(rule: object, where: str, index: int) -> ProcessRule:
    section = f"identify.processes[{index}]"
    if not isinstance(rule, Mapping):
        raise AccessConfigError(f"{where}: {section} must be a table")
    reject_unknown(rule, _PROCESS_KEYS, where, f"{section}.", AccessConfigError)
    patterns = {key: rule.get(key) for key in ("name", "exe", "cmdline", "user")}
    for key, value in patterns.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise AccessConfigError(f"{where}: {section}.{key} is a glob pattern string")
    if all(value is None for value in patterns.values()):
        raise AccessConfigError(
            f"{where}: {section} matches every process: give name, exe, cmdline or user"
        )
    return ProcessRule(agent=_agent(rule.get("agent"), where, f"{section}.agent"), **patterns)


def _table(value: object, where: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AccessConfigError(f"{where}: {key} must be a table")
    return value


def _agent(value: object, where: str, key: str) -> str:
    if not isinstance(value, str) or not _AGENT_NAME.fullmatch(value):
        raise AccessConfigError(
            f"{where}: {key} must name an agent (1-64 letters, digits, '.', '_' or '-'), "
            f"not {value!r}"
        )
    return value


def _port(value: object, where: str) -> int:
    text = str(value)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AccessConfigError(f"{where}: {text!r} is not a TCP port (1-65535)")
    return int(text)


def _network(value: str, where: str, key: str) -> Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise AccessConfigError(
            f"{where}: {key}: {value!r} is not an address or network (e.g. 10.0.0.0/8)"
        ) from None
