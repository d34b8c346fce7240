"""Replication in REST form.

- ``POST /api/v1/replication/test-connection``: TestReplicationConnection → 202;
- ``GET|POST|PUT|DELETE /api/v1/vms/{ref}/replication``: show, enable (CreateReplicationRelationship),
  modify, remove → 202 with the job (show: 200);
- ``POST …/replication/start`` ``{type: network|export|seeded, export_dir, at}``: StartReplication → 202;
- ``POST …/replication/{suspend|resume|cancel-initial|cancel-resync|cancel}``: RequestReplicationStateChange
  7 / 3 / 1 / 9 / whichever runs → 202; ``POST …/replication/state {requested, relationship}`` any of them;
- ``POST …/replication/import {location}``: ImportInitialReplica → 202; ``…/failback``: InitiateFailback;
- ``POST …/replication/resync`` ``{at}``: Resynchronize → 202;
- ``GET …/replication/statistics`` (Measure-VMReplication), ``POST …/statistics/reset``.
``?relationship=extended`` picks a replica's extended relationship. Every route calls one entry of
``engine.service.ReplicationService``, as the CIM provider does.
Registered before ``standby.api.vms`` (``api/app.py``) so its ``POST /{ref}/{action}`` does not catch these.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import respond
from standby.domain.cycles import parse_bandwidth_window
from standby.domain.entities import AuthorizationEntry, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    AuthenticationType,
    InitialReplicationType,
    RelationshipIndex,
    ReplicationState,
)
from standby.domain.errors import InvalidParameter, NotFound
from standby.engine.connection import ConnectionTarget
from standby.engine.service import InitialReplication
from standby.engine.statistics import StatisticsReport

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(tags=["replication"])
VM = "/api/v1/vms/{ref}/replication"


class TestConnectionRequest(BaseModel):
    """The in-parameters of ``Msvm_ReplicationService.TestReplicationConnection``."""

    __test__ = False  # not a pytest class, despite the name

    recovery_connection_point: str = Field(min_length=1, max_length=255,
                                           description="host name or address of the recovery server")
    recovery_server_port: int = Field(ge=1, le=65535, description="its replication (HTTPS) port")
    authentication_type: int = Field(default=int(AuthenticationType.CERTIFICATE),
                                     description="1 Kerberos (not supported), 2 certificate")
    certificate_thumbprint: str = Field(default="", max_length=64)
    bypass_proxy_server: bool = False


@router.post("/api/v1/replication/test-connection", status_code=202,
             summary="TestReplicationConnection (async)")
def test_connection(
    body: TestConnectionRequest, services: ServicesDep, language: LanguageDep
) -> JSONResponse:
    """Start a JobType 115 job that probes the recovery server; 202 with the job and its URL."""
    target = ConnectionTarget(
        connection_point=body.recovery_connection_point,
        port=body.recovery_server_port,
        authentication_type=body.authentication_type,
        certificate_thumbprint=body.certificate_thumbprint,
        bypass_proxy_server=body.bypass_proxy_server,
    )
    return respond(services, services.engine.replication.test_replication_connection(target), language)


# -- per-VM relationship routes ------------------------------------------------------------------------------


class EnableBody(BaseModel):
    """Enable-VMReplication: the replica host and the relationship's settings (hyperv-api §5.1)."""

    replica: str = Field(min_length=1, max_length=255, description="replica host name (its certificate name)")
    port: int = Field(default=8443, ge=1, le=65535, description="its peer (mutual TLS) port")
    interval: int = Field(default=300, description="seconds: 30, 300, 900 (Hyper-V) or 1-29 (extension)")
    history: int = Field(default=0, ge=0, le=720, description="recovery history in hours")
    app_consistent_hours: int = Field(default=0, ge=0, le=12)
    compression: bool = True
    disks: list[str] = Field(default_factory=list, max_length=16, description="included disk ids (all)")
    bandwidth: list[str] = Field(default_factory=list, max_length=8, examples=[["08:00-18:00=50M"]])
    auto_resync: bool = False


class StartBody(BaseModel):
    """Start-VMInitialReplication: ``network`` (default), ``export`` to a folder, or ``seeded``."""

    type: str = Field(default="network", pattern="^(network|export|seeded)$")
    export_dir: str | None = Field(default=None, max_length=4096)
    at: datetime | None = Field(default=None, description="UTC start time, at most 7 days ahead")


class ResyncBody(BaseModel):
    """Resume-VMReplication -Resynchronize: when (None = now)."""

    at: datetime | None = None


_TYPES = {"network": InitialReplicationType.NETWORK, "export": InitialReplicationType.EXPORT,
          "seeded": InitialReplicationType.SEEDED_NETWORK}


def _vm(services: Services, ref: str) -> VirtualMachine:
    return services.engine.systems.get(ref)


def settings_from(body: EnableBody) -> ReplicationSettings:
    """The relationship settings an enable/modify body asks for."""
    return ReplicationSettings(
        recovery_connection_point=body.replica, recovery_port=body.port, interval_seconds=body.interval,
        recovery_history=body.history, app_consistent_interval_hours=body.app_consistent_hours,
        compression_enabled=body.compression, included_disks=tuple(body.disks),
        auto_resynchronize_enabled=body.auto_resync,
        bandwidth_schedule=tuple(parse_bandwidth_window(text) for text in body.bandwidth))


def relationship_json(vm: VirtualMachine, rel: Relationship) -> dict[str, Any]:
    """Get-VMReplication: one relationship as JSON."""
    settings = rel.settings
    return {
        "vm_id": vm.vm_id, "name": vm.name, "mode": int(vm.replication_mode), "index": int(rel.index),
        "instance_id": rel.instance_id, "state": int(rel.state),
        "state_name": ReplicationState(rel.state).name,
        "health": int(rel.health), "sequence": rel.sequence, "intent": rel.intent,
        "last_replication_time": rel.last_replication_time.isoformat() if rel.last_replication_time else None,
        "last_replication_type": int(rel.last_replication_type),
        "replica": settings.recovery_connection_point, "port": settings.recovery_port,
        "primary": settings.primary_connection_point, "interval": settings.interval_seconds,
        "history": settings.recovery_history, "app_consistent_hours": settings.app_consistent_interval_hours,
        "compression": settings.compression_enabled, "disks": list(settings.included_disks),
        "bandwidth": [f"{a:%H:%M}-{b:%H:%M}={rate}" for a, b, rate in settings.bandwidth_schedule],
    }


def statistics_json(report: StatisticsReport) -> dict[str, Any]:
    """Measure-VMReplication: every field of Msvm_ReplicationStatistics plus averages and reasons."""
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "start": when(report.start), "end": when(report.end), "health": int(report.health),
        "success_count": report.success_count, "size_bytes": report.size_bytes,
        "max_size_bytes": report.max_size_bytes, "latency_seconds": report.latency_seconds,
        "max_latency_seconds": report.max_latency_seconds, "miss_count": report.miss_count,
        "network_failure_count": report.network_failure_count, "failure_count": report.failure_count,
        "pending_bytes": report.pending_bytes,
        "app_consistent_failure_count": report.app_consistent_failure_count,
        "last_test_failover_time": when(report.last_test_failover_time),
        "average_size_bytes": report.average_size_bytes,
        "average_latency_seconds": report.average_latency_seconds,
        "initial_size_bytes": report.initial_size_bytes,
        "last_replication_time": when(report.last_replication_time), "reasons": list(report.reasons),
        "issues": [{"message_id": i.message_id, "message": i.message, "severity": i.severity}
                   for i in report.issues],
    }


def _relationship(value: str) -> RelationshipIndex:
    try:
        return RelationshipIndex[value.upper()] if not value.isdigit() else RelationshipIndex(int(value))
    except (KeyError, ValueError):
        raise InvalidParameter(f"relationship {value!r} is not primary (0) or extended (1)",
                               message_id="RelationshipNotOfVm", relationship=value, vm="") from None


RelationshipQuery = Annotated[str, Query(description="primary (0) or extended (1)")]


class ImportBody(BaseModel):
    """Import-VMInitialReplication: the folder the primary exported its initial replication to."""

    location: str = Field(min_length=1, max_length=4096)


@router.get(VM, summary="Get-VMReplication")
def show(ref: str, services: ServicesDep, relationship: RelationshipQuery = "primary") -> dict[str, Any]:
    """The VM's relationship (the primary one unless asked for the extended one)."""
    vm = _vm(services, ref)
    rel = services.engine.replication.relationship(vm.vm_id, _relationship(relationship))
    if rel is None:
        raise NotFound(f"virtual machine {vm.name} does not replicate", message_id="ObjectNotFound",
                       kind="Relationship", key=vm.vm_id)
    return relationship_json(vm, rel)


@router.post(VM, status_code=202, summary="Enable-VMReplication (CreateReplicationRelationship, async)")
def enable(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Create the relationship and the replica VM on the replica host (on a replica VM: extended)."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.create_relationship(vm.vm_id, settings_from(body)),
                   language)


@router.put(VM, status_code=202, summary="Set-VMReplication (ModifyReplicationSettings, async)")
def modify(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Change the relationship's settings (not its disks)."""
    vm = _vm(services, ref)
    outcome = services.engine.replication.modify_replication_settings(vm.vm_id, settings_from(body))
    return respond(services, outcome, language)


@router.delete(VM, status_code=202, summary="Remove-VMReplication (RemoveReplicationRelationshipEx, async)")
def remove(ref: str, services: ServicesDep, language: LanguageDep,
           relationship: RelationshipQuery = "primary") -> JSONResponse:
    """Remove this host's side of the relationship (a replica VM stays)."""
    vm = _vm(services, ref)
    outcome = services.engine.replication.remove_relationship(vm.vm_id, _relationship(relationship))
    return respond(services, outcome, language)


@router.post(VM + "/start", status_code=202, summary="Start-VMInitialReplication (async)")
def start(ref: str, body: StartBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Initial replication over the network, to an export folder, or seeded (hash compare)."""
    vm = _vm(services, ref)
    request = InitialReplication(int(_TYPES[body.type]), body.export_dir, body.at)
    return respond(services, services.engine.replication.start_replication(vm.vm_id, request), language)


@router.post(VM + "/import", status_code=202, summary="Import-VMInitialReplication (ImportInitialReplica)")
def import_initial(ref: str, body: ImportBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Apply the initial replication the primary exported to ``location`` (on the replica)."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.import_initial_replica(vm.vm_id, body.location),
                   language)


@router.post(VM + "/resync", status_code=202, summary="Resume-VMReplication -Resynchronize (async)")
def resync(ref: str, body: ResyncBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Resynchronize: send only the blocks whose hashes differ."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.resynchronize(vm.vm_id, body.at), language)


class StateBody(BaseModel):
    """RequestReplicationStateChangeEx: the state asked for and the relationship."""

    requested: int = Field(description="1 cancel IR, 2 as replica, 3 resume, 4 prepare, 7 suspend, "
                                       "9 cancel resync")
    relationship: str = Field(default="primary", description="primary (0) or extended (1)")


@router.post(VM + "/state", status_code=202, summary="RequestReplicationStateChangeEx (async)")
def request_state(ref: str, body: StateBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Any replication state change by its Hyper-V number."""
    vm = _vm(services, ref)
    outcome = services.engine.replication.request_state_change(vm.vm_id, body.requested,
                                                               _relationship(body.relationship))
    return respond(services, outcome, language)


@router.post(VM + "/failback", status_code=202, summary="InitiateFailback")
def failback(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Provider-driven failback (refused: standby fails back with reverse replication)."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.initiate_failback(vm.vm_id), language)


class AuthorizationBody(BaseModel):
    """Msvm_ReplicationAuthorizationSettingData: the primary host an entry admits, where its replicas go."""

    host: str = Field(min_length=1, max_length=255, description="AllowedPrimaryHostSystem (may use *)")
    storage: str = Field(default="", max_length=4096, description="ReplicaStorageLocation")
    trust_group: str = Field(default="", max_length=255,
                             description="TrustGroup; empty: a group of this entry's own (shared with none)")


@router.put(VM + "/authorization", summary="SetAuthorizationEntry (bind a replica VM to an entry)")
def set_authorization(ref: str, body: AuthorizationBody, services: ServicesDep) -> dict[str, Any]:
    """Bind the replica VM to the authorization entry of its primary host (created when missing)."""
    vm = _vm(services, ref)
    entry = services.engine.replication.set_authorization_entry(
        vm.vm_id, AuthorizationEntry(body.host, body.trust_group, body.storage))
    return {"host": entry.allowed_primary_host, "storage": entry.storage_location,
            "trust_group": entry.trust_group}


_ACTIONS = {"suspend": 7, "resume": 3, "cancel-initial": 1, "cancel-resync": 9}


@router.post(VM + "/{action}", status_code=202, summary="Suspend / resume / cancel (async)")
def state_change(ref: str, action: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """suspend (7), resume (3), cancel-initial (1), cancel-resync (9), cancel (whichever runs)."""
    vm = _vm(services, ref)
    replication = services.engine.replication
    if action == "cancel":
        return respond(services, replication.cancel(vm.vm_id), language)
    requested = _ACTIONS.get(action)
    if requested is None:
        raise InvalidParameter(f"unknown replication action {action!r}: suspend, resume or cancel",
                               message_id="UnknownAction", action=action)
    return respond(services, replication.request_state_change(vm.vm_id, requested), language)


@router.get(VM + "/statistics", summary="Measure-VMReplication (GetReplicationStatisticsEx)")
def measure(ref: str, services: ServicesDep, relationship: RelationshipQuery = "primary") -> dict[str, Any]:
    """Statistics of the current monitoring window."""
    vm = _vm(services, ref)
    return statistics_json(services.engine.replication.statistics(vm.vm_id, _relationship(relationship)))


@router.post(VM + "/statistics/reset", summary="Reset-VMReplicationStatistics")
def reset(ref: str, services: ServicesDep, language: LanguageDep,
          relationship: RelationshipQuery = "primary") -> JSONResponse:
    """Start a new collection window now."""
    vm = _vm(services, ref)
    outcome = services.engine.replication.reset_statistics(vm.vm_id, _relationship(relationship))
    return respond(services, outcome, language, {"reset": True})
