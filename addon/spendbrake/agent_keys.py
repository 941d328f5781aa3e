"""Agents' proxy secrets, the admin token and API-key fingerprints: made, hashed and compared
here, and never stored or logged in the clear.

A secret is 256 random bits, so a plain SHA-256 of it is as good as a slow password hash and
costs microseconds per check. An API key is hashed with a key of the ledger's own (HMAC), so the
ledger maps "calls made with key …a1f3" to an agent without ever holding the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

# The proxy password in strict mode is SECRET or SECRET.SESSION; made secrets never contain '.'.
SESSION_SEPARATOR = "."
# Where each provider's SDK puts its API key (OpenAI and compatible hosts, Anthropic, Gemini,
# Azure OpenAI).
_API_KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_password(password: str) -> tuple[str, str]:
    """A strict-mode proxy password → (secret, session)."""
    secret, _, session = password.partition(SESSION_SEPARATOR)
    return secret, session


def secret_matches(secret: str, expected_hashes: Iterable[str]) -> bool:
    if not secret:
        return False
    seen = secret_hash(secret)
    # Every candidate is compared, in constant time each: no early exit to time.
    return sum(hmac.compare_digest(seen, expected) for expected in expected_hashes) > 0


def api_key_hash(hash_key: bytes, api_key: str) -> str:
    return hmac.new(hash_key, api_key.encode(), hashlib.sha256).hexdigest()


def api_key_hint(api_key: str) -> str:
    """What people recognise a key by (as providers' dashboards show it): its last 4 characters."""
    return "…" + api_key[-4:]


def api_key_of_request(headers: Mapping[str, str], url: str) -> str | None:
    """The provider API key a request carries, wherever its SDK put it."""
    for name in _API_KEY_HEADERS:
        value = headers.get(name, "").strip()
        if not value:
            continue
        scheme, _, rest = value.partition(" ")
        if name == "authorization":
            if scheme.lower() != "bearer" or not rest.strip():
                continue
            value = rest.strip()
        return value
    keys = parse_qs(urlsplit(url).query).get("key")  # Gemini's ?key=
    return keys[0] if keys else None
