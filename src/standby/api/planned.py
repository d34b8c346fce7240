"""REST for planned failover, reverse and extended replication every call a job (202):

- ``POST /api/v1/vms/{ref}/failover/prepare``: Start-VMFailover -Prepare (RequestReplicationStateChange 4) on
  the primary, VM off;
- ``POST /api/v1/vms/{ref}/replication/reverse`` ``{replica?, port?, interval?, history?, …}``:
  Set-VMReplication -Reverse (ReverseReplicationRelationship) on the failed-over replica; the replica host
  defaults to the old primary and every other setting to the current relationship's;
- ``POST /api/v1/vms/{ref}/replication/as-replica``: Enable-VMReplication -AsReplica
  (RequestReplicationStateChange 2);
- ``POST /api/v1/vms/{ref}/replication/extended`` (the enable body): Enable-VMReplication on a replica VM
  (extended replication to a third host);
- ``POST /api/v1/vms/{ref}/replication/continue``: Resume-VMReplication -Continue
  (ChangeReplicationModeToPrimary of the extended relationship, after a committed failover).
Registered before ``standby.api.replication`` in ``api/app.py``: its ``POST …/replication/{action}`` would
catch these.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import respond
from standby.api.replication import EnableBody, settings_from
from standby.domain.entities import ReplicationSettings, VirtualMachine
from standby.domain.enums import RelationshipIndex

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(prefix="/api/v1/vms", tags=["planned failover"])
VM = "/{ref}/replication"


class ReverseBody(BaseModel):
    """Set-VMReplication -Reverse: each field omitted keeps the current relationship's value."""

    replica: str | None = Field(default=None, max_length=255,
                                description="new replica host (default: the old primary)")
    port: int | None = Field(default=None, ge=1, le=65535, description="its peer (mutual TLS) port")
    interval: int | None = Field(default=None, description="seconds: 30, 300, 900 or 1-29 (extension)")
    history: int | None = Field(default=None, ge=0, le=720, description="recovery history in hours")
    compression: bool | None = None


def _vm(services: Services, ref: str) -> VirtualMachine:
    return services.engine.systems.get(ref)


def reverse_settings(current: ReplicationSettings, body: ReverseBody) -> ReplicationSettings:
    """The reversed relationship's settings: the old primary becomes the replica unless one is named."""
    changes: dict[str, Any] = {"recovery_connection_point": body.replica or current.primary_connection_point,
                               "primary_connection_point": ""}
    for field, value in (("recovery_port", body.port), ("interval_seconds", body.interval),
                         ("recovery_history", body.history), ("compression_enabled", body.compression)):
        if value is not None:
            changes[field] = value
    return dataclasses.replace(current, **changes)


@router.post("/{ref}/failover/prepare", status_code=202, summary="Start-VMFailover -Prepare (async)")
def prepare(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Send the last changes of the (turned off) primary VM and lock it from starting; 202 with the job."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.request_state_change(vm.vm_id, 4), language)


@router.post(VM + "/reverse", status_code=202, summary="Set-VMReplication -Reverse (async)")
def reverse(ref: str, body: ReverseBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """The failed-over replica becomes the primary, the old primary its replica; 202 with the job."""
    vm = _vm(services, ref)
    replication = services.engine.replication
    rel = replication.relationship(vm.vm_id)
    current = rel.settings if rel is not None else ReplicationSettings()
    return respond(services, replication.reverse_replication(vm.vm_id, reverse_settings(current, body)),
                   language)


@router.post(VM + "/as-replica", status_code=202, summary="Enable-VMReplication -AsReplica (async)")
def as_replica(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Turn a plain, turned-off VM into a replica waiting for a seeded initial replication."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.request_state_change(vm.vm_id, 2), language)


@router.post(VM + "/extended", status_code=202, summary="Enable-VMReplication on a replica (async)")
def extended(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Extended replication of a replica VM to a third host (``…\\HVR\\1``)."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.create_relationship(vm.vm_id, settings_from(body)),
                   language)


@router.post(VM + "/continue", status_code=202, summary="Resume-VMReplication -Continue (async)")
def continue_extended(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """After a committed failover, the extended relationship becomes this VM's primary relationship."""
    vm = _vm(services, ref)
    outcome = services.engine.replication.change_mode_to_primary(vm.vm_id, RelationshipIndex.EXTENDED)
    return respond(services, outcome, language)
