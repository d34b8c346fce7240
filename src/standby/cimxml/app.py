"""The ASGI app behind ``POST /cimom``: HTTP method, Basic auth, DSP0200 headers, size limit, language.

The daemon mounts it on its HTTPS and loopback HTTP listeners (``Mount("/cimom", app)`` or as the whole app);
it answers whatever path reaches it. Operations run in a worker thread because the object manager blocks
(SQLite, job submission onto the daemon's loop).

HTTP-level answers (DSP0200 §7): 401 with ``WWW-Authenticate``; 405 for methods other than POST; 501 for
``M-POST`` (extension framework not supported; clients retry with POST); 400/501 with a ``CIMError`` header
for protocol errors; 413 for bodies over the limit (a declared ``Content-Length`` over it is refused before
anything is read; the daemon's default is ``[listeners.limits] cim_body_bytes``); 415 for a non-XML content
type. CIM errors are a 200 with ``<ERROR>`` inside. A client that goes away before its body is complete (or
is cut off by the listener's body deadline) gets no answer, and nothing of its request runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from standby.cim.backend import ObjectManager, RequestContext
from standby.cimxml.auth import BasicAuth, VerifyPassword
from standby.cimxml.language import pick_language
from standby.cimxml.messages import ProtocolError
from standby.cimxml.server import CimServer
from standby.edge.asgi import Receive, Scope, Send, headers_of

log = logging.getLogger(__name__)


#: Default request body limit; a CIM-XML request with a few embedded instances is a few KiB.
DEFAULT_MAX_BODY = 4 * 1024 * 1024
_XML_TYPES = ("application/xml", "text/xml")


class _ClientGone(Exception):
    """The connection closed before the whole body arrived."""


class CimXmlApp:
    """The ``/cimom`` endpoint as a plain ASGI application."""

    def __init__(
        self,
        object_manager: ObjectManager,
        verify_password: VerifyPassword | None,
        *,
        host_name: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        trust_unix_socket: bool = True,
    ) -> None:
        self.server = CimServer(object_manager, host_name or socket.getfqdn())
        self.auth = BasicAuth(verify_password) if verify_password is not None else None
        self.max_body = max_body
        self.trust_unix_socket = trust_unix_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = headers_of(scope)
        try:
            await self._serve(scope, headers, receive, send)
        except ProtocolError as exc:
            await _reject(send, exc, headers)
        except _ClientGone:
            log.info("cimxml request abandoned: the body was not received completely")

    async def _serve(self, scope: Scope, headers: dict[str, str], receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "")).upper()
        if method == "M-POST":
            raise ProtocolError(501, None, "M-POST is not supported; use POST")
        if method != "POST":
            raise ProtocolError(405, None, "Only POST is allowed at /cimom")
        user = await self._user(scope, headers)
        _check_protocol_headers(headers)
        body = await _read_body(receive, headers, self.max_body)
        language = pick_language(headers.get("accept-language"))
        ctx = RequestContext(user=user, language=language)
        reply = await asyncio.to_thread(
            self.server.handle,
            body,
            ctx,
            cim_method=headers.get("cimmethod"),
            cim_object=headers.get("cimobject"),
        )
        log.debug("cimxml user=%s method=%s status=%s", user, reply.method, reply.cim_status)
        await _respond(
            send,
            200,
            [
                (b"content-type", b'application/xml; charset="utf-8"'),
                (b"cimoperation", b"MethodResponse"),
                (b"content-language", language.encode()),
            ],
            reply.body,
        )

    async def _user(self, scope: Scope, headers: dict[str, str]) -> str:
        # The daemon's listener gate authenticates before us and leaves the user in the ASGI scope's state;
        # a client cannot set that, so it is trusted and the password is not checked twice.
        gated = (scope.get("state") or {}).get("user")
        if isinstance(gated, str) and gated:
            return gated
        if self.auth is None:
            return "local"
        server = scope.get("server")
        if self.trust_unix_socket and server is not None and server[1] is None:
            return "local"  # the control socket: only its owner can open it
        user = await asyncio.to_thread(self.auth.authenticate, headers.get("authorization"))
        if user is None:
            raise ProtocolError(401, None, "Authentication required")
        return user


def create_app(
    object_manager: ObjectManager,
    verify_password: VerifyPassword | None,
    *,
    host_name: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    trust_unix_socket: bool = True,
) -> CimXmlApp:
    """The ``/cimom`` ASGI app. ``verify_password(user, password) -> bool`` checks Basic credentials (None:
    no authentication, for tests); ``host_name`` goes into returned instance paths (default: the FQDN)."""
    return CimXmlApp(
        object_manager,
        verify_password,
        host_name=host_name,
        max_body=max_body,
        trust_unix_socket=trust_unix_socket,
    )


def _check_protocol_headers(headers: dict[str, str]) -> None:
    operation = headers.get("cimoperation")
    if operation is None or operation.strip().lower() != "methodcall":
        raise ProtocolError(400, "unsupported-operation", "The CIMOperation header must be MethodCall")
    if "cimbatch" in headers:
        raise ProtocolError(
            501, "multiple-requests-unsupported", "Batched (multiple) requests are not supported"
        )
    version = headers.get("cimprotocolversion")
    if version is not None and not version.strip().startswith("1."):
        raise ProtocolError(501, "unsupported-protocol-version", f"CIMProtocolVersion {version} is not 1.x")
    content_type = headers.get("content-type")
    if content_type is not None and not any(t in content_type.lower() for t in _XML_TYPES):
        raise ProtocolError(415, None, f"Content-Type {content_type} is not XML")


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ProtocolError(400, None, "Content-Length is not a number")
        if int(declared) > limit:
            raise ProtocolError(413, None, f"The request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, None, f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _reject(send: Send, exc: ProtocolError, headers: dict[str, str]) -> None:
    extra: list[tuple[bytes, bytes]] = [(b"content-type", b"text/plain; charset=utf-8")]
    if exc.cim_error:
        extra.append((b"cimerror", exc.cim_error.encode()))
    if exc.status == 401:
        extra.append((b"www-authenticate", b'Basic realm="standby"'))
    if exc.status == 405:
        extra.append((b"allow", b"POST"))
    if exc.status == 413:
        extra.append((b"connection", b"close"))
    log.info("cimxml rejected: %s %s (%s)", exc.status, exc.cim_error or "", exc.message)
    await _respond(send, exc.status, extra, (exc.message + "\n").encode())


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
