"""Shared FastAPI dependencies: the daemon's services, the caller and the caller's language."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends
from starlette.requests import Request

from standby.cim.backend import ObjectManager
from standby.domain.entities import Host
from standby.edge.texts import request_language
from standby.engine.jobs import JobManager
from standby.engine.systems import Engine


class Services(Protocol):
    """What the REST routes use of the daemon's services (``daemon.compose.Services`` provides it)."""

    @property
    def engine(self) -> Engine:
        """The engine entries every route calls."""

    @property
    def jobs(self) -> JobManager:
        """The jobs the entries start."""

    @property
    def host(self) -> Host:
        """This host."""

    @property
    def started_at(self) -> datetime:
        """When the daemon started."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The daemon's clock."""

    @property
    def object_manager(self) -> ObjectManager:
        """The CIM object model ``/cimom`` serves."""

    @property
    def verifier(self) -> Callable[[str, str], bool]:
        """Checks a user's password."""

    @property
    def data_dir(self) -> Path:
        """Where the daemon keeps its state."""

    @property
    def peer_port(self) -> int:
        """This host's peer listener port."""


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


ServicesDep = Annotated[Services, Depends(get_services)]
LanguageDep = Annotated[str, Depends(get_language)]
UserDep = Annotated[str, Depends(get_user)]
