"""The daemon's one ASGI app: REST (``/api/v1``), ``/healthz``, ``/metrics``, the peer ping and ``/cimom``.

Adding routes from another module is one line in ``ROUTERS`` below: write an ``APIRouter`` in
``standby/api/<name>.py`` (take the services with ``deps.ServicesDep``, call ``services.engine``, raise
``domain.errors`` — they become JSON ``{code, name, message}``) and list its router here.

CIM-XML is served at ``/cimom`` by ``standby.cimxml.create_app(object_manager, verifier)``; ``verifier`` is
``daemon.passwords.PasswordVerifier`` (``verifier(user, password) -> bool``). The listener gate has already
authenticated the caller: ``scope["state"]["user"]`` holds the user (``local`` on the control socket).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from starlette.routing import Route

from standby import __version__
from standby.api import failover, groups, jobs, metrics, planned, replication, status, vms
from standby.api.errors import install_error_handlers
from standby.api.metrics import make_registry
from standby.cimxml import create_app as create_cimxml_app

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.api")

#: Routers in matching order.
ROUTERS: tuple[APIRouter, ...] = (
    status.router,
    jobs.router,
    planned.router,  # before replication: its POST …/replication/{action} would catch …/reverse
    replication.router,
    metrics.router,
    failover.router,  # before vms: its POST /{ref}/{action} would catch /{ref}/failover
    vms.router,
    groups.router,
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
    for router in ROUTERS:
        app.include_router(router)
    mount_cimom(app, services)
    return app


def mount_cimom(app: FastAPI, services: Services) -> None:
    """Route ``POST /cimom`` to the CIM-XML app unchanged (a Mount would strip the prefix)."""
    served = create_cimxml_app(services.object_manager, services.verifier,
                               host_name=services.config.host.fqdn)
    app.router.routes.append(Route(CIMOM_PATH, endpoint=served, include_in_schema=False))
    log.info("CIM-XML mounted", extra={"fields": {"path": CIMOM_PATH}})
