"""Site CA and host certificates for host-to-host mutual TLS (hyperv-api §9.2: client+server auth EKUs, SANs).

One site CA signs every host's certificate; each daemon trusts that CA (``[tls] ca_file``) and presents
its host certificate both as a server (the peer listener) and as a client (``PeerClient``). A host is
known by its certificate's first DNS SAN (its CN when there is none). Thumbprints are SHA-1 of the DER
encoding in upper-case hex, as Hyper-V shows them.

Failures reading or writing files become ``domain.errors`` here; private keys are written mode 0600 and
never overwritten.
"""

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

from standby.domain.errors import FileNotFound, InvalidParameter, StandbyError
from standby.domain.peer_access import CallerIdentity

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
HOST_CERT = "host.crt"
HOST_KEY = "host.key"
CA_VALID_DAYS = 3650
HOST_VALID_DAYS = 825
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What ``standby certs show`` prints about one certificate."""

    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    thumbprint: str
    not_before: datetime
    not_after: datetime
    is_ca: bool
    client_auth: bool
    server_auth: bool

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (times as ISO-8601 UTC)."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "thumbprint": self.thumbprint,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "is_ca": self.is_ca,
            "client_auth": self.client_auth,
            "server_auth": self.server_auth,
        }


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, upper-case hex (Hyper-V's CertificateThumbPrint)."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # SHA-1 as an identifier, not a signature


def peer_name(cert: x509.Certificate) -> str:
    """The host a certificate names: its first DNS SAN, else its CN; empty when it has neither."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return str(names[0])
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


def peer_name_from_der(der: bytes) -> str:
    """``peer_name`` of a DER certificate (what the TLS layer hands over)."""
    try:
        return peer_name(x509.load_der_x509_certificate(der))
    except ValueError:
        return ""


def peer_identity_from_der(der: bytes) -> CallerIdentity | None:
    """Who a verified client certificate says the caller is (``domain.peer_access``); None without a
    host name in it."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    name = peer_name(cert)
    if not name:
        return None
    summary = summarize(cert)
    return CallerIdentity(name, summary.dns_names, summary.ip_addresses)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFound(f"{path} does not exist", message_id="CertificateFileMissing",
                           path=str(path)) from None
    except OSError as exc:
        raise FileNotFound(f"cannot read {path}: {exc.strerror}", message_id="CertificateUnreadable",
                           path=str(path)) from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise InvalidParameter(f"{path} holds no PEM certificate", message_id="CertificateMalformed",
                               path=str(path))
    return certs


def summarize(cert: x509.Certificate) -> CertificateSummary:
    """Subject, SANs, thumbprint, validity and usage of a certificate."""
    dns: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
        ips = [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    return CertificateSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        thumbprint=thumbprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        client_auth=ExtendedKeyUsageOID.CLIENT_AUTH in usages,
        server_auth=ExtendedKeyUsageOID.SERVER_AUTH in usages,
    )


def init_ca(directory: Path, site_name: str, *, now: datetime | None = None,
            valid_days: int = CA_VALID_DAYS) -> tuple[Path, Path]:
    """Create a site CA (``ca.crt``, ``ca.key``) in ``directory``; refuses to overwrite one."""
    if not site_name.strip():
        raise InvalidParameter("the site name must not be empty", message_id="SiteNameMissing")
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    _refuse_existing(cert_path, key_path)
    moment = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{site_name} standby CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, site_name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - _BACKDATE)
        .not_valid_after(moment + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)
    return cert_path, key_path


def issue_host(
    ca_dir: Path,
    hostname: str,
    out_dir: Path,
    *,
    ips: Sequence[str] = (),
    extra_names: Sequence[str] = (),
    now: datetime | None = None,
    valid_days: int = HOST_VALID_DAYS,
) -> tuple[Path, Path]:
    """Issue ``host.crt``/``host.key`` for ``hostname`` signed by the CA in ``ca_dir``; copy ``ca.crt``."""
    hostname = hostname.strip().rstrip(".")
    if not hostname or any(ch.isspace() or ch in "/\\*" for ch in hostname):
        raise InvalidParameter(f"{hostname!r} is not a host name", message_id="InvalidHostName",
                               host=hostname)
    addresses = [_ip(value) for value in ips]
    ca_cert, ca_key = _load_ca(ca_dir)
    cert_path, key_path = out_dir / HOST_CERT, out_dir / HOST_KEY
    _refuse_existing(cert_path, key_path)
    moment = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dict.fromkeys([hostname, *extra_names])]
    names += [x509.IPAddress(address) for address in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - _BACKDATE)
        .not_valid_after(min(moment + timedelta(days=valid_days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)
    ca_copy = out_dir / CA_CERT
    if not ca_copy.exists():
        ca_copy.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
        key_agreement=not ca, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidParameter(f"{value!r} is not an IP address", message_id="InvalidIpAddress",
                               value=value) from None


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_certificates(ca_dir / CA_CERT)[0]
    key_path = ca_dir / CA_KEY
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FileNotFound(f"{key_path} does not exist: run 'standby certs init' first",
                           message_id="CaKeyMissing", path=str(key_path)) from None
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidParameter(f"cannot load the CA key {key_path}: {exc}", message_id="CaKeyUnusable",
                               path=str(key_path)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidParameter(f"{key_path} is not an EC key made by 'standby certs init'",
                               message_id="CaKeyUnusable", path=str(key_path))
    return cert, key


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise InvalidParameter(f"{path} already exists; refusing to overwrite it",
                                   message_id="AlreadyExists", kind="file", key=str(path))


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_bytes)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise StandbyError(f"cannot write {cert_path.parent}: {exc.strerror}", message_id="CertWriteFailed",
                           path=str(cert_path.parent)) from None
