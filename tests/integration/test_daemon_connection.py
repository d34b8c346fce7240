"""TestReplicationConnection's probe against real sockets: TLS peers, silent peers, wrong peers."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from standby.daemon.tls import ensure_certificate
from standby.domain.errors import AccessDenied, InvalidParameter, NotSupported, Unavailable
from standby.engine.connection import ConnectionTarget, client_ssl_context, probe, validate_target

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("tls")
    thumbprint = ensure_certificate(folder / "host.crt", folder / "host.key", ["peer.test"])
    assert thumbprint is not None
    return folder / "host.crt", folder / "host.key", thumbprint


def _server_context(cert_pair: tuple[Path, Path, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pair[0], cert_pair[1])
    return context


def _answer(status: str, body: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /peer/v1/ping HTTP/1.1\r\n")
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        writer.write(body)
        await writer.drain()
        writer.close()

    return handle


async def _run_probe(handler: Handler, context: ssl.SSLContext | None, **kwargs: object) -> dict[str, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        timeout = float(kwargs.pop("timeout", 5.0))  # type: ignore[arg-type]
        client = kwargs.pop("client", client_ssl_context(None))
        assert isinstance(client, ssl.SSLContext)
        return await probe(ConnectionTarget("127.0.0.1", port), timeout=timeout, context=client)
    finally:
        server.close()


PING = json.dumps({"service": "standby", "host": "peer", "fqdn": "peer.test", "version": "9.9"}).encode()


def test_a_standby_peer_answers_with_its_name_and_thumbprint(cert_pair: tuple[Path, Path, str]) -> None:
    result = asyncio.run(_run_probe(_answer("200 OK", PING), _server_context(cert_pair)))
    assert result == {
        "RecoveryHost": "peer",
        "RecoveryHostFQDN": "peer.test",
        "RecoveryVersion": "9.9",
        "ServerCertificateThumbprint": cert_pair[2],
    }


def test_a_trusted_ca_file_verifies_the_peer(cert_pair: tuple[Path, Path, str]) -> None:
    # The self-signed certificate names localhost and 127.0.0.1, so it verifies as its own CA.
    trusted = client_ssl_context(cert_pair[0])
    result = asyncio.run(_run_probe(_answer("200 OK", PING), _server_context(cert_pair), client=trusted))
    assert result["RecoveryHost"] == "peer"


def test_an_untrusted_certificate_is_access_denied(cert_pair: tuple[Path, Path, str], tmp_path: Path) -> None:
    other = tmp_path / "other.crt"
    ensure_certificate(other, tmp_path / "other.key", ["other.test"])
    with pytest.raises(AccessDenied) as info:
        asyncio.run(_run_probe(_answer("200 OK", PING), _server_context(cert_pair),
                               client=client_ssl_context(other)))
    assert info.value.message_id == "PeerCertificateRejected"
    assert int(info.value.code) == 32769


def test_a_peer_refusing_us_is_access_denied(cert_pair: tuple[Path, Path, str]) -> None:
    with pytest.raises(AccessDenied, match=r"refused this host \(HTTP 403\)"):
        asyncio.run(_run_probe(_answer("403 Forbidden", b""), _server_context(cert_pair)))


def test_a_web_server_that_is_not_standby_is_unavailable(cert_pair: tuple[Path, Path, str]) -> None:
    with pytest.raises(Unavailable, match="not a standby replica server") as info:
        asyncio.run(_run_probe(_answer("404 Not Found", b"<html/>"), _server_context(cert_pair)))
    assert info.value.message_id == "NotAReplicaServer"
    with pytest.raises(Unavailable, match="not a standby replica server"):
        asyncio.run(_run_probe(_answer("200 OK", b'{"service": "other"}'), _server_context(cert_pair)))


def test_plain_tcp_without_tls_fails_the_handshake() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    with pytest.raises(Unavailable) as info:
        asyncio.run(_run_probe(garbage, None))
    assert info.value.message_id in {"TlsHandshakeFailed", "PeerUnreachable"}


def test_a_silent_peer_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never answer

    with pytest.raises(Unavailable, match=r"did not answer within 0\.5 s") as info:
        asyncio.run(_run_probe(silent, None, timeout=0.5))
    assert info.value.message_id == "ConnectionTimedOut"
    assert int(info.value.code) == 32777


def test_a_closed_port_is_refused() -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    with pytest.raises(Unavailable, match="refused the connection"):
        asyncio.run(probe(ConnectionTarget("127.0.0.1", port), timeout=5, context=client_ssl_context(None)))


def test_an_unknown_host_name_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot resolve host name"):
        asyncio.run(probe(ConnectionTarget("no-such-host.invalid", 443), timeout=10,
                          context=client_ssl_context(None)))


@pytest.mark.parametrize(
    ("target", "error", "message_id"),
    [
        (ConnectionTarget("", 443), InvalidParameter, "InvalidConnectionPoint"),
        (ConnectionTarget("bad host", 443), InvalidParameter, "InvalidConnectionPoint"),
        (ConnectionTarget("h", 0), InvalidParameter, "InvalidPortNumber"),
        (ConnectionTarget("h", 65536), InvalidParameter, "InvalidPortNumber"),
        (ConnectionTarget("h", 443, authentication_type=1), NotSupported, "KerberosNotSupported"),
        (ConnectionTarget("h", 443, authentication_type=7), InvalidParameter, "InvalidAuthenticationType"),
        (ConnectionTarget("h", 443, certificate_thumbprint="xyz"), InvalidParameter, "InvalidThumbprint"),
    ],
)
def test_bad_parameters_are_rejected_before_any_connection(
    target: ConnectionTarget, error: type[Exception], message_id: str
) -> None:
    with pytest.raises(error) as info:
        validate_target(target)
    assert getattr(info.value, "message_id", None) == message_id


def test_a_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="cannot load CA file"):
        client_ssl_context(tmp_path / "missing.pem")
