"""Per-listener ASGI wrappers: who may reach the one app, and through which door.

The daemon serves one ASGI app on several listeners and wraps it once per listener:

* ``control`` (the unix socket, mode 0600): no credentials; only root or the daemon's owner can open it,
  so requests run as the local administrator (``user = "local"``).
* ``https``: HTTP Basic auth against ``[users]``, except the public paths (``/healthz``, the peer ping).
* ``http`` (loopback only): the same Basic auth, but only CIM-XML (``/cimom``) and ``/healthz``; REST is
  served on HTTPS.

The authenticated user and the listener kind go into ``scope["state"]`` (``request.state.user`` /
``request.state.listener``) for the routes and the CIM-XML app.

Password checks (scrypt, tens of ms by design) are guarded by ``AuthGuard`` (``edge.throttle``): an address
with too many recent failures is answered 429 with ``Retry-After`` and no check at all; the checks run on a
small dedicated pool and, once its queue is full, further ones get 503 at once. Failures, lockouts and a
success after failures are audit lines (``edge.audit``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

from standby.edge.asgi import ASGIApp, Receive, Scope, Send, headers_of
from standby.edge.audit import AuditApp, auth_event, client_address
from standby.edge.texts import message
from standby.edge.throttle import FailureLimiter, PoolFull, SlowCheckPool
from standby.i18n import pick_language

ListenerKind = Literal["control", "https", "http"]

#: Paths anyone may call without credentials: liveness and the host-to-host ping.
PUBLIC_PATHS = frozenset({"/healthz", "/peer/v1/ping"})
#: The only paths the plain-HTTP listener serves.
HTTP_LISTENER_PREFIXES = ("/cimom", "/healthz")
LOCAL_USER = "local"
log = logging.getLogger(__name__)


class Verifier(Protocol):
    """``daemon.passwords.PasswordVerifier``, as seen from here."""

    def known(self, user: str, password: str) -> bool:
        """Cheap check against already verified pairs."""
        ...

    def verify(self, user: str, password: str) -> bool:
        """Full (slow) check."""
        ...


class AuthGuard:
    """What protects one daemon's password check: the per-address failure limiter and the slow-check pool.

    The daemon wraps each listener in its own gate and hands every gate the same guard
    (``daemon.serve.make_guards``), so the limits are per daemon, not per listener.
    """

    def __init__(self, limiter: FailureLimiter | None = None, pool: SlowCheckPool | None = None, *,
                 clock: Callable[[], float] = time.monotonic, busy_log_every: float = 10.0) -> None:
        self.limiter = limiter if limiter is not None else FailureLimiter(clock=clock)
        self.pool = pool if pool is not None else SlowCheckPool()
        self._clock = clock
        self._busy_log_every = busy_log_every
        self._busy_since_log = 0
        self._busy_logged_at: float | None = None

    def busy(self, user: str, address: str, listener: str) -> None:
        """Count a request refused because the pool is full; log that at most once per ``busy_log_every``."""
        self._busy_since_log += 1
        now = self._clock()
        if self._busy_logged_at is not None and now - self._busy_logged_at < self._busy_log_every:
            return
        auth_event("busy", user=user, address=address, listener=listener, refused=self._busy_since_log,
                   workers=self.pool.workers, max_waiting=self.pool.max_waiting)
        self._busy_logged_at = now
        self._busy_since_log = 0


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    name: str
    message_id: str
    fallback: str
    retry_after: float | None = None


class ListenerGate:
    """Wrap ``app`` for one listener kind (see the module docstring).

    Admitted requests go on through ``edge.audit.AuditApp`` (unless ``audit=False``), so every state-changing
    call on this listener is in the audit log with the user this gate found.
    """

    def __init__(self, app: ASGIApp, kind: ListenerKind, verifier: Verifier, *, guard: AuthGuard,
                 audit: bool = True) -> None:
        self.app: ASGIApp = AuditApp(app, kind) if audit else app
        self.kind = kind
        self.verifier = verifier
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, refuse (401/404/429/503) or pass the request on with ``state.user`` set."""
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
        verdict = await self._authenticate(scope)
        if isinstance(verdict, _Refusal):
            await _refuse(scope, send, verdict)
            return
        state["user"] = verdict
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> str | _Refusal:
        credentials = basic_credentials(scope)
        if credentials is None:
            return _UNAUTHORIZED
        user, password = credentials
        address = client_address(scope)
        limiter = self.guard.limiter
        # Checked before the cache too: a locked address must learn nothing, not even "this pair is known".
        wait = limiter.retry_after(address)
        if wait is not None:
            return _locked(wait)
        if self.verifier.known(user, password):
            self._succeeded(user, address)
            return user
        if not limiter.begin(address):
            return _Refusal(429, "AccessDenied", "AuthTooManyAtOnce",
                            "too many logins at once from this address; try again shortly", 1.0)
        try:
            ok = await self.guard.pool.run(partial(self._verify, user, password))
        except PoolFull:
            self.guard.busy(user, address, self.kind)
            return _Refusal(503, "Unavailable", "AuthBusy",
                            "too many logins are being checked; try again shortly", 1.0)
        finally:
            limiter.end(address)
        if ok:
            self._succeeded(user, address)
            return user
        lockout = limiter.failure(address)
        auth_event("failed", user=user, address=address, listener=self.kind)
        if lockout is None:
            return _UNAUTHORIZED
        auth_event("locked_out", user=user, address=address, listener=self.kind, failures=lockout.failures,
                   strike=lockout.strike, retry_after=round(lockout.seconds, 1),
                   refused=lockout.refused_before)
        return _locked(lockout.seconds)

    def _verify(self, user: str, password: str) -> bool:
        try:
            return bool(self.verifier.verify(user, password))
        except Exception:  # a broken user store reads as "not authenticated", not as a 500
            log.exception("password check failed")
            return False

    def _succeeded(self, user: str, address: str) -> None:
        forgiven = self.guard.limiter.success(address)
        if forgiven:
            auth_event("ok_after_failures", user=user, address=address, listener=self.kind, failures=forgiven)


_UNAUTHORIZED = _Refusal(401, "AccessDenied", "AuthRequired", "authentication required (HTTP Basic)")


def _locked(seconds: float) -> _Refusal:
    return _Refusal(429, "AccessDenied", "AuthLockedOut",
                    "too many failed logins from this address; try again later", seconds)


async def _refuse(scope: Scope, send: Send, refusal: _Refusal) -> None:
    extra: list[tuple[bytes, bytes]] = []
    if refusal.status == 401:
        extra.append((b"www-authenticate", b'Basic realm="standby", charset="UTF-8"'))
    args: dict[str, str] = {}
    if refusal.retry_after is not None:
        seconds = str(max(1, math.ceil(refusal.retry_after)))
        extra.append((b"retry-after", seconds.encode()))
        args["seconds"] = seconds
    language = pick_language(headers_of(scope).get("accept-language"))
    text = message(refusal.message_id, language, refusal.fallback, **args)
    await _reply(send, refusal.status, refusal.name, text, extra=extra)


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
    codes = {"NotFound": 32773, "AccessDenied": 32769, "Unavailable": 32777}
    body = json.dumps({"code": codes.get(name, 32768), "name": name, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
