"""A throwaway certificate authority and a server certificate it signs, for tests only."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestPKI:
    """Paths of the PEM files written by `make_test_pki`."""

    # Stop pytest from trying to collect this as a test class.
    __test__ = False

    ca_cert: Path
    server_cert: Path
    server_key: Path


# Every host the fake provider stands in for (an Azure OpenAI resource is named per customer;
# the tests use this one), and localhost.
AZURE_TEST_HOST = "spendbrake-test.openai.azure.com"
PROVIDER_HOSTNAMES: tuple[str, ...] = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "openrouter.ai",
    "api.together.xyz",
    "api.fireworks.ai",
    "api.perplexity.ai",
    AZURE_TEST_HOST,
    "localhost",
)


def make_test_pki(
    directory: Path,
    hostnames: Sequence[str] = PROVIDER_HOSTNAMES,
    ips: Sequence[str] = ("127.0.0.1",),
) -> TestPKI:
    """Write a fresh CA and a leaf certificate for `hostnames` + `ips` into `directory`."""
    if not hostnames and not ips:
        raise ValueError("the server certificate needs at least one hostname or IP")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    not_before = now - timedelta(days=1)  # tolerate clock skew between processes/containers
    not_after = now + timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spendbrake tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "spendbrake throwaway test CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # OpenSSL (and so mitmproxy and Python's ssl) only accept a CA marked as one.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # VERIFY_X509_STRICT (default in Python 3.13+) requires key identifiers.
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    common_name = hostnames[0] if hostnames else ips[0]
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pki = TestPKI(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        pki.server_key,
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pki


def _write_private(path: Path, data: bytes) -> None:
    # Create with 0600 from the start so the key is never briefly world-readable.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    # The umask can only remove bits, but be explicit in case the file system ignored the mode.
    os.chmod(path, 0o600)
