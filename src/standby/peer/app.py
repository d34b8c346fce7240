"""The peer listener: its own ASGI app (only ``/peer/v1``) behind mutual TLS, and the uvicorn wiring.

uvicorn does not put the client certificate into the ASGI scope, so ``PeerHttpToolsProtocol`` (uvicorn's
httptools protocol: llhttp in C; h11's pure-Python body parsing was a third of the replica's loop while logs
arrived) copies it from the TLS connection into the per-connection ``scope["state"]`` (``peer_certificate``,
DER). ``PeerH11Protocol`` does the same on h11; only ``bench/receive_alone.py`` uses it, for comparison.
``PeerGate`` turns it into the caller's identity (``domain.peer_access.CallerIdentity``: its host name, first
DNS SAN else CN, in ``scope["state"]["peer_host"]``, with every DNS and IP SAN in ``peer_identity``);
a request without one is refused with 403 (the TLS layer has already refused certificates of another CA).

``PeerHttpToolsProtocol`` carries the listener guard's read deadlines (``edge.guard``) when the daemon
creates it; bodies are limited per route by ``edge.bodylimit``: the log PUT is streamed and unbounded, every
other (JSON) body is small.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from standby.domain.errors import AccessDenied
from standby.domain.replica import OutOfSequence
from standby.edge.asgi import ASGIApp, Receive, Scope, Send
from standby.edge.bodylimit import DEFAULT_JSON_BODY, BodyLimit, Exempt
from standby.edge.errors import error_body, install_error_handlers
from standby.edge.guard import GuardedHttpToolsProtocol
from standby.edge.texts import request_language
from standby.peer import pki, routes
from standby.peer.routes import PeerServices
from standby.storage.logformat import LogCorrupt

#: Seconds an idle peer connection stays open (uvicorn: 5): longer than the peer client keeps one
#: (``peer.client.KEEP_ALIVE``), so the client closes it first and never sends on a closing connection.
KEEP_ALIVE = 75
#: The one streamed route: a log is consumed as it arrives and may be any size.
LOG_PUT = Exempt("PUT", re.compile(re.escape(routes.PREFIX) + r"/replicas/[^/]+/logs/[^/]+"))


def _with_certificate(app_state: dict[str, Any], transport: asyncio.BaseTransport) -> dict[str, Any]:
    """A copy of ``app_state`` (shared by every connection) with this connection's client certificate."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return {**app_state, "peer_certificate": der}


class PeerHttpToolsProtocol(GuardedHttpToolsProtocol):
    """uvicorn's httptools protocol that hands the verified client certificate to the app (the listener's)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Remember the peer's certificate for every request of this connection."""
        super().connection_made(transport)
        self.app_state = _with_certificate(self.app_state, transport)


class PeerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that hands the verified client certificate to the app (kept for comparison:
    ``bench/receive_alone.py``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Remember the peer's certificate for every request of this connection."""
        super().connection_made(transport)
        self.app_state = _with_certificate(self.app_state, transport)


class PeerGate:
    """Admit a request only with a client certificate naming a host; put that name in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (403) or pass on with ``state.peer_host`` set."""
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        der = state.get("peer_certificate")
        identity = pki.peer_identity_from_der(der) if der else None
        if identity is None:  # the peer-access table's "wrong CA" kind: no route is reached
            refusal = AccessDenied("a client certificate naming the calling host is required",
                                   message_id="PeerCertificateRequired")
            body = json.dumps(error_body(refusal, request_language(Request(scope)))).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        state["peer_host"] = identity.name
        state["peer_identity"] = identity
        await self.app(scope, receive, send)


def create_peer_app(peer: PeerServices, cert_file: Path, *, max_body: int = DEFAULT_JSON_BODY) -> ASGIApp:
    """The ``/peer/v1`` app over ``peer``; ``cert_file`` is this host's certificate (its thumbprint);
    ``max_body`` limits every request body except the streamed log PUT."""
    app = FastAPI(title="standby peer", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.peer = peer
    app.state.thumbprint = _thumbprint(cert_file)
    install_error_handlers(app)
    app.add_exception_handler(OutOfSequence, _out_of_sequence)
    app.add_exception_handler(LogCorrupt, _log_corrupt)
    app.include_router(routes.router)
    return PeerGate(BodyLimit(app, max_body, exempt=[LOG_PUT]))


def _thumbprint(cert_file: Path) -> str:
    try:
        return pki.thumbprint(pki.load_certificates(cert_file)[0])
    except Exception:  # a missing or odd certificate must not keep the listener from starting
        return ""


async def _out_of_sequence(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OutOfSequence)
    body: dict[str, Any] = error_body(exc, request_language(request))
    return routes.out_of_sequence_response(exc.head_sequence, exc.reason, body)


async def _log_corrupt(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LogCorrupt)
    return JSONResponse(error_body(exc, request_language(request)), status_code=422)
