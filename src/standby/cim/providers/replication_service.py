"""Msvm_ReplicationService: the singleton per-VM replication service of this host and all its methods.

Each handler turns the typed CIM parameters into Python values and calls one entry of
``engine.service.ReplicationService``, which picks the path itself; refusals come back as ``StandbyError``
and the dispatcher maps them to return codes. REF checks already happened in the dispatcher; here a
ComputerSystem that names the host (not a VM) is an invalid parameter (32773) and a SnapshotSettingData
that is not a Replica recovery point (``…Snapshot:Replica:*``) an incorrect data type (32776).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from pywbem import CIMInstance

from standby.cim import convert, naming
from standby.cim.backend import RequestContext
from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, done, job_started, referenced_vm, relationship_param
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.enums import EnabledState, RelationshipIndex, VirtualSystemType
from standby.domain.errors import IncorrectDataType, InvalidParameter
from standby.engine.connection import ConnectionTarget
from standby.engine.service import InitialReplication, Outcome, ReplicationService


def service_instance(runtime: CimRuntime, namespace: str) -> CIMInstance:
    """The replication service with Hyper-V's fixed values (hyperv-api §3)."""
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


def _start_time(call: MethodCall) -> datetime | None:
    start = call.param("StartTime")
    return start.datetime if start is not None else None


def answer(call: MethodCall, outcome: Outcome, out: dict[str, object] | None = None) -> MethodResult:
    """An entry's outcome as a method result: 4096 with the Job REF, or 0."""
    values = dict(out or {})
    if outcome.resulting_system is not None:
        values["ResultingSystem"] = naming.system_path(call.namespace, outcome.resulting_system)
    return job_started(call, outcome.job, values) if outcome.job is not None else done(values)


def _service(call: MethodCall) -> ReplicationService:
    return call.runtime.engine.replication


# -- per-VM methods ------------------------------------------------------------------------------------


def create_relationship(call: MethodCall) -> MethodResult:
    """CreateReplicationRelationship(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    return answer(call, _service(call).create_relationship(vm.vm_id, settings))


def start_replication(call: MethodCall) -> MethodResult:
    """StartReplication(ComputerSystem, InitialReplicationType, ExportLocation, StartTime)."""
    vm = referenced_vm(call)
    kind = call.param("InitialReplicationType")
    if kind is None:
        raise InvalidParameter("InitialReplicationType is required", message_id="ParameterRequired",
                               parameter="InitialReplicationType")
    request = InitialReplication(int(kind), call.param("InitialReplicationExportLocation"), _start_time(call))
    return answer(call, _service(call).start_replication(vm.vm_id, request))


def import_initial_replica(call: MethodCall) -> MethodResult:
    """ImportInitialReplica(ComputerSystem, InitialReplicationImportLocation)."""
    vm = referenced_vm(call)
    location = str(call.param("InitialReplicationImportLocation") or "")
    return answer(call, _service(call).import_initial_replica(vm.vm_id, location))


def initiate_failover(call: MethodCall) -> MethodResult:
    """InitiateFailover(ComputerSystem, SnapshotSettingData) → Job (97); CIM callers never force it."""
    vm = referenced_vm(call)
    return answer(call, _service(call).initiate_failover(vm.vm_id, _snapshot_point(call)))


def test_replica_system(call: MethodCall) -> MethodResult:
    """TestReplicaSystem(ComputerSystem, SnapshotSettingData) → ResultingSystem, Job (102)."""
    vm = referenced_vm(call)
    return answer(call, _service(call).test_replica_system(vm.vm_id, _snapshot_point(call)))


def revert_failover(call: MethodCall) -> MethodResult:
    """RevertFailover(ComputerSystem) → Job (98)."""
    return answer(call, _service(call).revert_failover(referenced_vm(call).vm_id))


def commit_failover(call: MethodCall) -> MethodResult:
    """CommitFailover(ComputerSystem) → Job (99)."""
    return answer(call, _service(call).commit_failover(referenced_vm(call).vm_id))


def reverse_replication(call: MethodCall) -> MethodResult:
    """ReverseReplicationRelationship(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    return answer(call, _service(call).reverse_replication(vm.vm_id, settings))


def modify_replication_settings(call: MethodCall) -> MethodResult:
    """ModifyReplicationSettings(ComputerSystem, ReplicationSettingData)."""
    vm = referenced_vm(call)
    settings = convert.replication_settings(_settings(call))
    return answer(call, _service(call).modify_replication_settings(vm.vm_id, settings))


def change_mode_to_primary(call: MethodCall) -> MethodResult:
    """ChangeReplicationModeToPrimary(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    return answer(call, _service(call).change_mode_to_primary(vm.vm_id, relationship_param(call, vm)))


def remove_relationship_ex(call: MethodCall) -> MethodResult:
    """RemoveReplicationRelationshipEx(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    return answer(call, _service(call).remove_relationship(vm.vm_id, relationship_param(call, vm)))


def remove_relationship(call: MethodCall) -> MethodResult:
    """RemoveReplicationRelationship(ComputerSystem): the primary relationship."""
    vm_id = referenced_vm(call).vm_id
    return answer(call, _service(call).remove_relationship(vm_id, RelationshipIndex.PRIMARY))


def reset_statistics(call: MethodCall) -> MethodResult:
    """ResetReplicationStatistics(ComputerSystem)."""
    return answer(call, _service(call).reset_statistics(referenced_vm(call).vm_id))


def reset_statistics_ex(call: MethodCall) -> MethodResult:
    """ResetReplicationStatisticsEx(ComputerSystem, ReplicationRelationship)."""
    vm = referenced_vm(call)
    return answer(call, _service(call).reset_statistics(vm.vm_id, relationship_param(call, vm)))


def resynchronize(call: MethodCall) -> MethodResult:
    """Resynchronize(ComputerSystem, StartTime)."""
    vm = referenced_vm(call)
    return answer(call, _service(call).resynchronize(vm.vm_id, _start_time(call)))


def set_failover_network_settings(call: MethodCall) -> MethodResult:
    """SetFailoverNetworkAdapterSettings(ComputerSystem, NetworkSettings[]): stored at once (0)."""
    from standby.cim.providers.failover_network import parse_settings

    vm = referenced_vm(call)
    items = parse_settings(vm, list(call.param("NetworkSettings") or []))
    _service(call).set_failover_network_settings(vm.vm_id, items)
    return done()


def initiate_failback(call: MethodCall) -> MethodResult:
    """InitiateFailback(ComputerSystem, ReplicationSettingData, RecoveryPointIdentifier)."""
    vm = referenced_vm(call)
    point = call.param("RecoveryPointIdentifier")
    return answer(call, _service(call).initiate_failback(vm.vm_id, None if point is None else str(point)))


def statistics(call: MethodCall) -> MethodResult:
    """GetReplicationStatistics[Ex](ComputerSystem[, ReplicationRelationship]) → statistics, issues."""
    vm = referenced_vm(call)
    index = relationship_param(call, vm)
    report = _service(call).statistics(vm.vm_id, index)
    source = str(naming.system_path(call.namespace, vm.vm_id))
    return done({
        "ReplicationStatistics": [convert.statistics_instance(call.runtime.schema, call.namespace, report)],
        "ReplicationHealthIssues": convert.health_issue_instances(
            call.runtime.schema, call.namespace, report.issues, source),
    })


# -- service-level methods -----------------------------------------------------------------------------


def modify_service_settings(call: MethodCall) -> MethodResult:
    """ModifyServiceSettings(SettingData)."""
    service = _service(call)
    service.modify_service_settings(convert.service_settings(_settings(call, "SettingData"),
                                                             service.service_settings()))
    return done()


def add_entry(call: MethodCall) -> MethodResult:
    """AddAuthorizationEntry(AuthorizationEntry)."""
    _service(call).add_authorization_entry(convert.authorization_entry(_entry(call)))
    return done()


def modify_entry(call: MethodCall) -> MethodResult:
    """ModifyAuthorizationEntry(AuthorizationEntry)."""
    _service(call).modify_authorization_entry(convert.authorization_entry(_entry(call)))
    return done()


def remove_entry(call: MethodCall) -> MethodResult:
    """RemoveAuthorizationEntry(AllowedPrimaryHostSystem)."""
    _service(call).remove_authorization_entry(str(call.param("AllowedPrimaryHostSystem") or ""))
    return done()


def set_entry(call: MethodCall) -> MethodResult:
    """SetAuthorizationEntry(ComputerSystem, AuthorizationEntry)."""
    vm = referenced_vm(call)
    _service(call).set_authorization_entry(vm.vm_id, convert.authorization_entry(_entry(call)))
    return done()


def system_certificates(call: MethodCall) -> MethodResult:
    """GetSystemCertificates() → EncodedCertificates[]."""
    return done({"EncodedCertificates": _service(call).system_certificates()})


def test_connection(call: MethodCall) -> MethodResult:
    """TestReplicationConnection(...) → Job (115)."""
    auth = call.param("AuthenticationType")
    target = ConnectionTarget(
        connection_point=str(call.param("RecoveryConnectionPoint") or ""),
        port=int(call.param("RecoveryServerPortNumber") or 0),
        authentication_type=int(auth) if auth is not None else 2,
        certificate_thumbprint=str(call.param("CertificateThumbPrint") or ""),
        bypass_proxy_server=bool(call.param("BypassProxyServer")),
    )
    return answer(call, _service(call).test_replication_connection(target))


def service_state_change(call: MethodCall) -> MethodResult:
    """RequestStateChange: 0 when asked to stay enabled, else 1 (hyperv-api §2.3)."""
    requested = call.param("RequestedState")
    return MethodResult(ReplicationService.service_state_change(int(requested or 0)))


_HANDLERS: dict[str, Callable[[MethodCall], MethodResult]] = {
    "CreateReplicationRelationship": create_relationship,
    "StartReplication": start_replication,
    "ImportInitialReplica": import_initial_replica,
    "InitiateFailover": initiate_failover,
    "TestReplicaSystem": test_replica_system,
    "RevertFailover": revert_failover,
    "CommitFailover": commit_failover,
    "RemoveReplicationRelationship": remove_relationship,
    "ResetReplicationStatistics": reset_statistics,
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
    """Register the replication service instance and every method of hyperv-api §3.1."""
    registry.add_provider(FunctionProvider(
        naming.REPLICATION_SERVICE, naming.VIRTUALIZATION_ONLY, lambda ns, ctx: _instances(runtime, ns, ctx)))
    for method, handler in _HANDLERS.items():
        registry.add_method(naming.REPLICATION_SERVICE, method, handler)
