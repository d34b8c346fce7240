"""Shared FastAPI dependencies: the daemon's services, the caller and the caller's language."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from standby.api.texts import request_language

if TYPE_CHECKING:
    from standby.daemon.compose import Services


def get_services(request: Request) -> Services:
    """The ``Services`` the app was created with."""
    services: Services = request.app.state.services
    return services


def get_language(request: Request) -> str:
    """``en`` or ``de`` from ``Accept-Language``."""
    return request_language(request)


def get_user(request: Request) -> str:
    """Who asks: the Basic-auth user, ``local`` on the control socket, ``anonymous`` in in-process tests."""
    state: Any = request.state
    user = getattr(state, "user", None)
    return str(user) if user else "anonymous"


ServicesDep = Annotated["Services", Depends(get_services)]
LanguageDep = Annotated[str, Depends(get_language)]
UserDep = Annotated[str, Depends(get_user)]
