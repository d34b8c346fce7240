"""One CIM-XML request in, one CIM-XML response out — everything between the HTTP layer and the operations.

:meth:`CimServer.handle` parses the body, checks the ``CIMMethod`` / ``CIMObject`` headers against it, runs
the operation and turns every failure into the right answer: a ``ProtocolError`` for HTTP-level problems,
an ``ERROR`` element inside a 200 for CIM errors, its description in the request's language (rendered here,
once). Unexpected exceptions are logged and answered CIM_ERR_FAILED; they never reach the client as a
traceback.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass

from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMError,
    CIMMethod,
)

from standby.cim.backend import ObjectManager, RequestContext
from standby.cim.errors import CimFault
from standby.cimxml import extrinsic, intrinsic, wire
from standby.cimxml.context import Operation
from standby.cimxml.language import describe_error, describe_standby_error
from standby.cimxml.messages import Call, ExtrinsicCall, IntrinsicCall, ProtocolError
from standby.domain import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """A 200 response body and whether it reports a CIM error (for logs and metrics)."""

    body: bytes
    method: str
    cim_status: int = 0


class CimServer:
    """Runs CIM-XML requests against an object manager; thread-safe, call :meth:`handle` off the loop."""

    def __init__(self, object_manager: ObjectManager, host: str) -> None:
        self.om = object_manager
        self.host = host
        self._declarations: dict[tuple[str, str, str], CIMMethod | None] = {}

    def handle(
        self,
        body: bytes,
        ctx: RequestContext,
        *,
        cim_method: str | None = None,
        cim_object: str | None = None,
        verify_headers: bool = True,
    ) -> Reply:
        """Answer one request body; raises :class:`ProtocolError` for HTTP-level errors.

        ``verify_headers=False`` skips the CIMMethod/CIMObject check (for callers without HTTP headers).
        """
        call = wire.parse_request(body)
        if verify_headers:
            check_headers(call, cim_method, cim_object)
        op = Operation(self.om, ctx, self.host, self._declarations)
        intrinsic_call = isinstance(call, IntrinsicCall)
        try:
            if isinstance(call, IntrinsicCall):
                element = wire.imethod_response(
                    call.method, intrinsic.run(op, call.method, call.namespace, call.params)
                )
            else:
                element = extrinsic.run(op, call)
            return Reply(wire.response_document(call.message_id, element), call.method)
        except CIMError as exc:
            code, text = int(exc.status_code), describe_error(exc, ctx.language)
        except errors.StandbyError as exc:
            code, text = _standby_status(exc), describe_standby_error(exc, ctx.language)
        except Exception:
            log.exception("CIM-XML %s failed unexpectedly", call.method)
            code = CIM_ERR_FAILED
            text = describe_error(CimFault(code, f"{call.method} failed unexpectedly; the server log has the "
                                                 "details", message_id="CimUnexpectedFailure",
                                           operation=call.method), ctx.language)
        element = wire.error_response(call.method, code, text, intrinsic=intrinsic_call)
        return Reply(wire.response_document(call.message_id, element), call.method, code)


def _standby_status(exc: errors.StandbyError) -> int:
    """The CIM status for an engine error that reached an intrinsic operation (the contract says CIMError)."""
    if isinstance(exc, errors.NotFound):
        return int(CIM_ERR_NOT_FOUND)
    if isinstance(exc, errors.InvalidParameter):
        return int(CIM_ERR_INVALID_PARAMETER)
    if isinstance(exc, errors.AccessDenied):
        return int(CIM_ERR_ACCESS_DENIED)
    if isinstance(exc, errors.NotSupported):
        return int(CIM_ERR_NOT_SUPPORTED)
    return int(CIM_ERR_FAILED)


def _norm_ns(text: str) -> str:
    return urllib.parse.unquote(text).strip().strip("/").replace("\\", "/").lower()


def check_headers(call: Call, cim_method: str | None, cim_object: str | None) -> None:
    """DSP0200 §7.3: ``CIMMethod`` must name the body's method and ``CIMObject`` its namespace/object."""
    if cim_method is None:
        raise ProtocolError(400, "header-mismatch", "The CIMMethod header is missing")
    if urllib.parse.unquote(cim_method).strip().lower() != call.method.lower():
        raise ProtocolError(
            400,
            "header-mismatch",
            f"CIMMethod header {cim_method!r} does not match the body's {call.method!r}",
        )
    if cim_object is None:
        raise ProtocolError(400, "header-mismatch", "The CIMObject header is missing")
    if isinstance(call, ExtrinsicCall):
        # The object path's spelling varies by client; its namespace part is what must agree.
        namespace = urllib.parse.unquote(cim_object).split(":", 1)[0]
        expected = call.namespace
    else:
        namespace, expected = cim_object, call.namespace
    if _norm_ns(namespace) != _norm_ns(expected):
        raise ProtocolError(
            400,
            "header-mismatch",
            f"CIMObject header {cim_object!r} does not match the body's namespace {expected!r}",
        )
