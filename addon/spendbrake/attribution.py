"""Who is calling: the agent and session of a call, from what the client sent the proxy.

Order (first match wins): the proxy-auth user name (``http://agent:SESSION@127.0.0.1:8080``),
the ``X-Spendbrake-Agent`` header, else ``default``. The session is the proxy-auth password,
else the ``X-Spendbrake-Session`` header, else the agent's unnamed session ("").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

AGENT_HEADER = "x-spendbrake-agent"
SESSION_HEADER = "x-spendbrake-session"
IDENTIFICATION_HEADERS = (AGENT_HEADER, SESSION_HEADER)
DEFAULT_AGENT = "default"

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
    source: str  # "proxy-auth", "header" or "default": why this agent


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


def identify(
    proxy_credentials: tuple[str, str] | None,
    headers: Mapping[str, str],
    *,
    default_agent: str = DEFAULT_AGENT,
    default_session: str = "",
) -> Identity:
    """The defaults stand for whoever runs the proxy: ``spendbrake run`` names its command's
    agent and session there, so a call that names neither still counts in the run."""
    user, password = proxy_credentials or ("", "")
    if user:
        agent, source = user, "proxy-auth"
    elif headers.get(AGENT_HEADER):
        agent, source = headers[AGENT_HEADER], "header"
    else:
        agent, source = default_agent, "default"
    session = password or headers.get(SESSION_HEADER, "") or default_session
    if not _AGENT_NAME.fullmatch(agent):
        raise InvalidIdentity(
            f"agent name {agent!r} is not usable: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not _SESSION_ID.fullmatch(session):
        raise InvalidIdentity("session id must be at most 128 printable ASCII characters")
    return Identity(agent=agent, session=session, source=source)
