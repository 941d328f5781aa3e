"""``spendbrake up --set NAME=VALUE``: any mitmproxy option, the user's value winning."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import TEST_ID_HEADER, Certs, requests_of, run_client, spendbrake_up

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e


def test_the_users_settings_override_spendbrakes_own(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    test_id: str,
) -> None:
    with spendbrake_up(
        tmp_path,
        fake=fake,
        pki=pki,
        certs=certs,
        config_toml=None,
        cache_dir=cache_dir,
        settings=["connection_strategy=eager", "flow_detail=1"],
    ) as proxy:
        report = run_client(
            "sdk_chat.py",
            {"max_tokens": 5, "calls": 7, "timeout": 5, "headers": {TEST_ID_HEADER: test_id}},
            proxy.client_env("settings-bot"),
        )
        assert [c["status"] for c in report["calls"]] == [200] * 7
        assert len(requests_of(fake, test_id)) == 7
        # flow_detail=1 (the user's) prints every flow; spendbrake's own flow_detail=0 does not.
        assert "POST https://" in proxy.output()
