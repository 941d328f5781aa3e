"""Which agent and session a call is counted to."""

import base64

import pytest

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
