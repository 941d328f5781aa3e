"""Fixtures for the end-to-end tests: a fake provider, the proxy's CA, one proxy per module.

A test module sets ``SPENDBRAKE_CONFIG`` (TOML text) to give its proxy a configuration; tests in
one module share that proxy and keep out of each other's way with distinct agent names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path

import pytest
from e2e_support import Certs, Proxy, spendbrake_up

from spendbrake import certs as spendbrake_certs
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI, make_test_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A throwaway CA and the fake's server certificate (api.openai.com, localhost)."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def fake(pki: TestPKI) -> Iterator[FakeProvider]:
    with FakeProvider(pki) as provider:
        yield provider


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The proxy's CA and the client bundle, made once for every proxy of the session."""
    directory = tmp_path_factory.mktemp("certs")
    spendbrake_certs.write_bundle(directory)
    return Certs(directory)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The proxies' XDG cache (the tokenizer's files): a fresh machine's, not the developer's."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def proxy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
) -> Iterator[Proxy]:
    """``spendbrake up`` for this module, configured by the module's ``SPENDBRAKE_CONFIG``,
    with the module's ``SPENDBRAKE_SCRIPT`` (an addon script's text) loaded if it has one."""
    config_toml: str | None = getattr(request.module, "SPENDBRAKE_CONFIG", None)
    script_text: str | None = getattr(request.module, "SPENDBRAKE_SCRIPT", None)
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    scripts = []
    if script_text is not None:
        scripts.append(workdir / "script.py")
        scripts[0].write_text(script_text)
    with spendbrake_up(
        workdir,
        fake=fake,
        pki=pki,
        certs=certs,
        config_toml=config_toml,
        cache_dir=cache_dir,
        scripts=scripts,
    ) as running:
        yield running


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    """A value for the x-e2e-test header that tells this test's requests apart at the fake."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.nodeid)


@pytest.fixture
def start_proxy(
    tmp_path: Path, fake: FakeProvider, pki: TestPKI, certs: Certs, cache_dir: Path
) -> Callable[..., AbstractContextManager[Proxy]]:
    """``spendbrake_up`` in this test's own directory: ``start_proxy(config_toml=..., name=...,
    ledger=..., settings=..., scripts=...)``. Proxies a test starts share its ledger unless
    given another."""
    return partial(spendbrake_up, tmp_path, fake=fake, pki=pki, certs=certs, cache_dir=cache_dir)
