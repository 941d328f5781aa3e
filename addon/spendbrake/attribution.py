"""Who is calling: the agent and session of a call, from what the client sent the proxy.

Order (first match wins), as documented in docs/security.md:

1. the proxy-auth user name (``http://agent:SESSION@127.0.0.1:8080``); an agent with a secret
   only with its secret (``http://agent:SECRET.SESSION@…``);
2. the ``X-Spendbrake-Agent`` header (never for an agent with a secret);
3. the listener's port (``[identify] ports``, ``spendbrake up --listen HOST:PORT=AGENT``);
4. the client's process, for loopback clients (``[[identify.processes]]``);
5. the client's network (``[identify] networks``);
6. the provider API key the call carries (``spendbrake agent key``), by its keyed hash;
7. else ``default``.

In strict mode only 1 counts, and only with a verified secret. The session is the proxy-auth
password (the part after the secret's '.' for an agent with a secret), else the
``X-Spendbrake-Session`` header, else the agent's unnamed session ("").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from spendbrake.access import IdentifyRules, ProcessInfo
from spendbrake.agent_keys import secret_matches, split_password

AGENT_HEADER = "x-spendbrake-agent"
SESSION_HEADER = "x-spendbrake-session"
IDENTIFICATION_HEADERS = (AGENT_HEADER, SESSION_HEADER)
DEFAULT_AGENT = "default"
NO_RULES = IdentifyRules()

# Agent names end up in headers, messages and shell commands ("spendbrake limit set NAME"):
# keep them to characters that need no quoting anywhere.
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SESSION_ID = re.compile(r"[\x21-\x7e]{0,128}")  # printable ASCII, no spaces


class InvalidIdentity(ValueError):
    """The client named an agent or session that cannot be used."""


@dataclass(frozen=True)
class Identity:
    agent: str
    session: str
    # proxy-auth, header, listen-port, process, client-network, api-key or default
    source: str
    why: str = field(default="", compare=False)  # for people: which rule, and what matched


def parse_basic_credentials(header_value: str) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); the password may contain ':'."""
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def valid_agent_name(name: str) -> bool:
    return _AGENT_NAME.fullmatch(name) is not None


def identify(
    proxy_credentials: tuple[str, str] | None,
    headers: Mapping[str, str],
    *,
    default_agent: str = DEFAULT_AGENT,
    default_session: str = "",
    rules: IdentifyRules = NO_RULES,
    strict: bool = False,
    secrets: Mapping[str, str] | None = None,
    listen_port: int | None = None,
    process: ProcessInfo | None = None,
    client_ip: str | None = None,
    api_key_owner: tuple[str, str] | None = None,
) -> Identity:
    """``secrets`` maps agents to the SHA-256 of their secret; ``api_key_owner`` is the agent
    and hint ("…a1f3") the call's API key is registered to. The defaults stand for whoever
    runs the proxy: ``spendbrake run`` names its command's agent and session there, so a call
    that names neither still counts in the run."""
    secrets = secrets or {}
    user, password = proxy_credentials or ("", "")
    session = password
    if user:
        agent, source = user, "proxy-auth"
        if user in secrets:
            secret, session = split_password(password)
            if not secret_matches(secret, [secrets[user]]):
                raise InvalidIdentity(
                    f"the proxy password is not the secret of agent {user!r}: use "
                    f"http://{user}:SECRET@HOST:PORT with the secret 'spendbrake agent add' "
                    "printed (SECRET.SESSION to name a session)"
                )
            why = f"proxy-auth user {user!r}, secret verified"
        elif strict:
            raise InvalidIdentity(
                f"strict mode: agent {user!r} has no secret; give it one with "
                f"'spendbrake agent add {user}'"
            )
        else:
            why = f"proxy-auth user {user!r}"
    elif strict:
        raise InvalidIdentity(
            "strict mode: name the agent and its secret in the proxy URL, "
            "http://AGENT:SECRET@HOST:PORT"
        )
    else:
        agent, source, why = _agent_by_rule(
            headers, rules, listen_port, process, client_ip, api_key_owner, default_agent
        )
        if source == "header" and agent in secrets:
            raise InvalidIdentity(
                f"agent {agent!r} has a secret: name it in the proxy URL with its secret "
                "(http://AGENT:SECRET@HOST:PORT), not in a header"
            )
    session = session or headers.get(SESSION_HEADER, "") or default_session
    if not _AGENT_NAME.fullmatch(agent):
        raise InvalidIdentity(
            f"agent name {agent!r} is not usable: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not _SESSION_ID.fullmatch(session):
        raise InvalidIdentity("session id must be at most 128 printable ASCII characters")
    return Identity(agent=agent, session=session, source=source, why=why)


def _agent_by_rule(
    headers: Mapping[str, str],
    rules: IdentifyRules,
    listen_port: int | None,
    process: ProcessInfo | None,
    client_ip: str | None,
    api_key_owner: tuple[str, str] | None,
    default_agent: str,
) -> tuple[str, str, str]:
    """(agent, source, why) from the first rule after proxy-auth that matches."""
    if named := headers.get(AGENT_HEADER):
        return named, "header", f"header X-Spendbrake-Agent: {named}"
    if by_port := rules.agent_of_port(listen_port):
        return by_port, "listen-port", f"the listener on port {listen_port} is {by_port}'s"
    if process is not None and (rule := rules.rule_for_process(process)):
        why = (
            f"process {process.name} (pid {process.pid}, user {process.user or '?'}) "
            f"matches {rule.describe()}"
        )
        return rule.agent, "process", why
    if by_network := rules.network_of(client_ip):
        network, agent = by_network
        return agent, "client-network", f"client {client_ip} is in {network}"
    if api_key_owner is not None:
        agent, hint = api_key_owner
        return agent, "api-key", f"API key {hint} is registered to {agent}"
    return default_agent, "default", "nothing named an agent: the default agent"
