"""Certificates for a test site, made the way an operator makes them: ``standby certs init`` for the site CA
and ``standby certs issue`` for each host (first DNS SAN = host name, IP SAN = its address).

A second ``SiteCA`` is a *foreign* CA: a host certificate it issues must be refused by the site's hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its key on disk, with the SHA-1 thumbprint Hyper-V tools use."""

    cert_file: Path
    key_file: Path
    thumbprint: str


@dataclass(frozen=True, slots=True)
class SiteCA:
    """A certificate authority made by ``standby certs init``."""

    folder: Path

    @property
    def cert_file(self) -> Path:
        """The CA certificate every host of the site trusts."""
        return self.folder / "ca.crt"

    @classmethod
    def create(cls, folder: Path, name: str = "standby-e2e") -> SiteCA:
        """``standby certs init --dir folder --name name``."""
        _certs("init", "--dir", str(folder), "--name", name)
        return cls(folder)

    def issue(self, out: Path, host_name: str, addresses: tuple[str, ...] = ()) -> CertPair:
        """``standby certs issue host_name --ip …``: ``out/host.crt`` and ``out/host.key`` (mode 0600)."""
        ips = [arg for address in addresses for arg in ("--ip", address)]
        data = _certs("issue", host_name, "--ca-dir", str(self.folder), "--out", str(out), *ips)
        cert_file = Path(data["cert"])
        return CertPair(cert_file, Path(data["key"]), thumbprint(cert_file))


def thumbprint(cert_file: Path) -> str:
    """SHA-1 of the certificate's DER form, upper-case hex."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def _certs(*args: str) -> dict[str, str]:
    command = [sys.executable, "-m", "standby", "certs", *args, "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"standby certs {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    data: dict[str, str] = json.loads(proc.stdout)
    return data
