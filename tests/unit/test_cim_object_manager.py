"""Reads through the object manager: classes, instances, associations, in every namespace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pywbem import CIMDateTime, CIMError, CIMInstanceName

from standby.cim.backend import INTEROP_NAMESPACE
from standby.domain.entities import AuthorizationEntry, Relationship
from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from tests.unit.test_cim_support import (
    CLUSTER,
    CTX,
    HOST,
    NOW,
    VIRT,
    VM_ID,
    World,
    collection_path,
    make_world,
    names,
    put_collection,
    put_vm,
    service_path,
    vm_path,
)


@pytest.fixture
def world() -> World:
    w = make_world()
    put_vm(w, mode=ReplicationMode.REPLICA, state=ReplicationState.REPLICATING, received=True, extended=True,
           on=True)
    w.db.auth_entries.insert(AuthorizationEntry("*.example.com", "DEFAULT", "/srv/replicas"))
    return w


def _status(call: object) -> int:
    with pytest.raises(CIMError) as caught:
        call()  # type: ignore[operator]
    return int(caught.value.status_code)


def test_namespaces_are_served(world: World) -> None:
    assert set(world.om.namespaces()) >= {VIRT, CLUSTER, INTEROP_NAMESPACE}


def test_get_class_shapes_the_answer(world: World) -> None:
    full = world.om.get_class(VIRT, "Msvm_ComputerSystem", local_only=False, include_class_origin=True)
    assert "ElementName" in full.properties and full.properties["ElementName"].class_origin
    local = world.om.get_class(VIRT, "Msvm_ComputerSystem")
    assert "ElementName" not in local.properties and "ReplicationMode" in local.properties
    bare = world.om.get_class(VIRT, "Msvm_ReplicationService", local_only=False, include_qualifiers=False,
                              property_list=["Name"])
    assert list(bare.properties) == ["Name"] and not bare.qualifiers
    assert not bare.methods["InitiateFailover"].parameters["ComputerSystem"].qualifiers
    assert _status(lambda: world.om.get_class(VIRT, "Msvm_Nothing")) == 6
    assert _status(lambda: world.om.get_class("root/nowhere", "Msvm_ComputerSystem")) == 3


def test_enumerate_classes(world: World) -> None:
    tops = {c.classname for c in world.om.enumerate_classes(VIRT)}
    assert "CIM_ManagedElement" in tops and "Msvm_ComputerSystem" not in tops
    deep = {c.classname for c in world.om.enumerate_classes(VIRT, "CIM_Service", deep_inheritance=True)}
    assert {"Msvm_ReplicationService", "Msvm_VirtualSystemManagementService"} <= deep
    direct = {c.classname for c in world.om.enumerate_classes(VIRT, "CIM_Service")}
    assert "Msvm_VirtualSystemManagementService" not in direct  # it derives via CIM_VSMS
    assert _status(lambda: world.om.enumerate_classes(VIRT, "Msvm_Nothing")) == 5


def test_computer_systems_are_the_host_and_each_vm(world: World) -> None:
    for ns in (VIRT, CLUSTER):
        systems = world.om.enumerate_instances(ns, "Msvm_ComputerSystem", CTX)
        by_name = {str(s["Name"]): s for s in systems}
        assert set(by_name) == {HOST.name, VM_ID}
        vm = by_name[VM_ID]
        assert vm["ElementName"] == "web01" and vm["EnabledState"] == EnabledState.ENABLED
        assert vm["ReplicationMode"] == ReplicationMode.REPLICA
        assert vm["ReplicationState"] == ReplicationState.REPLICATING
        assert isinstance(vm["LastReplicationTime"], CIMDateTime)
        assert vm["LastReplicationTime"].datetime == NOW - timedelta(minutes=5)
        assert vm.path == vm_path(namespace=ns)
        assert by_name[HOST.name]["Caption"] == "Hosting Computer System"


def test_get_instance_by_keys(world: World) -> None:
    vm = world.om.get_instance(vm_path(), CTX, property_list=["ElementName"])
    assert list(vm.properties) == ["ElementName"]
    base = CIMInstanceName("CIM_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": VM_ID},
                           namespace=VIRT)
    assert world.om.get_instance(base, CTX).classname == "Msvm_ComputerSystem"
    service = world.om.get_instance(service_path(), CTX)
    assert service["Caption"] == "Hyper-V Replica Service" and service["RequestedState"] == 12
    assert service["Started"] is True
    assert _status(lambda: world.om.get_instance(vm_path("NOPE"), CTX)) == 6
    missing_class = CIMInstanceName("Msvm_Nothing", {"Name": "x"}, namespace=VIRT)
    assert _status(lambda: world.om.get_instance(missing_class, CTX)) == 5


def test_deep_enumeration_and_inheritance(world: World) -> None:
    everything = world.om.enumerate_instances(VIRT, "CIM_ManagedElement", CTX)
    classes = set(names(everything))
    assert {"Msvm_ComputerSystem", "Msvm_ReplicationService", "Msvm_ReplicationRelationship",
            "Msvm_ReplicationSettingData", "Msvm_ReplicationServiceSettingData", "Msvm_ReplicationProvider",
            "Msvm_ReplicationAuthorizationSettingData", "Msvm_VirtualSystemSettingData",
            "Msvm_CollectionManagementService"} <= classes
    shallow = world.om.enumerate_instances(VIRT, "CIM_ComputerSystem", CTX, deep_inheritance=False)
    assert shallow and "ReplicationMode" not in shallow[0].properties


def test_relationships_and_their_settings(world: World) -> None:
    rels = world.om.enumerate_instances(VIRT, "Msvm_ReplicationRelationship", CTX)
    assert sorted(str(r["InstanceID"]) for r in rels) == [f"Microsoft:{VM_ID}\\HVR\\0",
                                                          f"Microsoft:{VM_ID}\\HVR\\1"]
    world.db.relationships.update(world.db.relationships.get(VM_ID, 0).__class__(
        VM_ID, RelationshipIndex.PRIMARY, ReplicationState.SUSPENDED, ReplicationHealth.WARNING,
        version=0))
    rsd_path = CIMInstanceName("Msvm_ReplicationSettingData", {"InstanceID": f"Microsoft:{VM_ID}\\HVR\\0"},
                               namespace=VIRT)
    rsd = world.om.get_instance(rsd_path, CTX)
    assert rsd["VirtualSystemType"] == "Microsoft:Hyper-V:Replica" and rsd["ElementName"] == "web01"
    assert rsd["ReplicationInterval"] == 300 and rsd["VirtualSystemIdentifier"] == VM_ID
    assert str(rsd["AutoResynchronizeIntervalStart"]) == "00000000183000.000000:000"
    vm = world.om.get_instance(vm_path(), CTX)
    assert vm["ReplicationState"] == ReplicationState.SUSPENDED and vm["ReplicationHealth"] == 2


def test_service_settings_and_provider(world: World) -> None:
    [settings] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationServiceSettingData", CTX)
    assert settings["HttpPort"] == 80 and settings["HttpsPort"] == 443
    assert settings["MonitoringInterval"] == 43200
    assert str(settings["MonitoringStartTime"]) == "00000000090000.000000:000"
    [provider] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationProvider", CTX)
    assert provider["Name"] == "22391CDC-272C-4DDF-BA88-9BEFB1A0975C"
    [entry] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationAuthorizationSettingData", CTX)
    assert entry["AllowedPrimaryHostSystem"] == "*.example.com" and entry["TrustGroup"] == "DEFAULT"


def test_recovery_points_are_replica_snapshots(world: World) -> None:
    # The VM providers add each VM's live settings to this class; the recovery points are the Replica ones.
    vssds = world.om.enumerate_instances(VIRT, "Msvm_VirtualSystemSettingData", CTX)
    [point] = [v for v in vssds if ":Snapshot:Replica:" in str(v["VirtualSystemType"])]
    assert point["VirtualSystemType"] == "Microsoft:Hyper-V:Snapshot:Replica:Standard"
    assert point["InstanceID"] == f"Microsoft:{VM_ID}-RP1" and point["Parent"] == VM_ID


def test_associators_of_a_vm(world: World) -> None:
    related = [r for r in world.om.associators(vm_path(), CTX) if r.classname.startswith("Msvm_Replication")
               or ":Snapshot:Replica:" in str(r.get("VirtualSystemType"))]
    assert names(related) == ["Msvm_ReplicationRelationship", "Msvm_ReplicationRelationship",
                              "Msvm_ReplicationSettingData", "Msvm_ReplicationSettingData",
                              "Msvm_VirtualSystemSettingData"]
    only = world.om.associators(vm_path(), CTX, assoc_class="Msvm_SystemReplicationRelationship")
    assert names(only) == ["Msvm_ReplicationRelationship"] * 2
    settings = world.om.associators(vm_path(), CTX, result_class="CIM_SettingData")
    assert set(names(settings)) >= {"Msvm_ReplicationSettingData", "Msvm_VirtualSystemSettingData"}
    settings = [s for s in settings if s.classname == "Msvm_ReplicationSettingData"]
    assert world.om.associators(vm_path(), CTX, role="Dependent") == []
    back = world.om.associators(settings[0].path, CTX, result_role="ManagedElement")
    assert [str(b["Name"]) for b in back] == [VM_ID]
    assert _status(lambda: world.om.associators(vm_path(), CTX, assoc_class="Msvm_Nothing")) == 4
    assert _status(lambda: world.om.associators(vm_path("NOPE"), CTX)) == 6


def test_references_of_the_service(world: World) -> None:
    refs = world.om.references(service_path(), CTX)
    assert names(refs) == ["Msvm_ElementSettingData", "Msvm_ElementSettingData"]
    targets = sorted(str(r["SettingData"].classname) for r in refs)
    assert targets == ["Msvm_ReplicationAuthorizationSettingData", "Msvm_ReplicationServiceSettingData"]
    assert world.om.references(service_path(), CTX, role="SettingData") == []


def test_collections_in_both_namespaces(world: World) -> None:
    put_collection(world, mode=ReplicationMode.PRIMARY, state=CollectionReplicationState.REPLICATING,
                   received=True)
    for ns in (VIRT, CLUSTER):
        [collection] = world.om.enumerate_instances(ns, "Msvm_VirtualSystemCollection", CTX)
        assert collection["CollectionID"] == "GROUP-1" and collection["ReplicationState"] == 3
        members = world.om.associators(collection_path(namespace=ns), CTX,
                                       assoc_class="Msvm_CollectedVirtualSystems")
        assert [str(m["Name"]) for m in members] == ["GROUP-1-VM"]
    points = world.om.associators(collection_path(), CTX, result_class="Msvm_CollectionRecoveryPoint")
    assert len(points) == 1 and points[0]["ConsistencyLevel"] == 3
    assert points[0]["VirtualMachineIds"] == ["GROUP-1-VM"]
    assert world.om.enumerate_instances(CLUSTER, "Msvm_CollectionReplicationService", CTX)
    assert _status(lambda: world.om.enumerate_instances(VIRT, "Msvm_CollectionReplicationService", CTX)) == 5


def test_cluster_namespace_has_no_replication_service(world: World) -> None:
    assert _status(lambda: world.om.enumerate_instances(CLUSTER, "Msvm_ReplicationService", CTX)) == 5
    assert world.om.enumerate_instances(CLUSTER, "Msvm_ReplicationRelationship", CTX)


def test_redundancy_sets_and_members(world: World) -> None:
    from standby.domain.entities import RedundancySet
    from standby.domain.enums import RedundancyStatus, TypeOfSet

    world.db.redundancy_sets.insert(RedundancySet("SET1", "web pair", TypeOfSet.SPARING,
                                                  RedundancyStatus.FULLY_REDUNDANT, (VM_ID,), VM_ID))
    [rs] = world.om.enumerate_instances(CLUSTER, "Msvm_RedundancySet", CTX)
    assert rs["TypeOfSet"] == [4] and rs["RedundancyStatus"] == 2
    sets = world.om.associators(vm_path(namespace=CLUSTER), CTX, result_class="Msvm_RedundancySet")
    assert [str(s["ElementName"]) for s in sets] == ["web pair"]


def test_test_vm_dependency(world: World) -> None:
    put_vm(world, mode=ReplicationMode.TEST_REPLICA, vm_id="TEST-VM", name="web01 - Test")
    tests = world.om.associators(vm_path(), CTX, assoc_class="Msvm_ReplicaSystemDependency")
    assert [str(t["Name"]) for t in tests] == ["TEST-VM"]


def test_interop_namespace_has_the_core_classes(world: World) -> None:
    assert world.om.get_class(INTEROP_NAMESPACE, "CIM_ManagedElement").classname == "CIM_ManagedElement"


def test_relationship_rows_drive_the_vm_view(world: World) -> None:
    world.db.relationships.delete(VM_ID, 1)
    world.db.relationships.delete(VM_ID, 0)
    vm = world.om.get_instance(vm_path(), CTX)
    assert vm["ReplicationState"] == 0 and vm["LastReplicationTime"] is None
    assert isinstance(Relationship, type)
