"""The status page in a real headless Chromium: through the proxy over https (the proxy's CA
trusted by its key) and on the plain status port. The page must show the agents and the chart,
and its screenshot must be a real picture of them, offline, without a script.

Chromium is Debian's ``chromium`` package; without it these tests are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_support import Certs
from status_support import StatusProxy, status_proxy, traffic

from spendbrake.svg_chart import PALETTE
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (Debian: apt-get install chromium); the browser test "
        "of the status page needs it",
    ),
]

AGENTS = ("browser-alpha", "browser-beta")
BROKE = "browser-broke"
WIDTH, HEIGHT = 1280, 1000
BROWSER_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
) -> Iterator[StatusProxy]:
    workdir = tmp_path_factory.mktemp("browser")
    with status_proxy(
        workdir, fake=fake, pki=pki, certs=certs, cache_dir=cache_dir, broke_agent=BROKE
    ) as started:
        traffic(started.proxy, "status-page-browser", AGENTS, BROKE)
        yield started


def chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a profile of its own and nothing fetched in the background."""
    assert CHROMIUM is not None
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # root cannot use its sandbox
    command = [
        CHROMIUM, "--headless", "--disable-gpu", *sandbox, f"--user-data-dir={profile}",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", *arguments,
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"chromium exited with {result.returncode}:\n{result.stderr}"
    return result


def spki_pin(ca_cert: Path) -> str:
    """The CA key's SPKI hash, as Chromium's --ignore-certificate-errors-spki-list takes it:
    the proxy's certificates are trusted without touching the system's trust store."""
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def assert_shows_the_agents_and_the_chart(dom: str) -> None:
    assert "<h1>spendbrake</h1>" in dom, dom[:2000]
    for agent in (*AGENTS, BROKE):
        assert f">{agent}</a>" in dom  # a row of the table, linked to the agent's page
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="spend-chart"' in dom
    assert dom.count('class="agent-line"') == 3
    assert "daily_budget_exceeded" in dom.split("Recent refusals")[1]


def test_through_the_proxy_over_https_a_login_link_opens_the_page(
    running: StatusProxy, tmp_path: Path
) -> None:
    dom = chromium(
        tmp_path / "profile",
        f"--proxy-server=http://127.0.0.1:{running.proxy.port}",
        f"--ignore-certificate-errors-spki-list={spki_pin(running.proxy.certs.ca_cert)}",
        "--dump-dom",
        f"https://spendbrake.local/?token={running.token}",
    ).stdout
    assert_shows_the_agents_and_the_chart(dom)


def test_without_the_token_the_browser_gets_the_login_form(
    running: StatusProxy, tmp_path: Path
) -> None:
    dom = chromium(tmp_path / "profile", "--dump-dom", f"{running.status_url}/").stdout
    assert '<form class="login" method="post" action="/login">' in dom
    assert not any(agent in dom for agent in AGENTS)


def test_on_the_status_port_the_screenshot_shows_the_page_and_the_chart(
    running: StatusProxy, tmp_path: Path
) -> None:
    login = f"{running.status_url}/?token={running.token}"
    dom = chromium(tmp_path / "dom-profile", "--dump-dom", login).stdout
    assert_shows_the_agents_and_the_chart(dom)
    shot = tmp_path / "status.png"
    chromium(tmp_path / "shot-profile", f"--screenshot={shot}", login)
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours = set(pixels)
    assert len(colours) > 50, "a blank or nearly blank page"  # text, table stripes, the chart
    # Each agent's line, in its own colour: the chart was drawn, not just the page around it.
    for colour in PALETTE[:3]:
        assert _rgb(colour) in colours, f"no pixel of the chart line coloured {colour}"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.removeprefix("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and the RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what
    Chromium writes), with the standard library alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, chunks, idat = 8, {}, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert (
            zlib.crc32(kind + body)
            == struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0]
        )
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        at += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour_type in (2, 6), colour_type  # RGB or RGBA
    channels = 4 if colour_type == 6 else 3
    rows = _unfilter(zlib.decompress(idat), width * channels, height, channels)
    pixels = [
        (row[i], row[i + 1], row[i + 2]) for row in rows for i in range(0, len(row), channels)
    ]
    return width, height, pixels


def _unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytes]:
    rows: list[Any] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return rows
