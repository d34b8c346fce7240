"""Per-listener ASGI wrappers: who may reach the one app, and through which door.

The daemon serves one ASGI app on several listeners and wraps it once per listener:

* ``control`` (the unix socket, mode 0600): no credentials; only root or the daemon's owner can open it,
  so requests run as the local administrator (``user = "local"``).
* ``https``: HTTP Basic auth against ``[users]``, except the public paths (``/healthz``, the peer ping).
* ``http`` (loopback only): the same Basic auth, but only CIM-XML (``/cimom``) and ``/healthz``; REST is
  served on HTTPS.

The authenticated user and the listener kind go into ``scope["state"]`` (``request.state.user`` /
``request.state.listener``) for the routes and the CIM-XML app.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ListenerKind = Literal["control", "https", "http"]

#: Paths anyone may call without credentials: liveness and the host-to-host ping.
PUBLIC_PATHS = frozenset({"/healthz", "/peer/v1/ping"})
#: The only paths the plain-HTTP listener serves.
HTTP_LISTENER_PREFIXES = ("/cimom", "/healthz")
LOCAL_USER = "local"


class Verifier(Protocol):
    """``daemon.passwords.PasswordVerifier``, as seen from here."""

    def known(self, user: str, password: str) -> bool:
        """Cheap check against already verified pairs."""
        ...

    def verify(self, user: str, password: str) -> bool:
        """Full (slow) check."""
        ...


class ListenerGate:
    """Wrap ``app`` for one listener kind (see the module docstring)."""

    def __init__(self, app: ASGIApp, kind: ListenerKind, verifier: Verifier) -> None:
        self.app = app
        self.kind = kind
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, refuse (401/404) or pass the request on with ``state.user`` set."""
        if scope["type"] == "websocket" and self.kind != "control":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["listener"] = self.kind
        path: str = scope.get("path", "")
        if self.kind == "control":
            state["user"] = LOCAL_USER
            await self.app(scope, receive, send)
            return
        if self.kind == "http" and not path.startswith(HTTP_LISTENER_PREFIXES):
            await _reply(send, 404, "NotFound", "plain HTTP serves only /cimom; use HTTPS for the REST API")
            return
        if path in PUBLIC_PATHS:
            state["user"] = None
            await self.app(scope, receive, send)
            return
        user = await self._authenticate(scope)
        if user is None:
            await _reply(send, 401, "AccessDenied", "authentication required (HTTP Basic)",
                         extra=[(b"www-authenticate", b'Basic realm="standby", charset="UTF-8"')])
            return
        state["user"] = user
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> str | None:
        credentials = basic_credentials(scope)
        if credentials is None:
            return None
        user, password = credentials
        if self.verifier.known(user, password):
            return user
        # scrypt is deliberately slow: keep it off the event loop.
        ok = await asyncio.to_thread(self.verifier.verify, user, password)
        return user if ok else None


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """The (user, password) of an ``Authorization: Basic`` header, or None."""
    for name, value in scope.get("headers", []):
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep and user else None
    return None


async def _reply(
    send: Send, status: int, name: str, message: str, *, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    codes = {"NotFound": 32773, "AccessDenied": 32769}
    body = json.dumps({"code": codes.get(name, 32768), "name": name, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
