"""Msvm_ReplicationService: the singleton per-VM replication service of this host and all its methods.

Each handler turns the typed CIM parameters into Python values and calls one use case of
``engine.replication.ReplicationUseCases``; refusals come back as ``StandbyError`` and the dispatcher maps
them to return codes. REF checks already happened in the dispatcher; here a ComputerSystem that names the
host (not a VM) is an invalid parameter (32773) and a SnapshotSettingData that is not a Replica recovery
point (``…Snapshot:Replica:*``) an incorrect data type (32776).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pywbem import CIMInstance

from standby.cim import convert, naming
from standby.cim.backend import RequestContext
from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, done, job_started, referenced_vm, relationship_param
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.enums import EnabledState, InitialReplicationType, RelationshipIndex, VirtualSystemType
from standby.domain.errors import IncorrectDataType, InvalidParameter
from standby.engine.operations import UseCase, not_implemented


def service_instance(runtime: CimRuntime, namespace: str) -> CIMInstance:
    """The replication service with Hyper-V's fixed values (spec §3)."""
    return make_instance(runtime.schema, namespace, naming.REPLICATION_SERVICE, {
        **naming.service_keys(runtime.host, naming.REPLICATION_SERVICE, naming.REPLICATION_SERVICE_NAME),
        "Caption": "Hyper-V Replica Service",
        "Description": "Replication Service",
        "ElementName": "Hyper-V Replica Service",
        "EnabledState": EnabledState.ENABLED,
        "EnabledDefault": EnabledState.ENABLED,
        "RequestedState": 12,
        "HealthState": 5,
        "Status": "OK",
        "OperationalStatus": [2],
        "StatusDescriptions": ["OK"],
        "Started": True,
    })


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield service_instance(runtime, namespace)


# -- helpers ---------------------------------------------------------------------------------------------


def _snapshot_point(call: MethodCall) -> str | None:
    """The recovery point id a SnapshotSettingData REF names (NULL = latest); non-Replica types → 32776."""
    snapshot = call.referenced("SnapshotSettingData")
    if snapshot is None:
        return None
    kind = property_value(snapshot, "VirtualSystemType")
    known = {member.value: member for member in VirtualSystemType}
    if not (isinstance(kind, str) and kind in known and known[kind].is_recovery_point):
        raise IncorrectDataType(
            f"SnapshotSettingData must be a replica recovery point, not a {kind or 'settings'} snapshot",
            message_id="SnapshotNotRecoveryPoint", kind=str(kind))
    return naming.point_id_of(str(property_value(snapshot, "InstanceID")))


def _settings(call: MethodCall, parameter: str = "ReplicationSettingData") -> CIMInstance:
    value = call.param(parameter)
    if value is None:
        raise InvalidParameter(f"{parameter} is required", message_id="ParameterRequired",
                               parameter=parameter)
    assert isinstance(value, CIMInstance)
    return value


def _entry(call: MethodCall) -> CIMInstance:
    return _settings(call, "AuthorizationEntry")


def _primary(runtime: CimRuntime) -> Any | None:
    """Helper P's primary-side use cases (``daemon/primary_wiring``); None in a world without a hypervisor,
    where these methods answer the precondition table's verdict only."""
    return getattr(runtime.services, "primary", None)


# -- per-VM methods ------------------------------------------------------------------------------------


def create_relationship(call: MethodCall) -> MethodResult:
    """CreateReplicationRelationship(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    primary = _primary(call.runtime)
    if primary is not None and vm.replication_mode == 0:
        return job_started(call, primary.submit_create(vm.vm_id, settings))
    planned = _planned(call.runtime)
    if planned is not None and vm.replication_mode == 2:  # extended relationship (helper PF)
        return job_started(call, planned.extended.submit_create(vm.vm_id, settings))
    call.runtime.replication.create_relationship(vm.vm_id, settings)
    return done()


def start_replication(call: MethodCall) -> MethodResult:
    """StartReplication(ComputerSystem, InitialReplicationType, ExportLocation, StartTime)."""
    vm = referenced_vm(call)
    kind = call.param("InitialReplicationType")
    if kind is None:
        raise InvalidParameter("InitialReplicationType is required", message_id="ParameterRequired",
                               parameter="InitialReplicationType")
    location = call.param("InitialReplicationExportLocation")
    if int(kind) == InitialReplicationType.EXPORT and not location:
        raise InvalidParameter("an export (type 2) needs InitialReplicationExportLocation",
                               message_id="ExportLocationMissing")
    start = call.param("StartTime")
    when = start.datetime if start is not None else None
    planned = _planned(call.runtime)
    if planned is not None and vm.replication_mode == 2:  # extended relationship (helper PF)
        return job_started(call, planned.extended.submit_start(vm.vm_id, int(kind)))
    primary = _primary(call.runtime)
    if primary is not None:
        return job_started(call, primary.submit_start(vm.vm_id, int(kind), location, when))
    call.runtime.replication.start_replication(vm.vm_id, int(kind), location, when)
    return done()


def import_initial_replica(call: MethodCall) -> MethodResult:
    """ImportInitialReplica(ComputerSystem, InitialReplicationImportLocation)."""
    vm = referenced_vm(call)
    location = call.param("InitialReplicationImportLocation") or ""
    call.runtime.replication.import_initial_replica(vm.vm_id, location)
    return done()


def _planned(runtime: CimRuntime) -> Any | None:
    """Helper PF's planned failover, reverse and extended replication (``engine.planned.PlannedServices``)."""
    return getattr(runtime.services, "planned", None)


def _failover(runtime: CimRuntime) -> Any | None:
    """Helper F's failover use cases (``engine.failover``); None in a world without a hypervisor, where
    the failover methods answer the precondition table's verdict only."""
    return getattr(runtime.services, "failover", None)


def initiate_failover(call: MethodCall) -> MethodResult:
    """InitiateFailover(ComputerSystem, SnapshotSettingData) → Job (97); CIM callers never force it."""
    vm = referenced_vm(call)
    point = _snapshot_point(call)
    failover = _failover(call.runtime)
    if failover is None:
        call.runtime.replication.initiate_failover(vm.vm_id, point)
        return done()
    return job_started(call, failover.submit_initiate(vm.vm_id, point))


def test_replica_system(call: MethodCall) -> MethodResult:
    """TestReplicaSystem(ComputerSystem, SnapshotSettingData) → ResultingSystem, Job (102)."""
    vm = referenced_vm(call)
    point = _snapshot_point(call)
    failover = _failover(call.runtime)
    if failover is None:
        call.runtime.replication.test_replica_system(vm.vm_id, point)
        return done()
    job, test_vm_id = failover.drill.submit_create(vm.vm_id, point)
    return job_started(call, job, {"ResultingSystem": naming.system_path(call.namespace, test_vm_id)})


def _failover_job(name: str) -> Callable[[MethodCall], MethodResult]:
    """RevertFailover / CommitFailover(ComputerSystem) → Job, through the failover use cases."""

    def handler(call: MethodCall) -> MethodResult:
        vm = referenced_vm(call)
        failover = _failover(call.runtime)
        if failover is None:
            getattr(call.runtime.replication, f"{name}_failover")(vm.vm_id)
            return done()
        return job_started(call, getattr(failover, f"submit_{name}")(vm.vm_id))

    return handler


def _vm_only(action: Callable[[CimRuntime, str], None]) -> Callable[[MethodCall], MethodResult]:
    def handler(call: MethodCall) -> MethodResult:
        action(call.runtime, referenced_vm(call).vm_id)
        return done()

    return handler


def reverse_replication(call: MethodCall) -> MethodResult:
    """ReverseReplicationRelationship(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    planned = getattr(call.runtime.services, "planned", None)
    if planned is not None:  # helper PF's reverse replication
        return job_started(call, planned.reverse.submit(vm.vm_id, settings))
    call.runtime.replication.reverse_replication(vm.vm_id, settings)
    return done()


def modify_replication_settings(call: MethodCall) -> MethodResult:
    """ModifyReplicationSettings(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    primary = _primary(call.runtime)
    if primary is not None and vm.replication_mode == 1:
        return job_started(call, primary.submit_modify(vm.vm_id, settings))
    planned = _planned(call.runtime)
    if planned is not None and vm.replication_mode == 2:  # the extended relationship (helper PF)
        return job_started(call, planned.extended.submit_modify(vm.vm_id, settings))
    call.runtime.replication.modify_replication_settings(vm.vm_id, settings)
    return done()


def change_mode_to_primary(call: MethodCall) -> MethodResult:
    """ChangeReplicationModeToPrimary(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    planned = _planned(call.runtime)
    if planned is not None:  # helper PF
        return job_started(call, planned.extended.submit_change_mode_to_primary(
            vm.vm_id, relationship_param(call, vm)))
    call.runtime.replication.change_mode_to_primary(vm.vm_id, relationship_param(call, vm))
    return done()


def remove_relationship_ex(call: MethodCall) -> MethodResult:
    """RemoveReplicationRelationshipEx(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    return _remove(call, vm.vm_id, relationship_param(call, vm))


def remove_relationship(call: MethodCall) -> MethodResult:
    """RemoveReplicationRelationship(ComputerSystem): the primary relationship."""
    return _remove(call, referenced_vm(call).vm_id, RelationshipIndex.PRIMARY)


def _remove(call: MethodCall, vm_id: str, index: RelationshipIndex) -> MethodResult:
    primary = _primary(call.runtime)
    if primary is not None and call.runtime.db.vms.get(vm_id).replication_mode == 1:
        return job_started(call, primary.submit_remove(vm_id, index))
    planned = _planned(call.runtime)
    if planned is not None and index is RelationshipIndex.EXTENDED:  # helper PF
        return job_started(call, planned.extended.submit_remove(vm_id))
    call.runtime.replication.remove_relationship(vm_id, index)
    return done()


def reset_statistics_ex(call: MethodCall) -> MethodResult:
    """ResetReplicationStatisticsEx(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    call.runtime.replication.reset_statistics(vm.vm_id, relationship_param(call, vm))
    return done()


def resynchronize(call: MethodCall) -> MethodResult:
    """Resynchronize(ComputerSystem, StartTime)."""
    vm = referenced_vm(call)
    start = call.param("StartTime")
    when = start.datetime if start is not None else None
    primary = _primary(call.runtime)
    if primary is not None and vm.replication_mode == 1:
        return job_started(call, primary.submit_resynchronize(vm.vm_id, when))
    planned = _planned(call.runtime)
    if planned is not None and vm.replication_mode == 2:  # extended relationship (helper PF)
        return job_started(call, planned.extended.submit_resynchronize(vm.vm_id))
    call.runtime.replication.resynchronize(vm.vm_id, when)
    return done()


def set_failover_network_settings(call: MethodCall) -> MethodResult:
    """SetFailoverNetworkAdapterSettings(ComputerSystem, NetworkSettings[]): stored at once (0)."""
    from standby.cim.providers.failover_network import store_settings

    vm = referenced_vm(call)
    store_settings(call.runtime, vm, list(call.param("NetworkSettings") or []))
    return done()


def initiate_failback(call: MethodCall) -> MethodResult:
    """InitiateFailback(ComputerSystem, ReplicationSettingData, RecoveryPointIdentifier)."""
    vm = referenced_vm(call)
    call.runtime.replication.initiate_failback(vm.vm_id, call.param("RecoveryPointIdentifier"))
    return done()


def statistics(call: MethodCall) -> MethodResult:
    """GetReplicationStatistics[Ex](ComputerSystem[, ReplicationRelationship]) → statistics, issues."""
    vm = referenced_vm(call)
    index = relationship_param(call, vm)
    report = call.runtime.replication.replication_statistics(vm.vm_id, index)
    source = str(naming.system_path(call.namespace, vm.vm_id))
    return done({
        "ReplicationStatistics": [convert.statistics_instance(call.runtime.schema, call.namespace, report)],
        "ReplicationHealthIssues": convert.health_issue_instances(
            call.runtime.schema, call.namespace, report.issues, source),
    })


# -- service-level methods -----------------------------------------------------------------------------


def modify_service_settings(call: MethodCall) -> MethodResult:
    """ModifyServiceSettings(SettingData)."""
    current = call.runtime.replication.service_settings()
    call.runtime.replication.modify_service_settings(convert.service_settings(_settings(call, "SettingData"),
                                                                              current))
    return done()


def add_entry(call: MethodCall) -> MethodResult:
    """AddAuthorizationEntry(AuthorizationEntry)."""
    call.runtime.replication.add_authorization_entry(convert.authorization_entry(_entry(call)))
    return done()


def modify_entry(call: MethodCall) -> MethodResult:
    """ModifyAuthorizationEntry(AuthorizationEntry)."""
    call.runtime.replication.modify_authorization_entry(convert.authorization_entry(_entry(call)))
    return done()


def remove_entry(call: MethodCall) -> MethodResult:
    """RemoveAuthorizationEntry(AllowedPrimaryHostSystem)."""
    call.runtime.replication.remove_authorization_entry(str(call.param("AllowedPrimaryHostSystem") or ""))
    return done()


def set_entry(call: MethodCall) -> MethodResult:
    """SetAuthorizationEntry(ComputerSystem, AuthorizationEntry)."""
    vm = referenced_vm(call)
    call.runtime.replication.set_authorization_entry(vm.vm_id, convert.authorization_entry(_entry(call)))
    return done()


def system_certificates(call: MethodCall) -> MethodResult:
    """GetSystemCertificates() → EncodedCertificates[]."""
    return done({"EncodedCertificates": call.runtime.replication.system_certificates()})


def test_connection(call: MethodCall) -> MethodResult:
    """TestReplicationConnection(...) → Job, when the daemon wired the connection tester in."""
    tester = call.runtime.connection_tester
    if tester is None:
        raise not_implemented(UseCase.TEST_REPLICATION_CONNECTION)
    from standby.engine.connection import ConnectionTarget

    auth = call.param("AuthenticationType")
    target = ConnectionTarget(
        connection_point=str(call.param("RecoveryConnectionPoint") or ""),
        port=int(call.param("RecoveryServerPortNumber") or 0),
        authentication_type=int(auth) if auth is not None else 2,
        certificate_thumbprint=str(call.param("CertificateThumbPrint") or ""),
        bypass_proxy_server=bool(call.param("BypassProxyServer")),
    )
    return job_started(call, tester.submit(target))


def service_state_change(call: MethodCall) -> MethodResult:
    """RequestStateChange: 0 when asked to stay enabled, else 1 (spec §2.3)."""
    requested = call.param("RequestedState")
    return MethodResult(call.runtime.replication.service_state_change(int(requested or 0)))


_HANDLERS: dict[str, Callable[[MethodCall], MethodResult]] = {
    "CreateReplicationRelationship": create_relationship,
    "StartReplication": start_replication,
    "ImportInitialReplica": import_initial_replica,
    "InitiateFailover": initiate_failover,
    "TestReplicaSystem": test_replica_system,
    "RevertFailover": _failover_job("revert"),
    "CommitFailover": _failover_job("commit"),
    "RemoveReplicationRelationship": remove_relationship,
    "ResetReplicationStatistics": _vm_only(lambda rt, vm: rt.replication.reset_statistics(vm)),
    "RemoveReplicationRelationshipEx": remove_relationship_ex,
    "ResetReplicationStatisticsEx": reset_statistics_ex,
    "ReverseReplicationRelationship": reverse_replication,
    "ModifyReplicationSettings": modify_replication_settings,
    "ChangeReplicationModeToPrimary": change_mode_to_primary,
    "Resynchronize": resynchronize,
    "SetFailoverNetworkAdapterSettings": set_failover_network_settings,
    "InitiateFailback": initiate_failback,
    "GetReplicationStatistics": statistics,
    "GetReplicationStatisticsEx": statistics,
    "ModifyServiceSettings": modify_service_settings,
    "AddAuthorizationEntry": add_entry,
    "ModifyAuthorizationEntry": modify_entry,
    "RemoveAuthorizationEntry": remove_entry,
    "SetAuthorizationEntry": set_entry,
    "GetSystemCertificates": system_certificates,
    "TestReplicationConnection": test_connection,
    "RequestStateChange": service_state_change,
    "StartService": lambda call: MethodResult(0),
    "StopService": lambda call: MethodResult(1),
}


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the replication service instance and every method of spec §3.1."""
    registry.add_provider(FunctionProvider(
        naming.REPLICATION_SERVICE, naming.VIRTUALIZATION_ONLY, lambda ns, ctx: _instances(runtime, ns, ctx)))
    for method, handler in _HANDLERS.items():
        registry.add_method(naming.REPLICATION_SERVICE, method, handler)
