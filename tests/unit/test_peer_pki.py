"""Site CA and host certificates (real cryptography, real TLS handshakes over a socket pair)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from standby.cli.main import app
from standby.domain.errors import FileNotFound, InvalidParameter
from standby.peer import pki
from standby.peer.tls import PeerTls


def _site(tmp_path: Path, name: str, hosts: dict[str, list[str]]) -> dict[str, PeerTls]:
    ca_dir = tmp_path / name / "ca"
    pki.init_ca(ca_dir, name)
    out: dict[str, PeerTls] = {}
    for host, ips in hosts.items():
        folder = tmp_path / name / host
        pki.issue_host(ca_dir, host, folder, ips=ips)
        out[host] = PeerTls(folder / "ca.crt", folder / "host.crt", folder / "host.key")
    return out


def test_host_certificate_has_usages_sans_and_chain(tmp_path: Path) -> None:
    ca_cert, ca_key = pki.init_ca(tmp_path / "ca", "lab")
    assert oct(ca_key.stat().st_mode & 0o777) == "0o600"
    cert_path, key_path = pki.issue_host(tmp_path / "ca", "hv1.lab.example", tmp_path / "hv1",
                                         ips=["127.0.0.1", "::1"], extra_names=["hv1"])
    cert = pki.load_certificates(cert_path)[0]
    summary = pki.summarize(cert)
    assert summary.dns_names == ("hv1.lab.example", "hv1")
    assert summary.ip_addresses == ("127.0.0.1", "::1")
    assert summary.client_auth and summary.server_auth and not summary.is_ca
    assert summary.issuer == pki.summarize(pki.load_certificates(ca_cert)[0]).subject
    assert len(summary.thumbprint) == 40 and summary.thumbprint == summary.thumbprint.upper()
    assert pki.peer_name(cert) == "hv1.lab.example"
    assert pki.peer_name_from_der(cert.public_bytes(Encoding.DER)) == "hv1.lab.example"
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "hv1" / "ca.crt").read_bytes() == ca_cert.read_bytes()


def test_refusals(tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "ca", "lab")
    with pytest.raises(InvalidParameter):
        pki.init_ca(tmp_path / "ca", "lab")  # never overwrite
    with pytest.raises(InvalidParameter):
        pki.issue_host(tmp_path / "ca", "bad name", tmp_path / "x")
    with pytest.raises(InvalidParameter):
        pki.issue_host(tmp_path / "ca", "ok", tmp_path / "x", ips=["not-an-ip"])
    with pytest.raises(FileNotFound):
        pki.issue_host(tmp_path / "nowhere", "ok", tmp_path / "y")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(InvalidParameter):
        pki.load_certificates(tmp_path / "junk.pem")


def _handshake(server: PeerTls, client: PeerTls, server_name: str) -> str:
    """Run a real TLS handshake; the peer name the server saw, or raise the client's error."""
    left, right = socket.socketpair()
    seen: list[str] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.server_context().wrap_socket(left, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                seen.append(pki.peer_name_from_der(der or b""))
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.client_context().wrap_socket(right, server_hostname=server_name) as tls:
            tls.recv(2)
    finally:
        right.close()
        thread.join(10)
    if errors:
        raise errors[0]
    return seen[0]


def test_mutual_tls_within_a_site_and_refusal_across_sites(tmp_path: Path) -> None:
    site = _site(tmp_path, "lab", {"hv1.lab": ["127.0.0.1"], "hv2.lab": []})
    other = _site(tmp_path, "evil", {"hv9.evil": []})
    assert _handshake(site["hv1.lab"], site["hv2.lab"], "hv1.lab") == "hv2.lab"
    assert _handshake(site["hv1.lab"], site["hv2.lab"], "127.0.0.1") == "hv2.lab"
    # A client from another CA: the server refuses it during the handshake.
    foreign_client = PeerTls(site["hv2.lab"].ca_file, other["hv9.evil"].cert_file, other["hv9.evil"].key_file)
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(site["hv1.lab"], foreign_client, "hv1.lab")
    # A server from another CA: the client refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(other["hv9.evil"], site["hv2.lab"], "hv9.evil")
    # The right CA but the wrong name.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(site["hv1.lab"], site["hv2.lab"], "hv3.lab")


def test_cli_init_issue_show(tmp_path: Path) -> None:
    runner = CliRunner()
    ca = tmp_path / "ca"
    result = runner.invoke(app, ["certs", "init", "--dir", str(ca), "--name", "site"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["certs", "issue", "hv1.site", "--ip", "127.0.0.1", "--ca-dir", str(ca),
                                 "--out", str(tmp_path / "hv1"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"dns_names": [\n    "hv1.site"\n  ]' in result.output
    result = runner.invoke(app, ["certs", "show", str(tmp_path / "hv1" / "host.crt")])
    assert result.exit_code == 0
    assert "hv1.site, 127.0.0.1" in result.output
    thumb = pki.summarize(pki.load_certificates(tmp_path / "hv1" / "host.crt")[0]).thumbprint
    assert thumb in result.output
