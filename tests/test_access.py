"""Who may use the proxy, and the [access] and [identify] sections that say so."""

import ipaddress

import pytest

from spendbrake.access import (
    Access,
    AccessConfigError,
    IdentifyRules,
    ProcessRule,
    is_loopback_host,
    parse_access,
    parse_identify,
    parse_port_agents,
)
from spendbrake.config import ConfigError, parse_config

WHERE = "spendbrake.toml"


def test_by_default_only_loopback_clients_are_served() -> None:
    access = Access()
    assert access.client_allowed("127.0.0.1")
    assert access.client_allowed("127.9.9.9")
    assert access.client_allowed("::1")
    assert access.client_allowed("::ffff:127.0.0.1")  # a dual-stack listener's view of IPv4
    assert not access.client_allowed("10.0.0.5")
    assert not access.client_allowed("192.168.1.20")
    assert not access.client_allowed(None)
    assert not access.open_to_the_network


def test_an_allow_list_replaces_loopback_and_strict_mode_alone_allows_everyone() -> None:
    listed = parse_access({"allow_clients": ["10.0.0.0/8", "192.168.1.7"]}, WHERE)
    assert listed.client_allowed("10.3.2.1")
    assert listed.client_allowed("192.168.1.7")
    assert not listed.client_allowed("192.168.1.8")
    assert not listed.client_allowed("127.0.0.1")  # the list is the whole truth
    assert listed.open_to_the_network
    strict = parse_access({"strict": True}, WHERE)
    assert strict.client_allowed("203.0.113.9")  # each call proves its agent instead
    assert strict.open_to_the_network
    both = parse_access({"strict": True, "allow_clients": ["10.0.0.0/8"]}, WHERE)
    assert not both.client_allowed("203.0.113.9")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("", False),  # every interface
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("proxy.example.com", False),
    ],
)
def test_which_listen_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_identify_rules_parse_from_config() -> None:
    config = parse_config(
        {
            "identify": {
                "ports": {"8081": "research-bot"},
                "networks": {"10.0.0.0/8": "farm", "10.1.2.0/24": "farm-a"},
                "processes": [{"agent": "ci-agents", "name": "node", "user": "ci"}],
            },
            "access": {"strict": False, "allow_clients": ["10.0.0.0/8"]},
        }
    )
    rules = config.identify
    assert rules.ports == {8081: "research-bot"}
    assert rules.processes == (ProcessRule(agent="ci-agents", name="node", user="ci"),)
    # The most specific network is tried first, whatever the order in the file.
    assert [str(net) for net, _ in rules.networks] == ["10.1.2.0/24", "10.0.0.0/8"]
    assert config.access.allow_clients == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("section", "table", "message"),
    [
        ("access", {"strict": "yes"}, "access.strict is true or false"),
        ("access", {"allow_clients": "10.0.0.0/8"}, "access.allow_clients is a list"),
        ("access", {"allow_clients": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not an address"),
        ("access", {"open": True}, "unknown key access.open"),
        ("identify", {"ports": {"80a": "bot"}}, "'80a' is not a TCP port"),
        ("identify", {"ports": {"8081": "bad name"}}, "must name an agent"),
        ("identify", {"networks": {"nowhere": "bot"}}, "'nowhere' is not an address"),
        ("identify", {"processes": [{"agent": "bot"}]}, "matches every process"),
        ("identify", {"processes": [{"agent": "bot", "pid": 4}]}, "identify.processes[0].pid"),
        ("identify", {"processes": {"agent": "bot"}}, "a list of [[identify.processes]]"),
    ],
)
def test_bad_access_settings_are_errors_that_name_the_key(
    section: str, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config({section: table})


def test_agent_secrets_in_config_are_sha256_hashes() -> None:
    digest = "a" * 64
    config = parse_config({"agents": {"research-bot": {"daily_usd": 1, "secret_sha256": digest}}})
    assert config.agent_secrets == {"research-bot": digest}
    assert config.daily_limit("research-bot") == 1_000_000_000
    with pytest.raises(ConfigError, match=r"agents.bot.secret_sha256 is the SHA-256"):
        parse_config({"agents": {"bot": {"secret_sha256": "my-password"}}})


def test_listener_agents_from_the_command_line() -> None:
    assert parse_port_agents(["8081=research-bot", "8082 = ci"]) == {
        8081: "research-bot",
        8082: "ci",
    }
    with pytest.raises(AccessConfigError, match="is not PORT=AGENT"):
        parse_port_agents(["8081"])
    rules = IdentifyRules(ports={8081: "from-config", 8083: "kept"}).with_ports({8081: "cli"})
    assert rules.ports == {8081: "cli", 8083: "kept"}


def test_sections_that_are_not_tables_are_errors() -> None:
    with pytest.raises(AccessConfigError, match=r"\[access\] must be a table"):
        parse_access("strict", WHERE)
    with pytest.raises(AccessConfigError, match=r"\[identify\] must be a table"):
        parse_identify(["ports"], WHERE)
