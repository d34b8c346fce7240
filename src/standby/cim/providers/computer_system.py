"""Msvm_ComputerSystem: the host and every VM, with the replication view of the VM's primary relationship.

Both namespaces serve it. ``Name`` is the host name or the VM GUID (upper case); ReplicationState/Health,
FailedOverReplicationType, LastReplicationType and the times come from the primary relationship,
as Hyper-V keeps them for older clients. Methods here: RequestReplicationStateChange[Ex]. The VM life-cycle
method RequestStateChange is registered by the VM providers (``vm_*.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, relationship_param, target_vm
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.providers.replication_service import answer
from standby.cim.runtime import CimRuntime
from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState, RelationshipIndex


def host_instance(runtime: CimRuntime, namespace: str) -> CIMInstance:
    """The host as an Msvm_ComputerSystem."""
    return make_instance(runtime.schema, namespace, naming.COMPUTER_SYSTEM, {
        "CreationClassName": naming.COMPUTER_SYSTEM,
        "Name": runtime.host.name,
        "ElementName": runtime.host.name,
        "Caption": "Hosting Computer System",
        "Description": "Host running the standby daemon",
        "EnabledState": EnabledState.ENABLED,
        "EnabledDefault": EnabledState.ENABLED,
        "HealthState": 5,
        "OperationalStatus": [2],
        "StatusDescriptions": ["OK"],
    })


def vm_instance(runtime: CimRuntime, namespace: str, vm: VirtualMachine) -> CIMInstance:
    """A VM as an Msvm_ComputerSystem."""
    primary = runtime.engine.inventory.find_relationship(vm.vm_id, int(RelationshipIndex.PRIMARY))
    return make_instance(runtime.schema, namespace, naming.COMPUTER_SYSTEM, {
        "CreationClassName": naming.COMPUTER_SYSTEM,
        "Name": vm.vm_id,
        "ElementName": vm.name,
        "Caption": "Virtual Machine",
        "Description": "Virtual machine",
        "EnabledState": vm.enabled_state,
        "EnabledDefault": EnabledState.DISABLED,
        "HealthState": 5,
        "OperationalStatus": [2],
        "StatusDescriptions": ["OK"],
        "InstallDate": vm.created_at,
        "ReplicationMode": vm.replication_mode,
        "ReplicationState": primary.state if primary else 0,
        "ReplicationHealth": primary.health if primary else 0,
        "FailedOverReplicationType": primary.failed_over_type if primary else 0,
        "LastReplicationType": primary.last_replication_type if primary else 0,
        "LastReplicationTime": primary.last_replication_time if primary else None,
        "LastApplicationConsistentReplicationTime": primary.last_app_consistent_time if primary else None,
    })


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield host_instance(runtime, namespace)
    for vm in runtime.engine.inventory.vms():
        yield vm_instance(runtime, namespace, vm)


def request_replication_state_change(call: MethodCall) -> MethodResult:
    """RequestReplicationStateChange: the primary relationship changes state (hyperv-api §4)."""
    vm = target_vm(call)
    return _state_change(call, vm.vm_id, int(call.param("RequestedState")), RelationshipIndex.PRIMARY)


def request_replication_state_change_ex(call: MethodCall) -> MethodResult:
    """RequestReplicationStateChangeEx: the relationship passed (NULL = primary) changes state."""
    vm = target_vm(call)
    index = relationship_param(call, vm)
    return _state_change(call, vm.vm_id, int(call.param("RequestedState")), index)


def _state_change(call: MethodCall, vm_id: str, requested: int, index: RelationshipIndex) -> MethodResult:
    return answer(call, call.runtime.engine.replication.request_state_change(vm_id, requested, index))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the Msvm_ComputerSystem instances and its replication state methods."""
    registry.add_provider(FunctionProvider(
        naming.COMPUTER_SYSTEM, naming.BOTH, lambda ns, ctx: _instances(runtime, ns, ctx)))
    registry.add_method(naming.COMPUTER_SYSTEM, "RequestReplicationStateChange",
                        request_replication_state_change)
    registry.add_method(naming.COMPUTER_SYSTEM, "RequestReplicationStateChangeEx",
                        request_replication_state_change_ex)
