"""The daemon's one ASGI app: REST (``/api/v1``), ``/healthz``, ``/metrics``, the peer ping and ``/cimom``.

Adding routes from another module is one line in ``ROUTERS`` below: write an ``APIRouter`` in
``standby/api/<name>.py`` (take the services with ``deps.ServicesDep``, call ``services.engine``, raise
``domain.errors`` — they become JSON ``{code, name, message}``) and list its router here.

The daemon adds ``POST /cimom`` (``standby.cimxml``) next to these routes: the two edges are siblings. The
listener gate has already authenticated the caller: ``scope["state"]["user"]`` holds the user (``local`` on
the control socket).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI

from standby import __version__
from standby.api import failover, groups, jobs, metrics, planned, replica_server, replication, status, vms
from standby.api.metrics import make_registry
from standby.edge.errors import install_error_handlers

if TYPE_CHECKING:
    from standby.api.deps import Services

log = logging.getLogger("standby.api")

#: Routers in matching order.
ROUTERS: tuple[APIRouter, ...] = (
    status.router,
    jobs.router,
    planned.router,  # before replication: its POST …/replication/{action} would catch …/reverse
    replication.router,
    replica_server.router,
    metrics.router,
    failover.router,  # before vms: its POST /{ref}/{action} would catch /{ref}/failover
    vms.router,
    groups.router,
)

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
    return app
