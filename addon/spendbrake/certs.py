"""The proxy's CA in ``certs/`` and the combined CA bundle clients are given.

``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` *replace* a client's trust store. Non-LLM hosts
are tunnelled with their real certificates, so clients need the system's CAs as well as the
proxy's: the bundle is both, concatenated, with the bundles the caller already trusted (a
corporate CA) between them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

CA_CERT_NAME = "mitmproxy-ca-cert.pem"
BUNDLE_NAME = "spendbrake-ca-bundle.pem"
UPSTREAM_BUNDLE_NAME = "spendbrake-upstream-ca-bundle.pem"
CERTS_ENV = "SPENDBRAKE_CERTS"
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)


def certs_dir() -> Path:
    """``$SPENDBRAKE_CERTS``, else ``certs/`` of a source checkout, else the user's data dir."""
    if value := os.environ.get(CERTS_ENV):
        return Path(value).expanduser()
    checkout = Path(__file__).resolve().parent.parent.parent / "certs"
    if checkout.is_dir():
        return checkout
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "spendbrake" / "certs"


def ensure_ca(confdir: Path) -> Path:
    """Create the proxy CA on first use (private key files 0600); return the CA cert's path."""
    from mitmproxy.certs import CertStore  # the CLI's only reason to import mitmproxy here

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(str(confdir), "mitmproxy", 2048)
    for secret in ("mitmproxy-ca.pem", "mitmproxy-ca.p12"):
        if (confdir / secret).exists():
            os.chmod(confdir / secret, 0o600)
    return confdir / CA_CERT_NAME


def system_ca_bundle() -> Path:
    for candidate in _SYSTEM_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate)
    import certifi

    return Path(certifi.where())


def _readable_extras(extra: Iterable[Path], system: Path) -> list[bytes]:
    """The contents of the files in ``extra`` that can be read, each file once, the system
    bundle left out (it is in the bundle already)."""
    seen = {system.resolve()}
    contents = []
    for path in extra:
        resolved = path.expanduser().resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            contents.append(resolved.read_bytes())
        except OSError:  # missing, unreadable, a directory: the caller's clients failed on it too
            continue
    return contents


def _concatenated(parts: Iterable[bytes]) -> bytes:
    return b"".join(part.rstrip(b"\n") + b"\n" for part in parts if part.strip())


def _write_if_changed(path: Path, content: bytes) -> Path:
    if not path.exists() or path.read_bytes() != content:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    return path


def write_bundle(confdir: Path, extra: Sequence[Path] = ()) -> Path:
    """System CAs, the bundles in ``extra`` (the caller's own) and the proxy CA, rewritten only
    when it changed."""
    ca_cert = ensure_ca(confdir)
    system = system_ca_bundle()
    parts = [system.read_bytes(), *_readable_extras(extra, system), ca_cert.read_bytes()]
    return _write_if_changed(confdir / BUNDLE_NAME, _concatenated(parts))


def write_upstream_bundle(confdir: Path, extra: Sequence[Path]) -> Path | None:
    """System CAs and the bundles in ``extra``, for the proxy to verify the providers with
    when a corporate proxy on the way re-signs them; None when ``extra`` adds nothing."""
    system = system_ca_bundle()
    if not (extras := _readable_extras(extra, system)):
        return None
    confdir.mkdir(parents=True, exist_ok=True)
    return _write_if_changed(
        confdir / UPSTREAM_BUNDLE_NAME, _concatenated([system.read_bytes(), *extras])
    )


def client_environment(proxy_url: str, bundle: Path) -> dict[str, str]:
    """The variables that route a shell's clients through the proxy and make them trust it."""
    return {
        "HTTPS_PROXY": proxy_url,
        "https_proxy": proxy_url,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        "NODE_EXTRA_CA_CERTS": str(bundle),
    }
