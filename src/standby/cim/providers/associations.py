"""The association instances that tie the model together (hyperv-api §1.1).

- Msvm_SystemReplicationRelationship: VM → each of its relationships;
- Msvm_ElementSettingData: VM → each Msvm_ReplicationSettingData; replication service → its settings and
  every authorization entry;
- Msvm_SnapshotOfVirtualSystem: VM → each recovery-point VSSD;
- Msvm_ReplicaSystemDependency: replica VM → its test VM ("<name> - Test", mode Test Replica);
- Msvm_CollectedVirtualSystems: collection → member VM;
- Msvm_RecoveryPointOfVirtualSystemCollection, Msvm_ReplicaCollectionDependency, Msvm_MemberOfRedundancySet
  in root/HyperVCluster/v2.
The object manager answers Associators/References from these.
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance, CIMInstanceName

from standby.cim import naming
from standby.cim.backend import VIRTUALIZATION_NAMESPACE, RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, Producer, bind
from standby.cim.providers.collections import COLLECTION_POINT
from standby.cim.providers.redundancy import REDUNDANCY_SET
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.providers.replication_data import (
    AUTHORIZATION,
    RELATIONSHIP,
    SERVICE_SETTINGS,
    SETTINGS,
    authorization_id,
    service_settings_id,
)
from standby.cim.runtime import CimRuntime
from standby.domain.enums import ReplicationMode

_RECOVERY_MODES = (ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA)


def _link(runtime: CimRuntime, namespace: str, classname: str, **refs: CIMInstanceName) -> CIMInstance:
    return make_instance(runtime.schema, namespace, classname, refs)


def _system_relationships(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rel in runtime.engine.inventory.relationships():
        yield _link(runtime, ns, "Msvm_SystemReplicationRelationship",
                    Antecedent=naming.system_path(ns, rel.vm_id),
                    Dependent=naming.instance_id_path(ns, RELATIONSHIP, rel.instance_id))


def _element_settings(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rel in runtime.engine.inventory.relationships():
        yield _link(runtime, ns, "Msvm_ElementSettingData",
                    ManagedElement=naming.system_path(ns, rel.vm_id),
                    SettingData=naming.instance_id_path(ns, SETTINGS, rel.instance_id))
    if ns != VIRTUALIZATION_NAMESPACE:
        return
    service = naming.service_path(ns, runtime.host, naming.REPLICATION_SERVICE,
                                  naming.REPLICATION_SERVICE_NAME)
    yield _link(runtime, ns, "Msvm_ElementSettingData", ManagedElement=service,
                SettingData=naming.instance_id_path(ns, SERVICE_SETTINGS, service_settings_id(runtime)))
    for entry in runtime.engine.inventory.authorization_entries():
        yield _link(runtime, ns, "Msvm_ElementSettingData", ManagedElement=service,
                    SettingData=naming.instance_id_path(ns, AUTHORIZATION, authorization_id(entry)))


def _snapshots(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for point in runtime.engine.inventory.recovery_points():
        yield _link(runtime, ns, "Msvm_SnapshotOfVirtualSystem",
                    Antecedent=naming.system_path(ns, point.vm_id),
                    Dependent=naming.instance_id_path(ns, naming.VSSD, point.instance_id))


def _test_systems(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    vms = runtime.engine.inventory.vms()
    tests = {vm.name: vm for vm in vms if vm.replication_mode == ReplicationMode.TEST_REPLICA}
    for vm in vms:
        test = tests.get(f"{vm.name} - Test")
        if test is not None and vm.replication_mode in _RECOVERY_MODES:
            yield _link(runtime, ns, "Msvm_ReplicaSystemDependency",
                        Antecedent=naming.system_path(ns, vm.vm_id),
                        Dependent=naming.system_path(ns, test.vm_id))


def _members(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    known = {vm.vm_id for vm in runtime.engine.inventory.vms()}
    for collection in runtime.engine.inventory.collections():
        for vm_id in collection.member_vm_ids:
            if vm_id in known:
                yield _link(runtime, ns, "Msvm_CollectedVirtualSystems",
                            Collection=naming.collection_path(ns, collection.collection_id),
                            Member=naming.system_path(ns, vm_id))


def _collection_points(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for point in runtime.engine.inventory.collection_points():
        path = CIMInstanceName(COLLECTION_POINT, namespace=ns, keybindings={
            "CollectionID": point.collection_id, "InstanceID": f"Microsoft:{point.point_id}"})
        yield _link(runtime, ns, "Msvm_RecoveryPointOfVirtualSystemCollection",
                    Antecedent=naming.collection_path(ns, point.collection_id), Dependent=path)


def _test_collections(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    collections = runtime.engine.inventory.collections()
    tests = {c.name: c for c in collections if c.replication_mode == ReplicationMode.TEST_REPLICA}
    for collection in collections:
        test = tests.get(f"{collection.name} - Test")
        if test is not None and collection.replication_mode == ReplicationMode.REPLICA:
            yield _link(runtime, ns, "Msvm_ReplicaCollectionDependency",
                        Antecedent=naming.collection_path(ns, collection.collection_id),
                        Dependent=naming.collection_path(ns, test.collection_id))


def _redundancy_members(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rs in runtime.engine.inventory.redundancy_sets():
        for member in rs.member_ids:
            yield _link(runtime, ns, "Msvm_MemberOfRedundancySet",
                        Collection=naming.instance_id_path(ns, REDUNDANCY_SET, f"Microsoft:{rs.set_id}"),
                        Member=naming.system_path(ns, member))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register every association provider."""
    table: list[tuple[str, frozenset[str], Producer]] = [
        ("Msvm_SystemReplicationRelationship", naming.BOTH, _system_relationships),
        ("Msvm_ElementSettingData", naming.BOTH, _element_settings),
        ("Msvm_SnapshotOfVirtualSystem", naming.VIRTUALIZATION_ONLY, _snapshots),
        ("Msvm_ReplicaSystemDependency", naming.BOTH, _test_systems),
        ("Msvm_CollectedVirtualSystems", naming.BOTH, _members),
        ("Msvm_RecoveryPointOfVirtualSystemCollection", naming.CLUSTER_ONLY, _collection_points),
        ("Msvm_ReplicaCollectionDependency", naming.CLUSTER_ONLY, _test_collections),
        ("Msvm_MemberOfRedundancySet", naming.CLUSTER_ONLY, _redundancy_members),
    ]
    for classname, namespaces, produce in table:
        registry.add_provider(FunctionProvider(classname, namespaces, bind(produce, runtime)))
