"""Which agent and session a call is counted to."""

import base64
import ipaddress

import pytest

from spendbrake.access import IdentifyRules, ProcessInfo, ProcessRule
from spendbrake.agent_keys import secret_hash
from spendbrake.attribution import (
    Identity,
    InvalidIdentity,
    identify,
    parse_basic_credentials,
)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_proxy_auth_user_is_the_agent_and_password_the_session() -> None:
    headers = {"x-spendbrake-agent": "impostor", "x-spendbrake-session": "s2"}
    assert identify(("research-bot", "s1"), headers) == Identity("research-bot", "s1", "proxy-auth")


def test_header_names_the_agent_when_there_are_no_proxy_credentials() -> None:
    headers = {"x-spendbrake-agent": "ci-bot", "x-spendbrake-session": "run-7"}
    assert identify(None, headers) == Identity("ci-bot", "run-7", "header")


def test_the_proxy_password_names_the_session_even_without_a_user_name() -> None:
    headers = {"x-spendbrake-agent": "ci-bot", "x-spendbrake-session": "from-header"}
    assert identify(("", "from-url"), headers) == Identity("ci-bot", "from-url", "header")


def test_otherwise_the_agent_is_default_with_the_unnamed_session() -> None:
    assert identify(None, {}) == Identity("default", "", "default")


@pytest.mark.parametrize("name", ["-lead", "has space", "semi;colon", "x" * 65, "ünï"])
def test_unusable_agent_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidIdentity, match="not usable"):
        identify(None, {"x-spendbrake-agent": name})
    with pytest.raises(InvalidIdentity, match="not usable"):
        identify((name, "session"), {})


def test_sessions_are_printable_ascii() -> None:
    with pytest.raises(InvalidIdentity, match="session id"):
        identify(("bot", "has space"), {})


def test_basic_credentials_keep_colons_in_the_password() -> None:
    assert parse_basic_credentials(basic("bot:a:b")) == ("bot", "a:b")
    assert parse_basic_credentials(basic("bot:")) == ("bot", "")


@pytest.mark.parametrize("value", ["Bearer abc", "Basic !!!", basic("no-colon"), "Basic"])
def test_malformed_credentials_are_ignored(value: str) -> None:
    assert parse_basic_credentials(value) is None


# -- the operator's rules, in their documented order ---------------------------------------------

NODE_OF_CI = ProcessInfo(
    pid=42, name="node", exe="/usr/bin/node", cmdline="node agent.js", user="ci"
)
RULES = IdentifyRules(
    ports={8081: "port-bot"},
    processes=(ProcessRule(agent="ci-agents", name="node", user="ci"),),
    networks=(
        (ipaddress.ip_network("10.1.2.0/24"), "farm-a"),
        (ipaddress.ip_network("10.0.0.0/8"), "farm"),
    ),
)
SECRET = "s3cr3t-made-by-agent-add"
SECRETS = {"research-bot": secret_hash(SECRET)}


def seen(**observed: object) -> Identity:
    """identify() with every rule, and what the proxy observed of the client."""
    credentials = observed.pop("credentials", None)
    headers = observed.pop("headers", {})
    return identify(credentials, headers, rules=RULES, secrets=SECRETS, **observed)  # type: ignore[arg-type]


EVERYTHING = {
    "headers": {"x-spendbrake-agent": "header-bot"},
    "listen_port": 8081,
    "process": NODE_OF_CI,
    "client_ip": "10.1.2.3",
    "api_key_owner": ("key-bot", "…a1f3"),
}


@pytest.mark.parametrize(
    ("dropped", "agent", "source"),
    [
        ((), "header-bot", "header"),
        (("headers",), "port-bot", "listen-port"),
        (("headers", "listen_port"), "ci-agents", "process"),
        (("headers", "listen_port", "process"), "farm-a", "client-network"),
        (("headers", "listen_port", "process", "client_ip"), "key-bot", "api-key"),
        (("headers", "listen_port", "process", "client_ip", "api_key_owner"), "default", "default"),
    ],
)
def test_rules_apply_in_order_header_port_process_network_api_key_default(
    dropped: tuple[str, ...], agent: str, source: str
) -> None:
    observed = {k: v for k, v in EVERYTHING.items() if k not in dropped}
    identity = seen(**observed)
    assert (identity.agent, identity.source) == (agent, source)
    assert identity.why  # a person is told which rule matched


def test_proxy_auth_beats_every_rule() -> None:
    identity = seen(credentials=("plain-bot", "run-1"), **EVERYTHING)
    assert identity == Identity("plain-bot", "run-1", "proxy-auth")


def test_the_most_specific_network_wins_and_the_reason_names_it() -> None:
    assert seen(client_ip="10.1.2.9").agent == "farm-a"
    identity = seen(client_ip="10.9.9.9")
    assert identity.agent == "farm"
    assert identity.why == "client 10.9.9.9 is in 10.0.0.0/8"


def test_a_process_rule_needs_every_pattern_it_gives_to_match() -> None:
    root_node = ProcessInfo(pid=7, name="node", exe="/usr/bin/node", cmdline="node", user="root")
    assert seen(process=root_node).agent == "default"
    identity = seen(process=NODE_OF_CI)
    assert identity.why == "process node (pid 42, user ci) matches name='node', user='ci'"


def test_an_agent_with_a_secret_is_claimed_only_with_it() -> None:
    identity = seen(credentials=("research-bot", SECRET))
    assert identity == Identity("research-bot", "", "proxy-auth")
    assert identity.why == "proxy-auth user 'research-bot', secret verified"
    assert seen(credentials=("research-bot", f"{SECRET}.run-7")).session == "run-7"
    for password in ("", "run-7", SECRET[:-1], f"x{SECRET}", f"{SECRET}x"):
        with pytest.raises(InvalidIdentity, match="not the secret of agent 'research-bot'"):
            seen(credentials=("research-bot", password))
    with pytest.raises(InvalidIdentity, match="has a secret: name it in the proxy URL"):
        seen(headers={"x-spendbrake-agent": "research-bot"})


def test_strict_mode_accepts_nothing_but_a_verified_secret() -> None:
    def strict(**observed: object) -> Identity:
        return seen(strict=True, **observed)

    assert strict(credentials=("research-bot", SECRET)).agent == "research-bot"
    with pytest.raises(InvalidIdentity, match="strict mode: name the agent and its secret"):
        strict(**EVERYTHING)
    with pytest.raises(InvalidIdentity, match="strict mode: agent 'plain-bot' has no secret"):
        strict(credentials=("plain-bot", "anything"))
    # A header can never override the verified proxy-auth identity.
    identity = strict(credentials=("research-bot", SECRET), headers={"x-spendbrake-agent": "x"})
    assert identity.agent == "research-bot"
