"""``spendbrake up``'s mitmproxy master: spendbrake's addons start with the settings they were
given, never first with the defaults (``$SPENDBRAKE_CONFIG``, the default ledger)."""

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from mitmproxy import options

from spendbrake.mitm.addon import Spendbrake
from spendbrake.proxy import SpendbrakeMaster, mitmdump_arguments, split_settings

MakeMaster = Callable[[Sequence[str]], SpendbrakeMaster]


@pytest.fixture
async def make_master() -> AsyncIterator[MakeMaster]:
    """Builds masters as ``mitmproxy.tools.main.run`` does (before any option is applied) and
    stops them afterwards."""
    made: list[SpendbrakeMaster] = []

    def make(settings: Sequence[str]) -> SpendbrakeMaster:
        made.append(SpendbrakeMaster(options.Options(), settings=settings, with_termlog=False))
        return made[-1]

    yield make
    for master in made:
        await master.done()


@pytest.fixture
def defaults_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine where the defaults cannot be used: ``$SPENDBRAKE_CONFIG`` names a missing file,
    and the default ledger's directory cannot be made (``XDG_DATA_HOME`` is a regular file)."""
    monkeypatch.setenv("SPENDBRAKE_CONFIG", str(tmp_path / "missing.toml"))
    data = tmp_path / "data"
    data.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.delenv("SPENDBRAKE_LEDGER", raising=False)
    return data


def spendbrake_of(master: SpendbrakeMaster) -> Spendbrake:
    (addon,) = [a for a in master.addons.chain if isinstance(a, Spendbrake)]
    return addon


async def test_spendbrake_starts_on_the_given_config_and_ledger(
    tmp_path: Path, defaults_unusable: Path, make_master: MakeMaster
) -> None:
    config, ledger = tmp_path / "spendbrake.toml", tmp_path / "ledger.db"
    config.write_text("[agents.given-bot]\ndaily_usd = 0.25\n")
    master = make_master([f"spendbrake_config={config}", f"spendbrake_ledger={ledger}"])
    enforcement = spendbrake_of(master).enforcement
    assert enforcement.worker is not None
    assert enforcement.worker.ledger.path == ledger
    assert "given-bot" in enforcement.config.agents
    assert defaults_unusable.read_text() == ""  # still the regular file: nothing made under it


async def test_every_spendbrake_setting_is_in_force_before_the_proxy_runs(
    tmp_path: Path, make_master: MakeMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts that parse an option only when it is among the updated ones see it too."""
    monkeypatch.delenv("SPENDBRAKE_CONFIG", raising=False)
    master = make_master(
        [
            f"spendbrake_ledger={tmp_path / 'ledger.db'}",
            "spendbrake_upstream=127.0.0.1:9443",
            "spendbrake_port_agents=8081=port-bot",
            "spendbrake_port_agents=8082=other-bot",
        ]
    )
    addon = spendbrake_of(master)
    assert addon.interception.upstream == ("127.0.0.1", 9443)
    assert addon.identification.port_agents == {8081: "port-bot", 8082: "other-bot"}


async def test_a_ledger_that_cannot_be_opened_ends_the_process_in_one_line(
    tmp_path: Path, make_master: MakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        make_master([f"spendbrake_ledger={blocker / 'ledger.db'}"])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert f": cannot open the ledger {blocker / 'ledger.db'}: " in line


def test_spendbrakes_settings_go_to_the_master_and_the_rest_to_mitmproxy() -> None:
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=8080,
        confdir=Path("/c"),
        config=Path("/s.toml"),
        ledger=Path("/l.db"),
        sets=["spendbrake_block_all=true", "flow_detail=1"],
        scripts=["mine.py"],
        more_listeners=[("127.0.0.1", 8081)],
        port_agents={8081: "port-bot"},
    )
    rest, settings = split_settings(arguments)
    assert settings == [
        "spendbrake_ledger=/l.db",
        "spendbrake_config=/s.toml",
        "spendbrake_port_agents=8081=port-bot",
        "spendbrake_block_all=true",
    ]
    assert rest == [
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        "8080",
        "--set",
        "confdir=/c",
        "--set",
        "tcp_timeout=3600",
        "--set",
        "connection_strategy=eager",
        "--set",
        "mode=regular@127.0.0.1:8080",
        "--set",
        "mode=regular@127.0.0.1:8081",
        "--set",
        "flow_detail=1",
        "--scripts",
        "mine.py",
    ]
