"""``spendbrake agent …``, ``admin-token`` and ``whoami``: who may claim an agent, and who the
proxy thinks you are.

Secrets and tokens are printed once, when made, and kept only as hashes in the ledger. An API
key is read from standard input, never from the command line (which any local user can read).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from spendbrake import certs
from spendbrake.access_book import access_book_of
from spendbrake.agent_keys import api_key_hash, api_key_hint, new_secret, secret_hash
from spendbrake.attribution import valid_agent_name
from spendbrake.cli import (
    DEFAULT_LISTEN,
    _config_and_ledger_options,
    _ledger_to_change,
    _ledger_to_read,
    _load_config,
    _open_ledger,
    _parse_listen,
    main,
)
from spendbrake.mitm.local_api import LOCAL_HOST


def _actor() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _agent_name(name: str) -> str:
    if not valid_agent_name(name):
        raise click.BadParameter(
            f"{name!r} is not an agent name (1-64 letters, digits, '.', '_' or '-')",
            param_hint="NAME",
        )
    return name


@main.group()
def agent() -> None:
    """Agents' proxy secrets and API keys (kept as hashes in the ledger)."""


@agent.command("add")
@_config_and_ledger_options
@click.argument("name")
@click.option("--rotate", is_flag=True, help="Replace the agent's secret if it has one.")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help="The proxy's address, for the URL printed.",
)
def agent_add(
    config_path: Path | None, ledger_path: Path | None, name: str, rotate: bool, listen: str
) -> None:
    """Give an agent a secret and print its proxy URL (shown once).

    With a secret, the agent can only be claimed with it, and in strict mode only agents with
    one can call at all.

    \b
    Example:
        spendbrake agent add research-bot
    """
    name = _agent_name(name)
    host, port = _parse_listen(listen)
    ledger = _open_ledger(ledger_path, _load_config(config_path))
    try:
        book = access_book_of(ledger)
        if name in book.records().secrets and not rotate:
            raise click.ClickException(
                f"{name} already has a secret; 'spendbrake agent add {name} --rotate' replaces it"
            )
        secret = new_secret()
        book.set_secret(name, secret_hash(secret), _actor())
    finally:
        ledger.close()
    netloc_host = f"[{host}]" if ":" in host else host
    click.echo(f"{name}: a new secret. It is shown only now; the ledger keeps its hash.")
    click.echo(f"  export HTTPS_PROXY=http://{name}:{secret}@{netloc_host}:{port}")
    click.echo(f"  (a session: http://{name}:{secret}.SESSION@{netloc_host}:{port})")


@agent.command("remove")
@_config_and_ledger_options
@click.argument("name")
def agent_remove(config_path: Path | None, ledger_path: Path | None, name: str) -> None:
    """Remove an agent's secret and API keys from the ledger.

    \b
    Example:
        spendbrake agent remove research-bot
    """
    ledger = _ledger_to_change(
        ledger_path, _load_config(config_path), what="secret or API key to remove"
    )
    try:
        book = access_book_of(ledger)
        had_secret = book.remove_secret(name, _actor())
        keys = book.remove_api_keys(name, _actor())
    finally:
        ledger.close()
    if not had_secret and not keys:
        raise click.ClickException(f"{name} has no secret or API key in the ledger")
    click.echo(f"{name}: secret {'removed' if had_secret else 'none'}, {keys} API key(s) removed")


@agent.command("list")
@_config_and_ledger_options
def agent_list(config_path: Path | None, ledger_path: Path | None) -> None:
    """List agents that have a secret or API keys (never the secrets themselves).

    \b
    Example:
        spendbrake agent list
    """
    config = _load_config(config_path)
    with _ledger_to_read(ledger_path, config) as ledger:
        records = access_book_of(ledger).records()
    keys: dict[str, list[str]] = {}
    for owner in records.api_keys.values():
        keys.setdefault(owner.agent, []).append(owner.hint)
    names = sorted({*config.agent_secrets, *records.secrets, *keys})
    if not names:
        click.echo("No agent has a secret or an API key yet: 'spendbrake agent add NAME'.")
        return
    for name in names:
        where = (
            "ledger"
            if name in records.secrets
            else "config"
            if name in config.agent_secrets
            else ""
        )
        secret = f"secret in the {where}" if where else "no secret"
        hints = ", ".join(sorted(keys.get(name, []))) or "none"
        click.echo(f"{name}: {secret}; API keys: {hints}")


@agent.command("key")
@_config_and_ledger_options
@click.argument("name")
def agent_key(config_path: Path | None, ledger_path: Path | None, name: str) -> None:
    """Calls made with an API key (read from standard input) belong to NAME.

    Only a keyed hash of the key and its last 4 characters are kept.

    \b
    Example:
        printenv OPENAI_API_KEY | spendbrake agent key research-bot
    """
    name = _agent_name(name)
    if sys.stdin.isatty():
        api_key = click.prompt("API key", hide_input=True)
    else:
        api_key = sys.stdin.readline()
    api_key = api_key.strip()
    if len(api_key) < 8:
        raise click.ClickException(
            "no API key on standard input (give it on stdin, not as an argument)"
        )
    ledger = _open_ledger(ledger_path, _load_config(config_path))
    try:
        book = access_book_of(ledger)
        digest = api_key_hash(book.records().api_key_hash_key, api_key)
        book.add_api_key(name, digest, api_key_hint(api_key), _actor())
    finally:
        ledger.close()
    click.echo(f"Calls made with API key {api_key_hint(api_key)} now belong to {name}.")


@main.command("admin-token")
@_config_and_ledger_options
def admin_token(config_path: Path | None, ledger_path: Path | None) -> None:
    """Make a new admin token for the proxy's admin API (shown once; replaces the old one).

    \b
    Example:
        spendbrake admin-token
        curl -H "Authorization: Bearer $TOKEN" https://spendbrake.local/api/status
    """
    ledger = _open_ledger(ledger_path, _load_config(config_path))
    try:
        token = new_secret()
        access_book_of(ledger).set_admin_token(secret_hash(token), _actor())
    finally:
        ledger.close()
    click.echo("A new admin token (shown only now; the ledger keeps its hash):")
    click.echo(f"  {token}")


@main.command()
@click.option(
    "--proxy",
    help="The proxy URL (http://AGENT[:SECRET]@HOST:PORT). Default: $HTTPS_PROXY.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the proxy's answer as JSON.")
def whoami(proxy: str | None, as_json: bool) -> None:
    """Ask the proxy which agent and session your calls count as, and why.

    \b
    Example:
        eval "$(spendbrake env --agent research-bot)"; spendbrake whoami
    """
    proxy = proxy or os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if not proxy:
        raise click.ClickException("no proxy: set HTTPS_PROXY or pass --proxy")
    answer = _ask_proxy(proxy, f"https://{LOCAL_HOST}/whoami")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    if "agent" not in answer:
        raise click.ClickException(f"the proxy does not accept these calls: {answer.get('error')}")
    session = answer["session"] or "(the agent's unnamed session)"
    click.echo(f"agent:   {answer['agent']}")
    click.echo(f"session: {session}")
    click.echo(f"why:     {answer['why']}")


def _ask_proxy(proxy: str, url: str) -> dict[str, object]:
    bundle = os.environ.get("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=bundle or str(certs.ensure_ca(certs.certs_dir())))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy, "http": proxy}),
        urllib.request.HTTPSHandler(context=context),
    )
    try:
        with opener.open(url, timeout=10) as response:
            body: dict[str, object] = json.load(response)
            return body
    except urllib.error.HTTPError as e:
        try:
            refused: dict[str, object] = json.load(e)
            return refused
        except ValueError:
            raise click.ClickException(f"the proxy answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise click.ClickException(f"cannot reach spendbrake through {proxy}: {e}") from None
