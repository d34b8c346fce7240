"""VM collections: Msvm_VirtualSystemCollection, Msvm_CollectionManagementService (both namespaces), and in
root/HyperVCluster/v2 Msvm_CollectionReplicationService and Msvm_CollectionRecoveryPoint (hyperv-api §8).

Management methods are carried out by ``engine.collections.CollectionUseCases``; the group replication methods
by the collection engine entries (``_group_routes.route``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, Producer, bind, done, referenced_vm
from standby.cim.providers._group_routes import route
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.entities import Collection, CollectionRecoveryPoint
from standby.domain.enums import EnabledState
from standby.domain.errors import IncorrectDataType, InvalidParameter, NotSupported
from standby.engine.collections import GUARDS
from standby.engine.operations import CollectionUseCase

COLLECTION_POINT = "Msvm_CollectionRecoveryPoint"
_MANAGEMENT_NAME = "CollectionManagementService"
_REPLICATION_NAME = "CollectionReplicationService"


def collection_instance(runtime: CimRuntime, namespace: str, collection: Collection) -> CIMInstance:
    """A collection as an Msvm_VirtualSystemCollection."""
    latest = _latest_point(runtime, collection.collection_id)
    return make_instance(runtime.schema, namespace, naming.VIRTUAL_SYSTEM_COLLECTION, {
        "CollectionID": collection.collection_id,
        "InstanceID": f"Microsoft:{collection.collection_id}",
        "ElementName": collection.name,
        "Caption": "Virtual System Collection",
        "ReplicationMode": collection.replication_mode,
        "ReplicationState": collection.replication_state,
        "FailedOverReplicationType": collection.failed_over_type,
        "LastApplyTime": collection.last_apply_time,
        "LastApplyVirtualMachineIds": [vm for vm, _ in latest.members] if latest else None,
        "LastApplyConsistencyLevel": latest.consistency if latest else None,
    })


def _latest_point(runtime: CimRuntime, collection_id: str) -> CollectionRecoveryPoint | None:
    points = runtime.engine.inventory.collection_points(collection_id)
    return max(points, key=lambda p: p.created_at) if points else None


def point_instance(runtime: CimRuntime, namespace: str, point: CollectionRecoveryPoint) -> CIMInstance:
    """A group recovery point as an Msvm_CollectionRecoveryPoint."""
    return make_instance(runtime.schema, namespace, COLLECTION_POINT, {
        "CollectionID": point.collection_id,
        "InstanceID": f"Microsoft:{point.point_id}",
        "ElementName": f"{point.created_at:%Y-%m-%d %H:%M:%S}",
        "CreationTime": point.created_at,
        "VirtualMachineIds": [vm for vm, _ in point.members],
        "RecoveryPointIds": [rp for _, rp in point.members],
        "ConsistencyLevel": point.consistency,
    })


def _service(runtime: CimRuntime, namespace: str, classname: str, name: str, caption: str) -> CIMInstance:
    return make_instance(runtime.schema, namespace, classname, {
        **naming.service_keys(runtime.host, classname, name),
        "Caption": caption,
        "ElementName": caption,
        "EnabledState": EnabledState.ENABLED,
        "EnabledDefault": EnabledState.ENABLED,
        "RequestedState": 12,
        "HealthState": 5,
        "OperationalStatus": [2],
        "Started": True,
    })


def _collections(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for collection in runtime.engine.inventory.collections():
        yield collection_instance(runtime, namespace, collection)


def _points(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for collection in runtime.engine.inventory.collections():
        runtime.assembler.points(collection.collection_id)  # drops points retention made incomplete
    for point in runtime.engine.inventory.collection_points():
        yield point_instance(runtime, namespace, point)


def _management(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield _service(runtime, namespace, naming.COLLECTION_MANAGEMENT_SERVICE, _MANAGEMENT_NAME,
                   "Collection Management Service")


def _replication(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield _service(runtime, namespace, naming.COLLECTION_REPLICATION_SERVICE, _REPLICATION_NAME,
                   "Collection Replication Service")


# -- parameters ---------------------------------------------------------------------------------------------


def _collection_id(call: MethodCall, parameter: str = "Collection") -> str:
    value = naming.key(call.referenced(parameter), "CollectionID")
    if value is None:
        raise InvalidParameter(f"{parameter} must name a collection", message_id="ParameterRequired",
                               parameter=parameter)
    return str(value)


def _member_id(call: MethodCall) -> str:
    member = call.referenced("Member")
    if member is None:
        raise InvalidParameter("Member must name a virtual machine", message_id="VirtualMachineRequired",
                               parameter="Member")
    if not call.runtime.schema.is_subclass(call.namespace, member.classname, "CIM_ComputerSystem"):
        raise IncorrectDataType(f"Member must name a virtual machine, not a {member.classname}",
                                message_id="ReferenceWrongClass", parameter="Member",
                                expected=naming.COMPUTER_SYSTEM, actual=member.classname)
    return referenced_vm(call, "Member").vm_id


# -- management methods ------------------------------------------------------------------------------------


def define_collection(call: MethodCall) -> MethodResult:
    """DefineCollection(Name, Id, Type) → DefinedCollection."""
    kind = call.param("Type")
    collection = call.runtime.engine.collection_management.define(
        call.param("Name"), call.param("Id"), int(kind) if kind is not None else None)
    return done({"DefinedCollection": naming.collection_path(call.namespace, collection.collection_id)})


def add_member(call: MethodCall) -> MethodResult:
    """AddMember(Member, Collection)."""
    call.runtime.engine.collection_management.add_member(_collection_id(call), _member_id(call))
    return done()


def remove_member(call: MethodCall) -> MethodResult:
    """RemoveMember(Member, Collection)."""
    call.runtime.engine.collection_management.remove_member(_collection_id(call), _member_id(call))
    return done()


def remove_member_by_id(call: MethodCall) -> MethodResult:
    """RemoveMemberById(Member, CollectionId): succeeds when the VM is not a member."""
    collection_id = str(call.param("CollectionId") or "")
    if not collection_id:
        raise InvalidParameter("CollectionId is required", message_id="ParameterRequired",
                               parameter="CollectionId")
    call.runtime.engine.collection_management.remove_member(collection_id, _member_id(call), missing_ok=True)
    return done()


def rename_collection(call: MethodCall) -> MethodResult:
    """RenameCollection(Collection, NewName)."""
    call.runtime.engine.collection_management.rename(_collection_id(call), call.param("NewName"))
    return done()


def destroy_collection(call: MethodCall) -> MethodResult:
    """DestroyCollection(Collection)."""
    call.runtime.engine.collection_management.destroy(_collection_id(call))
    return done()


# -- group replication methods -------------------------------------------------------------------------------


def _replicate(use_case: CollectionUseCase) -> Callable[[MethodCall], MethodResult]:
    def handler(call: MethodCall) -> MethodResult:
        point = call.referenced("CollectionRecoveryPoint")
        point_id = naming.point_id_of(naming.key(point, "InstanceID")) if point is not None else None
        return route(use_case, call, _collection_id(call), point_id)

    handler.__doc__ = f"{use_case.value} on a collection (hyperv-api §8.1)."
    return handler


def _replication_service_state(call: MethodCall) -> MethodResult:
    requested = int(call.param("RequestedState") or 0)
    return MethodResult(0 if requested == int(EnabledState.ENABLED) else 1)


def _stop_service(call: MethodCall) -> MethodResult:
    raise NotSupported("The collection replication service cannot be stopped", message_id="ServiceAlwaysOn")


_MANAGEMENT: dict[str, Callable[[MethodCall], MethodResult]] = {
    "DefineCollection": define_collection,
    "AddMember": add_member,
    "RemoveMember": remove_member,
    "RemoveMemberById": remove_member_by_id,
    "RenameCollection": rename_collection,
    "DestroyCollection": destroy_collection,
}


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the collection classes and the methods of both collection services."""
    table: list[tuple[str, frozenset[str], Producer]] = [
        (naming.VIRTUAL_SYSTEM_COLLECTION, naming.BOTH, _collections),
        (naming.COLLECTION_MANAGEMENT_SERVICE, naming.BOTH, _management),
        (naming.COLLECTION_REPLICATION_SERVICE, naming.CLUSTER_ONLY, _replication),
        (COLLECTION_POINT, naming.CLUSTER_ONLY, _points),
    ]
    for classname, namespaces, produce in table:
        registry.add_provider(FunctionProvider(classname, namespaces, bind(produce, runtime)))
    for method, handler in _MANAGEMENT.items():
        registry.add_method(naming.COLLECTION_MANAGEMENT_SERVICE, method, handler)
    for use_case in GUARDS:
        registry.add_method(naming.COLLECTION_REPLICATION_SERVICE, use_case.value, _replicate(use_case))
    service = naming.COLLECTION_REPLICATION_SERVICE
    registry.add_method(service, "RequestStateChange", _replication_service_state)
    registry.add_method(service, "StartService", lambda call: MethodResult(0))
    registry.add_method(service, "StopService", _stop_service)
