"""Who may read every agent's spend or change it over the network: the holder of the admin
token (``spendbrake admin-token``), whose SHA-256 alone is in the ledger.

A program sends it as ``Authorization: Bearer TOKEN``. A browser hands it over once (the login
form, or ``?token=`` in a link) and keeps it in a cookie the page's own scripts cannot read
(HttpOnly) and that no other site's page can make the browser send (SameSite=Strict). Only
hashes are compared, in constant time; the token is never logged or stored.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

from spendbrake.agent_keys import secret_hash

COOKIE = "spendbrake_admin"
_COOKIE_DAYS = 30


def presented_token(headers: Mapping[str, str]) -> str:
    """The token a request carries: the bearer token, else the cookie's; "" for none.
    ``headers``: names in lower case."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return cookie_value(headers.get("cookie", ""), COOKIE)


def cookie_value(header: str, name: str) -> str:
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(header)
    except CookieError:
        return ""
    morsel = cookies.get(name)
    return morsel.value if morsel else ""


def is_admin_token(token: str, expected_sha256: str) -> bool:
    return bool(token) and hmac.compare_digest(secret_hash(token), expected_sha256)


def login_cookie(token: str, *, secure: bool) -> str:
    """The Set-Cookie value that keeps the token in the browser. ``secure``: the page came over
    https (through the proxy), so the cookie never travels in the clear."""
    flags = f"Path=/; Max-Age={_COOKIE_DAYS * 86_400}; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={token}; {flags}" + ("; Secure" if secure else "")


def logout_cookie(*, secure: bool) -> str:
    flags = "Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return f"{COOKIE}=; {flags}" + ("; Secure" if secure else "")
