"""The HTTPS listener's certificate: use the configured one, or make a self-signed one on first start.

A fresh host has no certificate yet; rather than refuse to start, the daemon writes a self-signed
certificate for its host name, FQDN and loopback addresses (key mode 0600) and logs its SHA-1 thumbprint,
which is what Hyper-V tools call the certificate thumbprint. ``standby certs …`` (issue 4) replaces it
with one signed by the site CA.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from standby.domain.errors import FileNotFound

_VALID_FOR = timedelta(days=825)


def ensure_certificate(cert_file: Path, key_file: Path, names: list[str]) -> str | None:
    """Create a self-signed pair when neither file exists; return its thumbprint, or None if kept as is.

    Exactly one of the two files existing is an operator mistake, reported instead of overwritten.
    """
    has_cert, has_key = cert_file.exists(), key_file.exists()
    if has_cert and has_key:
        return None
    if has_cert != has_key:
        missing = key_file if has_cert else cert_file
        raise FileNotFound(
            f"HTTPS certificate and key must both exist; {missing} is missing",
            message_id="TlsFileMissing",
            path=str(missing),
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, names)
    cert_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # Hyper-V thumbprints are SHA-1


def _self_signed(key: ec.EllipticCurvePrivateKey, names: list[str]) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "standby (self-signed)")])
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys([*names, "localhost"]):
        alt.append(x509.DNSName(name))
    for address in ("127.0.0.1", "::1"):
        alt.append(x509.IPAddress(ipaddress.ip_address(address)))
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
