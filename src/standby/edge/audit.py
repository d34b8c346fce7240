"""The audit log: one line per authentication event worth keeping and per state-changing call.

Everything goes to the ``standby.audit`` logger with ``extra={"fields": ...}`` (the daemon's JSON or
key=value lines; ``daemon.logs`` keeps that logger at INFO whatever the daemon's level). Fields:

* authentication (``event=auth``): ``result`` (``failed``, ``ok_after_failures``, ``locked_out``, ``busy``),
  ``user`` (the name tried), ``address``, ``listener`` and, by result, ``failures``, ``retry_after``,
  ``refused``. A request refused while its address is locked gets no line of its own: the next
  ``locked_out`` line of that address counts them (``refused``), so a flood cannot flood the log.
* calls (``event=call``): ``who`` (the user, or the peer host), ``address``, ``listener``, ``method``,
  ``path``, ``what`` (method and path, or for CIM-XML the CIM method with its class or namespace), ``status``
  and for CIM-XML ``return_value`` (extrinsic methods) or ``cim_error`` (an ``<ERROR>`` answer), and
  ``duration_ms``.

A call is state-changing when its HTTP method is not GET/HEAD/OPTIONS, except CIM-XML's POSTs, which change
state only for extrinsic methods and the intrinsic writes (DSP0200: the method is in the ``CIMMethod``
header, the target in ``CIMObject``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from urllib.parse import unquote

from standby.edge.asgi import ASGIApp, Message, Receive, Scope, Send, headers_of

AUDIT_LOGGER = "standby.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: DSP0200 intrinsic methods that only read; every other CIMMethod (extrinsic or intrinsic write) is audited.
CIM_READ_METHODS = frozenset({
    "GetClass", "EnumerateClasses", "EnumerateClassNames", "GetInstance", "EnumerateInstances",
    "EnumerateInstanceNames", "ExecQuery", "Associators", "AssociatorNames", "References", "ReferenceNames",
    "GetProperty", "GetQualifier", "EnumerateQualifiers", "OpenEnumerateInstances",
    "OpenEnumerateInstancePaths", "OpenAssociatorInstances", "OpenAssociatorInstancePaths",
    "OpenReferenceInstances", "OpenReferenceInstancePaths", "OpenQueryInstances", "PullInstancesWithPath",
    "PullInstancePaths", "PullInstances", "CloseEnumeration", "EnumerationCount",
})
CIM_INTRINSIC_WRITES = frozenset({
    "CreateClass", "ModifyClass", "DeleteClass", "CreateInstance", "ModifyInstance", "DeleteInstance",
    "SetProperty", "SetQualifier", "DeleteQualifier",
})
CIMOM_PATH = "/cimom"
#: Enough of a CIM-XML answer to hold its IRETURNVALUE/RETURNVALUE or ERROR; the rest is not kept.
_CIM_SCAN = 64 * 1024
_RETURN_VALUE = re.compile(rb"<RETURNVALUE[^>]*>\s*<VALUE>\s*([^<\s]+)\s*</VALUE>")
_CIM_ERROR = re.compile(rb"<ERROR[^>]*\bCODE=\"(\d+)\"")


def auth_event(result: str, *, user: str | None, address: str, listener: str, **fields: object) -> None:
    """One authentication line (``result`` as in the module docstring)."""
    line: dict[str, object] = {"event": "auth", "result": result, "user": user or "-", "address": address,
                               "listener": listener}
    line.update(fields)
    level = logging.WARNING if result in ("locked_out", "busy") else logging.INFO
    audit_log.log(level, f"authentication {result}", extra={"fields": line})


def client_address(scope: Scope) -> str:
    """The peer's IP address, or ``unix`` for the control socket."""
    client = scope.get("client")
    if client:
        return str(client[0])
    return "unix"


def cim_what(headers: dict[str, str]) -> str | None:
    """``Class.Method`` of an extrinsic CIM-XML call, ``Method namespace`` of an intrinsic write, or None
    for a read (nothing to audit)."""
    method = headers.get("cimmethod", "").strip()
    if not method or method in CIM_READ_METHODS:
        return None
    target = unquote(headers.get("cimobject", "")).strip()
    if method in CIM_INTRINSIC_WRITES:
        return f"{method} {target}" if target else method
    # An extrinsic target is "namespace:Class.key=…" (an instance) or "namespace:Class" (a static method).
    _, colon, rest = target.partition(":")
    classname = (rest if colon else target).split(".", 1)[0].strip()
    return f"{classname}.{method}" if classname else method


def is_state_changing(scope: Scope) -> tuple[bool, str]:
    """Whether the request is audited, and what it does (``METHOD /path`` or the CIM method)."""
    method = str(scope.get("method", "")).upper()
    path = str(scope.get("path", ""))
    if method in _READ_METHODS:
        return False, ""
    if path == CIMOM_PATH and method == "POST":
        what = cim_what(headers_of(scope))
        return (what is not None), (what or "")
    return True, f"{method} {path}"


def _who(scope: Scope) -> str:
    state = scope.get("state") or {}
    for key in ("user", "peer_host"):
        value = state.get(key)
        if isinstance(value, str) and value:
            return value
    return "-"


class AuditApp:
    """Wrap an ASGI app so that every state-changing call leaves one ``event=call`` line when it ends.

    The user (``state.user``) or peer host (``state.peer_host``) is read when the call is over, so this can
    sit inside or outside the gate that sets it; nothing of the request body is read or held.
    """

    def __init__(self, app: ASGIApp, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on; log it afterwards when it changes state."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        audited, what = is_state_changing(scope)
        if not audited:
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        is_cim = scope.get("path") == CIMOM_PATH
        status = 0
        scanned = bytearray()

        async def watch(message: Message) -> None:
            nonlocal status
            kind = message.get("type")
            if kind == "http.response.start":
                status = int(message.get("status", 0))
            elif kind == "http.response.body" and is_cim and len(scanned) < _CIM_SCAN:
                scanned.extend(bytes(message.get("body", b""))[: _CIM_SCAN - len(scanned)])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            self._log(scope, what, status or 500, started, scanned if is_cim else None)
            raise
        self._log(scope, what, status, started, scanned if is_cim else None)

    def _log(self, scope: Scope, what: str, status: int, started: float,
             cim_body: bytes | bytearray | None) -> None:
        fields: dict[str, object] = {
            "event": "call", "who": _who(scope), "address": client_address(scope), "listener": self.listener,
            "method": str(scope.get("method", "")).upper(), "path": str(scope.get("path", "")), "what": what,
            "status": status, "duration_ms": round((time.monotonic() - started) * 1000.0, 1),
        }
        if cim_body:
            fields.update(cim_result(cim_body))
        audit_log.info("call", extra={"fields": fields})


def cim_result(body: bytes | bytearray) -> dict[str, object]:
    """``return_value`` of an extrinsic method's answer or ``cim_error`` of an ``<ERROR>`` (may be empty)."""
    found: dict[str, object] = {}
    error = _CIM_ERROR.search(body)
    if error is not None:
        found["cim_error"] = int(error.group(1))
    value = _RETURN_VALUE.search(body)
    if value is not None:
        text = value.group(1).decode("ascii", "replace")
        found["return_value"] = int(text) if text.isdigit() else text
    return found


def audited(app: ASGIApp, listener: str) -> AuditApp:
    """``app`` with its state-changing calls audited (the daemon wraps the peer listener's app in this)."""
    return AuditApp(app, listener)


def audit_fields(records: Iterable[logging.LogRecord]) -> list[dict[str, object]]:
    """The ``fields`` of audit records (for tests that capture them)."""
    out: list[dict[str, object]] = []
    for record in records:
        fields = getattr(record, "fields", None)
        if record.name == AUDIT_LOGGER and isinstance(fields, dict):
            out.append(dict(fields))
    return out
