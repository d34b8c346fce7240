"""Small helpers shared by standby's own providers (not a provider module itself)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.embedded import property_value
from standby.cim.providers.registry import MethodCall, MethodResult
from standby.cim.runtime import CimRuntime
from standby.domain.entities import Job, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReturnCode
from standby.domain.errors import InvalidParameter, NotSupported
from standby.engine.replication import relationship_index

Produce = Callable[[str, RequestContext], Iterable[CIMInstance]]
#: A produce function that also takes the runtime (bind it with ``bind``).
Producer = Callable[["CimRuntime", str, RequestContext], Iterable[CIMInstance]]


def bind(producer: Producer, runtime: CimRuntime) -> Produce:
    """``producer`` with the runtime filled in."""

    def produce(namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
        return producer(runtime, namespace, ctx)

    return produce


@dataclass(frozen=True, slots=True)
class FunctionProvider:
    """An instance provider made of a function ``(namespace, ctx) -> instances``."""

    classname: str
    namespaces: frozenset[str] | None
    produce: Produce

    def instances(self, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
        """Every instance of the class in ``namespace``."""
        return self.produce(namespace, ctx)


def referenced_vm(call: MethodCall, parameter: str = "ComputerSystem") -> VirtualMachine:
    """The VM a ComputerSystem REF names; the host or NULL is an invalid parameter (32773)."""
    name = naming.key(call.referenced(parameter), "Name")
    if name is None:
        raise InvalidParameter(f"{parameter} must name a virtual machine",
                               message_id="VirtualMachineRequired", parameter=parameter)
    vm = call.runtime.engine.inventory.find_vm(str(name).upper())
    if vm is None:
        raise InvalidParameter(f"{parameter} names the host {name}, not a virtual machine",
                               message_id="VirtualMachineRequired", parameter=parameter)
    return vm


def target_vm(call: MethodCall) -> VirtualMachine:
    """The VM an instance method runs on; the host is refused as not supported."""
    name = naming.key(call.target_instance, "Name")
    vm = call.runtime.engine.inventory.find_vm(str(name).upper()) if name is not None else None
    if vm is None:
        raise NotSupported(f"{call.method} applies to virtual machines only, not to the host",
                           message_id="VirtualMachineRequired", parameter="target")
    return vm


def relationship_param(
    call: MethodCall, vm: VirtualMachine, parameter: str = "ReplicationRelationship"
) -> RelationshipIndex:
    """The relationship index an embedded Msvm_ReplicationRelationship names (NULL = the primary one)."""
    relationship = call.param(parameter)
    if relationship is None:
        return RelationshipIndex.PRIMARY
    instance_id = property_value(relationship, "InstanceID")
    if not instance_id:
        raise InvalidParameter(f"{parameter} needs its InstanceID (Microsoft:<VM GUID>\\HVR\\<n>)",
                               message_id="RelationshipNotOfVm", relationship="", vm=vm.vm_id)
    return relationship_index(str(instance_id), vm.vm_id)


def done(out: dict[str, object] | None = None) -> MethodResult:
    """Completed synchronously (0)."""
    return MethodResult(int(ReturnCode.COMPLETED), dict(out or {}))


def job_started(call: MethodCall, job: Job, out: dict[str, object] | None = None) -> MethodResult:
    """Accepted as a job (4096) with the Job REF."""
    values: dict[str, object] = {"Job": naming.job_path(call.namespace, job.job_id)}
    values.update(out or {})
    return MethodResult(int(ReturnCode.JOB_STARTED), values)
