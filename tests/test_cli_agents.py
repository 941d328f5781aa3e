"""``spendbrake agent``, ``admin-token`` and the listeners of ``up``: output pinned as users see
it, and nothing secret printed twice or stored in the clear."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger_hammer import query
from spendbrake.agent_keys import secret_hash
from spendbrake.cli import main


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDBRAKE_CERTS", str(tmp_path / "certs"))
    monkeypatch.setenv("SPENDBRAKE_LEDGER", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.delenv("SPENDBRAKE_CONFIG", raising=False)


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    # A command's answer is its stdout; notices ("created a new ledger") and errors go to stderr.
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_agent_add_prints_the_proxy_url_once_and_keeps_only_the_hash(tmp_path: Path) -> None:
    code, output = run("agent", "add", "research-bot", "--listen", "127.0.0.1:9090")
    assert code == 0, output
    [secret] = re.findall(r"export HTTPS_PROXY=http://research-bot:([\w-]+)@127.0.0.1:9090", output)
    assert output.splitlines() == [
        "research-bot: a new secret. It is shown only now; the ledger keeps its hash.",
        f"  export HTTPS_PROXY=http://research-bot:{secret}@127.0.0.1:9090",
        f"  (a session: http://research-bot:{secret}.SESSION@127.0.0.1:9090)",
    ]
    stored = query(tmp_path / "ledger.db", "SELECT agent, secret_sha256, actor FROM agent_secrets")
    assert stored == [("research-bot", secret_hash(secret), "alice")]
    assert secret.encode() not in (tmp_path / "ledger.db").read_bytes()


def test_a_second_secret_needs_rotate() -> None:
    run("agent", "add", "research-bot")
    code, output = run("agent", "add", "research-bot")
    assert code == 1
    assert (
        "research-bot already has a secret; 'spendbrake agent add research-bot --rotate'" in output
    )
    code, output = run("agent", "add", "research-bot", "--rotate")
    assert code == 0, output


def test_agent_key_reads_the_key_from_stdin_and_shows_only_its_end(tmp_path: Path) -> None:
    key = "sk-proj-0123456789abcdef-a1f3"
    code, output = run("agent", "key", "research-bot", stdin=key + "\n")
    assert (code, output) == (0, "Calls made with API key …a1f3 now belong to research-bot.\n")
    assert key.encode() not in (tmp_path / "ledger.db").read_bytes()
    code, output = run("agent", "key", "research-bot", stdin="\n")
    assert code == 1
    assert "no API key on standard input" in output


def test_agent_list_and_remove_never_show_a_secret() -> None:
    run("agent", "add", "research-bot")
    run("agent", "key", "ci", stdin="sk-ci-key-000000-9b2c\n")
    code, output = run("agent", "list")
    assert (code, output) == (
        0,
        "ci: no secret; API keys: …9b2c\nresearch-bot: secret in the ledger; API keys: none\n",
    )
    code, output = run("agent", "remove", "research-bot")
    assert (code, output) == (0, "research-bot: secret removed, 0 API key(s) removed\n")
    code, output = run("agent", "remove", "research-bot")
    assert code == 1
    assert "research-bot has no secret or API key in the ledger" in output


def test_admin_token_is_printed_once_and_stored_as_its_hash(tmp_path: Path) -> None:
    code, output = run("admin-token")
    assert code == 0
    token = output.splitlines()[-1].strip()
    assert len(token) >= 43
    [(stored,)] = query(
        tmp_path / "ledger.db", "SELECT value FROM settings WHERE name = 'admin_token_sha256'"
    )
    assert stored == secret_hash(token)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("0.0.0.0:8080", "listening on 0.0.0.0 would let anyone on the network spend"),
        ("127.0.0.1:8081=not an agent", "'not an agent' is not an agent name"),
        ("127.0.0.1:0=research-bot", "an agent's listener needs a fixed port"),
    ],
)
def test_up_refuses_listeners_it_cannot_keep_safe(listen: str, message: str) -> None:
    code, output = run("up", "--listen", listen)
    assert code != 0
    assert message in output


def test_a_listener_beyond_loopback_is_allowed_with_strict_mode(tmp_path: Path) -> None:
    # Refused before: the check passes, and 'up' goes on to fail at the next step we can
    # provoke without starting a proxy (a ledger file that is not a database).
    config = tmp_path / "strict.toml"
    config.write_text("[access]\nstrict = true\n")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    code, output = run(
        "up", "--config", str(config), "--ledger", str(garbage), "--listen", "0.0.0.0:0"
    )
    assert code == 1
    assert "would let anyone" not in output
    assert "cannot open the ledger" in output
