"""The daemon's one ASGI app: REST (``/api/v1``), ``/healthz``, ``/metrics``, the peer ping and ``/cimom``.

Adding routes from another module is one line in ``ROUTERS`` below: write an ``APIRouter`` in
``standby/api/<name>.py`` (take the services with ``deps.ServicesDep``, raise ``domain.errors`` — they become
JSON ``{code, name, message}``) and list ``"standby.api.<name>"`` here. A listed module that is not importable
yet is skipped with a log line, so the daemon never depends on unfinished work.

CIM-XML is served at ``/cimom`` by ``standby.cimxml.create_app(object_manager, verifier)`` (a router, or an
ASGI app answering ``POST /cimom``) when that exists and the services carry an object manager; ``verifier``
is ``daemon.passwords.PasswordVerifier`` (``verifier(user, password) -> bool``). The listener gate has
already authenticated the caller: ``scope["state"]["user"]`` holds the user (``local`` on the control socket).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from starlette.routing import Route

from standby import __version__
from standby.api.errors import install_error_handlers
from standby.api.metrics import make_registry

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.api")

#: Router modules, each exposing ``router: APIRouter``. Register a new one with one line here.
ROUTERS: tuple[str, ...] = (
    "standby.api.status",
    "standby.api.jobs",
    "standby.api.planned",  # before replication: its POST …/replication/{action} would catch …/reverse
    "standby.api.replication",
    "standby.api.metrics",
    "standby.api.failover",  # before vms: its POST /{ref}/{action} would catch /{ref}/failover
    "standby.api.vms",
    "standby.api.groups",
)

CIMOM_PATH = "/cimom"


def create_app(services: Services) -> FastAPI:
    """Build the app around ``services`` (``app.state.services``)."""
    app = FastAPI(
        title="standby",
        version=__version__,
        description="VM replication and disaster-recovery failover for Linux/KVM (REST API).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.metrics_registry = make_registry(services)
    install_error_handlers(app)
    for name in ROUTERS:
        router = _load_router(name)
        if router is not None:
            app.include_router(router)
    mount_cimom(app, services)
    return app


def _load_router(module_name: str) -> APIRouter | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        log.info("router not available yet", extra={"fields": {"module": module_name}})
        return None
    router: APIRouter = module.router
    return router


def mount_cimom(app: FastAPI, services: Services) -> bool:
    """Mount E's CIM-XML app at ``/cimom`` when it and C's object manager exist; whether it was mounted."""
    if services.object_manager is None:
        log.info("CIM-XML not mounted: no object manager yet")
        return False
    try:
        cimxml: Any = importlib.import_module("standby.cimxml")
    except ModuleNotFoundError:
        return False
    factory = getattr(cimxml, "create_app", None)
    if factory is None:
        log.info("CIM-XML not mounted: standby.cimxml.create_app does not exist yet")
        return False
    served = factory(services.object_manager, services.verifier, host_name=services.config.host.fqdn)
    if isinstance(served, APIRouter):
        app.include_router(served)
    else:
        # A plain ASGI app that itself answers ``POST /cimom``: route the path to it unchanged (a Mount
        # would strip the prefix).
        app.router.routes.append(Route(CIMOM_PATH, endpoint=served, include_in_schema=False))
    log.info("CIM-XML mounted", extra={"fields": {"path": CIMOM_PATH}})
    return True
