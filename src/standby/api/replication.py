"""Replication in REST form.

- ``POST /api/v1/replication/test-connection``: TestReplicationConnection → 202;
- ``GET|POST|PUT|DELETE /api/v1/vms/{ref}/replication``: show, enable (CreateReplicationRelationship),
  modify, remove → 202 with the job (show: 200);
- ``POST …/replication/start`` ``{type: network|export|seeded, export_dir, at}``: StartReplication → 202;
- ``POST …/replication/{suspend|resume|cancel}``: RequestReplicationStateChange 7 / 3 / 1 or 9 → 202;
- ``POST …/replication/resync`` ``{at}``: Resynchronize → 202;
- ``GET …/replication/statistics`` (Measure-VMReplication), ``POST …/statistics/reset``.
Registered before ``standby.api.vms`` (``api/app.py``) so its ``POST /{ref}/{action}`` does not catch these.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import job_json, job_url
from standby.domain.cycles import parse_bandwidth_window
from standby.domain.entities import Job, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    AuthenticationType,
    InitialReplicationType,
    RelationshipIndex,
    ReplicationState,
)
from standby.domain.errors import InvalidParameter, NotFound, NotSupported
from standby.engine.connection import ConnectionTarget
from standby.engine.statistics import StatisticsReport

if TYPE_CHECKING:
    from standby.daemon.compose import Services

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
    job = services.connection_tester.submit(target)
    return JSONResponse(
        job_json(job, language, services.clock(), services.jobs.describe(job, language)),
        status_code=202,
        headers={"location": job_url(job.job_id)},
    )


# -- per-VM relationship routes ------------------------------------------------------------------------------


class EnableBody(BaseModel):
    """Enable-VMReplication: the replica host and the relationship's settings (spec §5.1)."""

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


def _primary(services: Services) -> Any:
    primary = getattr(services, "primary", None)
    if primary is None:
        raise NotSupported("this daemon runs no hypervisor", message_id="NoHypervisor")
    return primary


def _vm(services: Services, ref: str) -> VirtualMachine:
    if services.vms is not None:
        return services.vms.get(ref)  # type: ignore[no-any-return]
    vm = services.db.vms.find(ref.upper())
    if vm is None:
        raise NotFound(f"no virtual machine {ref!r}", message_id="VmNotFound", vm=ref)
    return vm


def _accepted(services: Services, job: Job, language: str) -> JSONResponse:
    body = job_json(job, language, services.clock(), services.jobs.describe(job, language))
    return JSONResponse(body, status_code=202, headers={"location": job_url(job.job_id)})


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


@router.get(VM, summary="Get-VMReplication")
def show(ref: str, services: ServicesDep) -> dict[str, Any]:
    """The VM's primary relationship."""
    vm = _vm(services, ref)
    rel = services.db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY))
    if rel is None:
        raise NotFound(f"virtual machine {vm.name} does not replicate", message_id="ObjectNotFound",
                       kind="Relationship", key=vm.vm_id)
    return relationship_json(vm, rel)


@router.post(VM, status_code=202, summary="Enable-VMReplication (CreateReplicationRelationship, async)")
def enable(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Create the relationship and the replica VM on the replica host."""
    vm = _vm(services, ref)
    return _accepted(services, _primary(services).submit_create(vm.vm_id, settings_from(body)), language)


@router.put(VM, status_code=202, summary="Set-VMReplication (ModifyReplicationSettings, async)")
def modify(ref: str, body: EnableBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Change the relationship's settings (not its disks)."""
    vm = _vm(services, ref)
    return _accepted(services, _primary(services).submit_modify(vm.vm_id, settings_from(body)), language)


@router.delete(VM, status_code=202, summary="Remove-VMReplication (async)")
def remove(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Remove the relationship on both sides (the replica VM stays)."""
    vm = _vm(services, ref)
    return _accepted(services, _primary(services).submit_remove(vm.vm_id), language)


@router.post(VM + "/start", status_code=202, summary="Start-VMInitialReplication (async)")
def start(ref: str, body: StartBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Initial replication over the network, to an export folder, or seeded (hash compare)."""
    vm = _vm(services, ref)
    job = _primary(services).submit_start(vm.vm_id, int(_TYPES[body.type]), body.export_dir, body.at)
    return _accepted(services, job, language)


@router.post(VM + "/resync", status_code=202, summary="Resume-VMReplication -Resynchronize (async)")
def resync(ref: str, body: ResyncBody, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Resynchronize: send only the blocks whose hashes differ."""
    vm = _vm(services, ref)
    return _accepted(services, _primary(services).submit_resynchronize(vm.vm_id, body.at), language)


@router.post(VM + "/{action}", status_code=202, summary="Suspend / resume / cancel (async)")
def state_change(ref: str, action: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """suspend (7), resume (3), cancel (1 during initial replication, 9 during a resync)."""
    vm = _vm(services, ref)
    rel = services.db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY))
    requested = {"suspend": 7, "resume": 3}.get(action)
    if action == "cancel":
        resyncing = rel is not None and rel.state == ReplicationState.RESYNCHRONIZING
        requested = 9 if resyncing else 1
    if requested is None:
        raise InvalidParameter(f"unknown replication action {action!r}: suspend, resume or cancel",
                               message_id="UnknownAction", action=action)
    return _accepted(services, _primary(services).submit_state_change(vm.vm_id, requested), language)


@router.get(VM + "/statistics", summary="Measure-VMReplication (GetReplicationStatistics)")
def measure(ref: str, services: ServicesDep) -> dict[str, Any]:
    """Statistics of the current monitoring window."""
    from standby.engine.replication import ReplicationUseCases

    vm = _vm(services, ref)
    report = ReplicationUseCases(services.db, services.clock).replication_statistics(vm.vm_id)
    return statistics_json(report)


@router.post(VM + "/statistics/reset", summary="Reset-VMReplicationStatistics")
def reset(ref: str, services: ServicesDep) -> dict[str, Any]:
    """Start a new collection window now."""
    from standby.engine.replication import ReplicationUseCases

    vm = _vm(services, ref)
    ReplicationUseCases(services.db, services.clock).reset_statistics(vm.vm_id)
    return {"reset": True}
