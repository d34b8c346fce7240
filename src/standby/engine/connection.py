"""TestReplicationConnection: can this host reach a recovery server's replication endpoint?

The operation opens a TCP connection to (RecoveryConnectionPoint, port), completes a TLS handshake and asks
``GET /peer/v1/ping``; a standby daemon there answers with its name and version. Everything runs under one
deadline (``[replication] connection_timeout_seconds``, 30 s by default). This module is the one adapter
for that probe: socket, DNS and TLS failures become ``Unavailable`` or ``AccessDenied`` here.

Certificates: with the site CA (``[tls] ca_file``) the probe presents this host's certificate (mutual TLS,
AuthenticationType 2) and verifies the recovery server's certificate against the CA and its name; the peer
listener there answers 403 unless an authorization entry admits this host. Without a CA file the server
certificate is not verified (the probe reports its thumbprint). No proxy is ever used, so
``BypassProxyServer`` changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from standby import __version__
from standby.domain.entities import Job
from standby.domain.enums import AuthenticationType, JobType
from standby.domain.errors import AccessDenied, InvalidParameter, NotSupported, Unavailable

PING_PATH = "/peer/v1/ping"
#: What a standby daemon's ping answer says in its ``service`` field.
SERVICE_NAME = "standby"
DEFAULT_TIMEOUT_SECONDS = 30.0
_MAX_RESPONSE_BYTES = 64 * 1024
_HOST_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,255}$")
_THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")


@dataclass(frozen=True, slots=True)
class ConnectionTarget:
    """The in-parameters of TestReplicationConnection, in Python words."""

    connection_point: str
    port: int
    authentication_type: int = int(AuthenticationType.CERTIFICATE)
    certificate_thumbprint: str = ""
    bypass_proxy_server: bool = False


class JobHandleLike(Protocol):
    """What the probe needs from ``engine.jobs.JobHandle``."""

    def progress(self, percent: int) -> None:
        """Report progress (0-100)."""
        ...


class JobSubmitter(Protocol):
    """The part of ``engine.jobs.JobManager`` this use case calls."""

    def submit(
        self,
        job_type: JobType,
        *,
        element_id: str,
        description: str,
        work: Callable[[JobHandleLike], Awaitable[Mapping[str, Any] | None]],
        cancellable: bool = False,
        message_id: str | None = None,
        args: Mapping[str, object] | None = None,
    ) -> Job:
        """Persist a job and run ``work`` on the daemon's loop."""
        ...


def validate_target(target: ConnectionTarget) -> None:
    """Reject bad in-parameters before a job is created (32773 / 32770)."""
    host = target.connection_point.strip()
    if not host or not _HOST_RE.match(host):
        raise InvalidParameter(
            f"RecoveryConnectionPoint {target.connection_point!r} is not a host name or address",
            message_id="InvalidConnectionPoint",
            value=target.connection_point,
        )
    if not 1 <= target.port <= 65535:
        raise InvalidParameter(
            f"RecoveryServerPortNumber {target.port} is not a port number (1-65535)",
            message_id="InvalidPortNumber",
            value=str(target.port),
        )
    if target.authentication_type == AuthenticationType.KERBEROS:
        raise NotSupported(
            "Kerberos authentication is not supported; use certificate authentication (2)",
            message_id="KerberosNotSupported",
        )
    if target.authentication_type != AuthenticationType.CERTIFICATE:
        raise InvalidParameter(
            f"AuthenticationType {target.authentication_type} is not 1 or 2",
            message_id="InvalidAuthenticationType",
            value=str(target.authentication_type),
        )
    if target.certificate_thumbprint and not _THUMBPRINT_RE.match(target.certificate_thumbprint):
        raise InvalidParameter(
            "CertificateThumbPrint must be 40 or 64 hexadecimal digits",
            message_id="InvalidThumbprint",
            value=target.certificate_thumbprint,
        )


def client_ssl_context(ca_file: Path | None, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """TLS client settings: verify against ``ca_file`` when given (presenting ``client_cert`` = (cert, key)
    when both files exist), else accept any certificate (see above)."""
    if ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
            if client_cert is not None and all(path.is_file() for path in client_cert):
                context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            return context
        except (OSError, ssl.SSLError) as exc:
            raise InvalidParameter(f"cannot load CA file {ca_file} or the host certificate: {exc}",
                                   message_id="BadCaFile", path=str(ca_file)) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def probe(target: ConnectionTarget, *, timeout: float, context: ssl.SSLContext) -> dict[str, str]:
    """Connect, handshake and ping under one deadline; the peer's answer as job results."""
    validate_target(target)
    host = target.connection_point.strip().strip("[]")
    where = f"{target.connection_point}:{target.port}"
    try:
        async with asyncio.timeout(timeout):
            return await _ping(host, target.port, context)
    except TimeoutError:
        raise Unavailable(
            f"{where} did not answer within {timeout:g} s",
            message_id="ConnectionTimedOut",
            target=where,
            seconds=f"{timeout:g}",
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise AccessDenied(
            f"the certificate of {where} is not trusted: {exc.verify_message}",
            message_id="PeerCertificateRejected",
            target=where,
            reason=str(exc.verify_message),
        ) from None
    except ssl.SSLError as exc:
        raise Unavailable(
            f"TLS handshake with {where} failed: {exc.reason or exc}",
            message_id="TlsHandshakeFailed",
            target=where,
            reason=str(exc.reason or exc),
        ) from None
    except socket.gaierror:
        raise Unavailable(
            f"cannot resolve host name {target.connection_point!r}",
            message_id="HostNotResolved",
            target=target.connection_point,
        ) from None
    except ConnectionRefusedError:
        raise Unavailable(f"{where} refused the connection", message_id="ConnectionRefused",
                          target=where) from None
    except (OSError, EOFError) as exc:
        strerror = exc.strerror if isinstance(exc, OSError) else None
        reason = strerror or str(exc) or "connection closed"
        raise Unavailable(f"cannot reach {where}: {reason}", message_id="PeerUnreachable",
                          target=where, reason=reason) from None


async def _ping(host: str, port: int, context: ssl.SSLContext) -> dict[str, str]:
    server_name = host if context.check_hostname else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=server_name)
    try:
        cert = _peer_certificate(writer)
        host_header = f"[{host}]" if ":" in host else host
        request = (
            f"GET {PING_PATH} HTTP/1.1\r\nHost: {host_header}:{port}\r\n"
            f"User-Agent: standby/{__version__}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        raw = await reader.read(_MAX_RESPONSE_BYTES)
        while raw and len(raw) < _MAX_RESPONSE_BYTES:
            more = await reader.read(_MAX_RESPONSE_BYTES - len(raw))
            if not more:
                break
            raw += more
    finally:
        writer.close()
    return _parse_ping(raw, f"{host}:{port}", cert)


def _peer_certificate(writer: asyncio.StreamWriter) -> bytes:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return b""
    cert = ssl_object.getpeercert(binary_form=True)
    return cert if isinstance(cert, bytes) else b""


def _parse_ping(raw: bytes, where: str, cert: bytes) -> dict[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise Unavailable(f"{where} does not speak HTTP", message_id="NotAReplicaServer", target=where)
    status = int(parts[1])
    if status in (401, 403):
        raise AccessDenied(f"{where} refused this host (HTTP {status})", message_id="PeerRefusedAccess",
                           target=where, status=str(status))
    answer = _json_object(body) if status == 200 else None
    if answer is None or answer.get("service") != SERVICE_NAME:
        raise Unavailable(f"{where} is not a standby replica server (HTTP {status})",
                          message_id="NotAReplicaServer", target=where)
    return {
        "RecoveryHost": str(answer.get("host", "")),
        "RecoveryHostFQDN": str(answer.get("fqdn", "")),
        "RecoveryVersion": str(answer.get("version", "")),
        "ServerCertificateThumbprint": hashlib.sha1(cert).hexdigest().upper() if cert else "",
    }


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class ReplicationConnectionTester:
    """The use case behind ``Msvm_ReplicationService.TestReplicationConnection`` and the REST route."""

    def __init__(self, jobs: JobSubmitter, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 ca_file: Path | None = None, client_cert: tuple[Path, Path] | None = None) -> None:
        self._jobs = jobs
        self._timeout = timeout
        self._context = client_ssl_context(ca_file, client_cert)

    @property
    def timeout(self) -> float:
        """The deadline of one probe, in seconds."""
        return self._timeout

    def submit(self, target: ConnectionTarget) -> Job:
        """Validate, then start a JobType 115 job that runs the probe; raises before any job on bad input."""
        validate_target(target)
        where = f"{target.connection_point}:{target.port}"

        async def work(handle: JobHandleLike) -> dict[str, str]:
            handle.progress(10)
            result = await probe(target, timeout=self._timeout, context=self._context)
            handle.progress(100)
            return result

        return self._jobs.submit(
            JobType.TEST_REPLICATION_CONNECTION,
            element_id=f"connection:{where}",
            description=f"Testing the replication connection to {where}",
            work=work,
            cancellable=True,
            message_id="JobTestReplicationConnection",
            args={"target": where},
        )

    async def run(self, target: ConnectionTarget) -> dict[str, str]:
        """Probe directly, without a job (for callers that wait anyway)."""
        return await probe(target, timeout=self._timeout, context=self._context)

