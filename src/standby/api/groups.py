"""``/api/v1/groups`` (collections) and ``/api/v1/redundancy-sets``: issue 7 in REST form.

Collections: ``GET /groups`` · ``POST /groups {name, id?}`` · ``GET /groups/{ref}`` (members, state, points,
statistics) · ``DELETE /groups/{ref}`` · ``PUT|DELETE /groups/{ref}/members/{vm}`` ·
``POST /groups/{ref}/replication`` (enable: settings like ``/vms/{ref}/replication``) ·
``POST /groups/{ref}/{action}`` for start, suspend, resume, resync, remove, failover ``{point, force}``,
revert, commit, test, test-stop, reset-statistics → 202 with the job (reset: 200).
Redundancy sets: ``GET /redundancy-sets`` · ``POST /redundancy-sets/{id}/failover {from, to}`` → 200
``{code, name}`` (seed 000's code; the call is synchronous, as ``Msvm_RedundancySet.Failover``).
``ref`` is a collection id or its unique name. The same use cases as the CIM providers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import respond
from standby.domain.entities import Collection, ReplicationSettings
from standby.domain.enums import FailoverCode
from standby.domain.errors import InvalidParameter, NotFound
from standby.engine.collection_service import CollectionReplicationService
from standby.engine.operations import CollectionUseCase
from standby.engine.service import InitialReplication, Outcome

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(prefix="/api/v1", tags=["groups"])
_U = CollectionUseCase
_STATE_ACTIONS = {"suspend": _U.SUSPEND_REPLICATION, "resume": _U.RESUME_REPLICATION,
                  "cancel-initial": _U.CANCEL_INITIAL_REPLICATION, "cancel-resync": _U.CANCEL_RESYNCHRONIZE}


class GroupBody(BaseModel):
    """DefineCollection."""

    name: str = Field(min_length=1, max_length=256)
    id: str | None = Field(default=None, max_length=256)


class EnableBody(BaseModel):
    """CreateReplicationRelationship of a collection (Msvm_CollectionReplicationSettingData)."""

    element_name: str = Field(min_length=1, max_length=256, description="ElementName (required)")
    replica_host: str = Field(min_length=1, max_length=256)
    port: int = Field(default=0, ge=0, le=65535, description="0: the peer port this daemon uses")
    interval: int = Field(default=300, description="seconds: 30, 300, 900 (1-29 as extension)")
    history: int = Field(default=0, ge=0, description="RecoveryHistory: 0-16 (Hyper-V), up to 720")
    app_consistent_hours: int = Field(default=0, ge=0, le=12)
    compression: bool = True


class ActionBody(BaseModel):
    """Parameters some actions take."""

    point: str | None = Field(default=None, max_length=200, description="collection recovery point id")
    type: int = Field(default=1, description="StartReplication: 1 network, 2 export, 3 seeded")
    export_location: str | None = Field(default=None, max_length=4096)
    start_time: datetime | None = None
    include_suspended: bool = False
    force: bool = False


class FailoverSetBody(BaseModel):
    """Msvm_RedundancySet.Failover."""

    source: str | None = Field(default=None, alias="from", max_length=512)
    target: str | None = Field(default=None, alias="to", max_length=512)




def _collection(services: Services, ref: str) -> Collection:
    inventory = services.engine.inventory
    found = inventory.find_collection(ref.upper()) or inventory.find_collection(ref)
    if found is None:
        named = [c for c in inventory.collections() if c.name == ref]
        if len(named) != 1:
            raise NotFound(f"no collection {ref!r}", message_id="ObjectNotFound", kind="collection", key=ref)
        found = named[0]
    return found


def collection_json(services: Services, collection: Collection) -> dict[str, Any]:
    """A collection with its members, points and settings."""
    points = services.engine.collections.points(collection.collection_id)
    stored = services.engine.inventory.collection_settings(collection.collection_id)
    return {
        "id": collection.collection_id, "name": collection.name,
        "mode": int(collection.replication_mode), "mode_name": collection.replication_mode.name.lower(),
        "state": int(collection.replication_state),
        "state_name": collection.replication_state.name.lower().replace("_", " "),
        "failed_over_type": int(collection.failed_over_type),
        "last_apply_time": collection.last_apply_time.isoformat() if collection.last_apply_time else None,
        "members": [{"id": vm, "name": _vm_name(services, vm)} for vm in collection.member_vm_ids],
        "settings": {"element_name": stored[0], "replica_host": stored[1].recovery_connection_point,
                     "interval": stored[1].interval_seconds, "history": stored[1].recovery_history}
        if stored else None,
        "points": [{"id": p.point_id, "created_at": p.created_at.isoformat(),
                    "consistency": int(p.consistency), "pause_ms": p.pause_ms,
                    "members": [{"vm": vm, "point": rp} for vm, rp in p.members]} for p in points],
    }


def _vm_name(services: Services, vm_id: str) -> str:
    vm = services.engine.inventory.find_vm(vm_id)
    return vm.name if vm is not None else vm_id


@router.get("/groups", summary="Collections (Msvm_VirtualSystemCollection)")
def list_groups(services: ServicesDep) -> list[dict[str, Any]]:
    """Every collection of this host."""
    return [collection_json(services, c) for c in services.engine.inventory.collections()]


@router.post("/groups", status_code=201, summary="DefineCollection")
def define_group(body: GroupBody, services: ServicesDep) -> dict[str, Any]:
    """Define an empty collection."""
    collection = services.engine.collection_management.define(body.name, body.id, 0)
    return collection_json(services, collection)


@router.get("/groups/{ref}", summary="One collection, with its points and statistics")
def show_group(ref: str, services: ServicesDep) -> dict[str, Any]:
    """A collection; ``statistics`` when it replicates."""
    collection = _collection(services, ref)
    body = collection_json(services, collection)
    if int(collection.replication_state):
        report = services.engine.collections.statistics(collection.collection_id)
        stats, issues = report.statistics, report.issues
        body["statistics"] = {"successes": stats.success_count, "misses": stats.miss_count,
                              "bytes": stats.size, "network_failures": stats.network_failures,
                              "failures": stats.failures, "health": int(stats.health),
                              "last_success": stats.last_success.isoformat() if stats.last_success else None,
                              "max_pause_ms": stats.max_pause_ms, "last_pause_ms": stats.last_pause_ms,
                              "issues": issues}
    return body


@router.delete("/groups/{ref}", status_code=204, summary="DestroyCollection")
def destroy_group(ref: str, services: ServicesDep) -> None:
    """Destroy a collection (its VMs stay)."""
    services.engine.collection_management.destroy(_collection(services, ref).collection_id)


@router.put("/groups/{ref}/members/{vm}", summary="AddMember")
def add_member(ref: str, vm: str, services: ServicesDep) -> dict[str, Any]:
    """Add a VM (GUID or name)."""
    vm_id = _vm_id(services, vm)
    management = services.engine.collection_management
    collection = management.add_member(_collection(services, ref).collection_id, vm_id)
    return collection_json(services, collection)


@router.delete("/groups/{ref}/members/{vm}", summary="RemoveMember")
def remove_member(ref: str, vm: str, services: ServicesDep) -> dict[str, Any]:
    """Remove a VM."""
    vm_id = _vm_id(services, vm)
    management = services.engine.collection_management
    collection = management.remove_member(_collection(services, ref).collection_id, vm_id)
    return collection_json(services, collection)


def _vm_id(services: Services, ref: str) -> str:
    return services.engine.systems.get(ref).vm_id


@router.post("/groups/{ref}/replication", status_code=202, summary="CreateReplicationRelationship (async)")
def enable_group(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Enable replication of every member to one replica host."""
    outcome = services.engine.collections.create_relationship(_collection(services, ref).collection_id,
                                                              _settings(services, body), body.element_name)
    return respond(services, outcome, language)


@router.put("/groups/{ref}/replication", status_code=202, summary="ModifyReplicationSettings (async)")
def modify_group(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """New settings for every member."""
    outcome = services.engine.collections.modify_replication_settings(
        _collection(services, ref).collection_id, _settings(services, body), body.element_name)
    return respond(services, outcome, language)


@router.post("/groups/{ref}/replication/reverse", status_code=202,
             summary="ReverseReplicationRelationship of a collection (async)")
def reverse_group(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """After a planned failover: every member replicates back with these settings."""
    collection_id = _collection(services, ref).collection_id
    outcome = services.engine.collections.planned_step(_U.REVERSE_REPLICATION_RELATIONSHIP, collection_id,
                                                       _settings(services, body))
    return respond(services, outcome, language)


@router.post("/groups/{ref}/{action}", status_code=202, summary="Group replication and failover actions")
def group_action(ref: str, action: str, services: ServicesDep, language: LanguageDep,
                 body: ActionBody | None = None) -> JSONResponse:
    """start, suspend, resume, cancel-initial, cancel-resync, resync, remove, cancel-update-disk-set,
    planned-failover, revert-planned-failover (primary side); failover, revert, commit, test, test-stop,
    prepare-reverse (replica side); reset-statistics (either). The engine entry checks the side."""
    given = body or ActionBody()
    collection_id = _collection(services, ref).collection_id
    action_of = _ACTIONS.get(action)
    if action_of is None:
        raise InvalidParameter(f"unknown action {action!r}", message_id="GroupUnknownAction", action=action)
    outcome = action_of(services.engine.collections, collection_id, given)
    if action == "test":
        return respond(services, outcome, language, test_group=outcome.resulting_system)
    return respond(services, outcome, language, {"reset": True} if action == "reset-statistics" else None)


def _settings(services: Services, body: EnableBody) -> ReplicationSettings:
    return ReplicationSettings(body.replica_host, body.port or services.peer_port,
                               interval_seconds=body.interval, recovery_history=body.history,
                               app_consistent_interval_hours=body.app_consistent_hours,
                               compression_enabled=body.compression)


Action = Callable[[CollectionReplicationService, str, ActionBody], Outcome]


def _state_action(use_case: CollectionUseCase) -> Action:
    return lambda service, collection_id, given: service.change_state(use_case, collection_id)


_ACTIONS: dict[str, Action] = {
    "start": lambda s, cid, given: s.start_replication(
        cid, InitialReplication(given.type, given.export_location, given.start_time)),
    "resync": lambda s, cid, given: s.resynchronize(cid, given.start_time,
                                                    include_suspended=given.include_suspended),
    "remove": lambda s, cid, given: s.remove_relationship(cid),
    **{name: _state_action(use_case) for name, use_case in _STATE_ACTIONS.items()},
    "failover": lambda s, cid, given: s.initiate_failover(cid, given.point, force=given.force),
    "revert": lambda s, cid, given: s.revert_failover(cid),
    "commit": lambda s, cid, given: s.commit_failover(cid),
    "test": lambda s, cid, given: s.test_replica_collection(cid, given.point),
    "test-stop": lambda s, cid, given: s.revert_test_replica_collection(cid),
    "reset-statistics": lambda s, cid, given: s.reset_statistics(cid),
    "cancel-update-disk-set": lambda s, cid, given: s.cancel_update_disk_set(cid),
    "planned-failover": lambda s, cid, given: s.planned_step(_U.INITIATE_PLANNED_FAILOVER, cid),
    "revert-planned-failover": lambda s, cid, given: s.planned_step(_U.REVERT_PLANNED_FAILOVER, cid),
    "prepare-reverse": lambda s, cid, given: s.planned_step(_U.PREPARE_FOR_REVERSE_REPLICATION, cid),
}


@router.get("/redundancy-sets", summary="Msvm_RedundancySet")
def list_sets(services: ServicesDep) -> list[dict[str, Any]]:
    """Every redundancy set of this host."""
    return [{"id": rs.set_id, "name": rs.name, "type": int(rs.type_of_set), "type_name": rs.type_of_set.name,
             "status": int(rs.status), "status_name": rs.status.name.lower().replace("_", " "),
             "members": list(rs.member_ids), "active": rs.active_member_id}
            for rs in services.engine.redundancy.sets()]


@router.post("/redundancy-sets/{set_id}/failover", summary="Msvm_RedundancySet.Failover (synchronous)")
async def failover_set(set_id: str, body: FailoverSetBody, services: ServicesDep) -> dict[str, Any]:
    """Make ``to`` the active member; answers seed 000's code (0 done … 4 parameter error)."""
    engine = services.engine.redundancy
    code = await asyncio.to_thread(engine.failover_now, set_id, body.source, body.target)
    return {"code": int(code), "name": FailoverCode(code).name.lower().replace("_", " ")}
