"""How the REST surface reports failures: JSON ``{code, name, message}`` with a fitting HTTP status.

``code`` is the Hyper-V return code of the ``StandbyError`` (32773, 32775, …), ``name`` its class name and
``message`` the text in the caller's language. Validation errors from FastAPI become 400 / 32773; anything
unexpected becomes 500 / 32768 with the details in the daemon log, never in the answer.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from standby.domain.enums import ReturnCode
from standby.domain.errors import (
    AccessDenied,
    FileNotFound,
    IncorrectDataType,
    InUse,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
    Unavailable,
)
from standby.edge.texts import error_text, message, request_language

log = logging.getLogger("standby.api")

#: Checked in order: the first class the error is an instance of decides the status.
_STATUS: tuple[tuple[type[StandbyError], int], ...] = (
    (NotFound, 404),
    (InvalidState, 409),
    (InUse, 409),
    (InvalidParameter, 400),
    (AccessDenied, 403),
    (FileNotFound, 404),  # a file the request names, as NotFound is an object it names
    (IncorrectDataType, 400),
    (NotSupported, 501),
    (Unavailable, 503),
)


def http_status(exc: StandbyError) -> int:
    """The HTTP status for a domain error (500 when nothing more specific fits)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: StandbyError, language: str) -> dict[str, object]:
    """The JSON body for a domain error."""
    return {"code": int(exc.code), "name": type(exc).__name__, "message": error_text(exc, language)}


async def _standby_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StandbyError)
    language = request_language(request)
    return JSONResponse(error_body(exc, language), status_code=http_status(exc),
                        headers={"content-language": language})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path"))
        problems.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    detail = "; ".join(problems) or "invalid request"
    language = request_language(request)
    text = message("InvalidRequest", language, f"invalid request: {detail}", detail=detail)
    body = {"code": int(ReturnCode.INVALID_PARAMETER), "name": "InvalidParameter", "message": text}
    return JSONResponse(body, status_code=400, headers={"content-language": language})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    name = {404: "NotFound", 405: "NotSupported", 401: "AccessDenied", 403: "AccessDenied"}.get(
        exc.status_code, "Failed"
    )
    code = {
        "NotFound": ReturnCode.INVALID_PARAMETER,
        "NotSupported": ReturnCode.NOT_SUPPORTED,
        "AccessDenied": ReturnCode.ACCESS_DENIED,
    }.get(name, ReturnCode.FAILED)
    body = {"code": int(code), "name": name, "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc, extra={"fields": {"path": request.url.path}})
    language = request_language(request)
    text = message("InternalError", language, "internal error; the daemon log has the details")
    body = {"code": int(ReturnCode.FAILED), "name": "StandbyError", "message": text}
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above on ``app``."""
    app.add_exception_handler(StandbyError, _standby_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
