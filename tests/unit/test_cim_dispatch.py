"""Method dispatch: typing untyped (wbemcli) values, REF and embedded-instance checks, code tables."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from pywbem import CIMDateTime, CIMError, CIMInstanceName, Uint16

from standby.cim.backend import RequestContext
from standby.cim.dispatch import CodeTable, code_table, failure_code
from standby.cim.providers.registry import DuplicateHandlerError, MethodCall, MethodResult, ProviderRegistry
from standby.cim.values import typed_value, value_in_value_map
from standby.domain.entities import RecoveryPoint
from standby.domain.enums import ReplicationMode, ReplicationState, ReturnCode, VirtualSystemType
from standby.domain.errors import InvalidParameter
from tests.unit.test_cim_support import (
    CLUSTER,
    NOW,
    VIRT,
    VM_ID,
    World,
    collection_path,
    embedded,
    entry_xml,
    make_world,
    put_running_job,
    put_vm,
    relationship_xml,
    service_path,
    settings_xml,
    vm_path,
)


@pytest.fixture
def world() -> World:
    return make_world()


def _replica(world: World) -> None:
    put_vm(world, mode=ReplicationMode.REPLICA, state=ReplicationState.REPLICATING, received=True)


# -- value typing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cim_type", "raw", "expected"), [
    ("uint16", "3", 3), ("uint16", " 65535 ", 65535), ("uint16", "0x10", 16), ("uint32", 7, 7),
    ("sint16", "-5", -5), ("uint64", "18446744073709551615", 18446744073709551615),
    ("boolean", "TRUE", True), ("boolean", "false", False), ("boolean", "1", True), ("boolean", True, True),
    ("string", "abc", "abc"), ("string", 5, "5"), ("real64", "1.5", 1.5), ("char16", "x", "x"),
])
def test_untyped_scalars_are_typed(cim_type: str, raw: object, expected: object) -> None:
    value = typed_value("P", cim_type, False, raw)
    assert value == expected
    assert type(value) is not str or cim_type in ("string", "char16")


@pytest.mark.parametrize(("cim_type", "raw"), [
    ("uint16", "65536"), ("uint16", "-1"), ("uint16", "three"), ("uint16", ""), ("uint8", "256"),
    ("uint16", True), ("uint16", 1.5), ("boolean", "maybe"), ("boolean", 2), ("datetime", "2024-01-01"),
    ("datetime", "garbage"), ("char16", "xy"), ("uint16", ["1", "2"]), ("real32", "fast"),
])
def test_bad_scalars_are_invalid_parameters(cim_type: str, raw: object) -> None:
    with pytest.raises(InvalidParameter) as caught:
        typed_value("P", cim_type, False, raw)
    assert caught.value.code == ReturnCode.INVALID_PARAMETER
    assert "P" in caught.value.message


def test_datetimes_and_intervals_parse() -> None:
    point = typed_value("T", "datetime", False, "20240506123000.000000+000")
    assert isinstance(point, CIMDateTime) and point.datetime == datetime(2024, 5, 6, 12, 30, tzinfo=UTC)
    interval = typed_value("T", "datetime", False, "00000000183000.000000:000")
    assert interval.is_interval and interval.timedelta.total_seconds() == 18.5 * 3600


def test_arrays_are_typed_elementwise() -> None:
    assert typed_value("A", "uint16", True, ["1", "2"]) == [1, 2]
    assert typed_value("A", "string", True, "one") == ["one"]  # a lone value for an array becomes one item
    with pytest.raises(InvalidParameter):
        typed_value("A", "uint16", True, ["1", "x"])


@pytest.mark.parametrize(("value", "value_map", "inside"), [
    (3, ["1", "2", "3"], True), (4, ["1", "2", "3"], False), (15, ["7..32767"], True),
    (40000, ["7..32767", "32768..65535"], True), (5, ["0", ".."], False), (0x8001, ["0x8000.."], True),
])
def test_value_map_ranges(value: int, value_map: list[str], inside: bool) -> None:
    assert value_in_value_map(value, value_map) is inside


# -- parameters through the object manager -----------------------------------------------------------------


def test_untyped_requested_state_is_typed_from_the_declaration(world: World) -> None:
    seen: list[object] = []

    def spy(call: MethodCall) -> MethodResult:
        seen.append(call.param("RequestedState"))
        seen.append(call.param("TimeoutPeriod"))
        return MethodResult(0)

    world.om.registry._methods.clear()  # only the spy answers in this test
    world.om.registry.add_method("Msvm_ComputerSystem", "RequestReplicationStateChange", spy)
    put_vm(world)
    code, _ = world.invoke(vm_path(), "RequestReplicationStateChange", RequestedState="7",
                           TimeoutPeriod="00000000000010.000000:000")
    assert code == 0
    assert seen[0] == 7 and isinstance(seen[0], Uint16)
    assert isinstance(seen[1], CIMDateTime) and seen[1].timedelta.total_seconds() == 10


def test_string_reference_in_wbem_uri_form_is_accepted(world: World) -> None:
    _replica(world)
    uri = ('/root/virtualization/v2:Msvm_ComputerSystem.'
           f'CreationClassName="Msvm_ComputerSystem",Name="{VM_ID}"')
    code, _ = world.invoke(service_path(), "GetReplicationStatistics", ComputerSystem=uri)
    assert code == 0


def test_reference_matching_ignores_case_and_host(world: World) -> None:
    _replica(world)
    ref = CIMInstanceName("CIM_ComputerSystem", {"creationclassname": "Msvm_ComputerSystem",
                                                "name": VM_ID.lower()}, namespace=VIRT, host="elsewhere")
    code, _ = world.invoke(service_path(), "GetReplicationStatistics", ComputerSystem=ref)
    assert code == 0


def test_dangling_reference_is_32773(world: World) -> None:
    _replica(world)
    code, out = world.invoke(service_path(), "InitiateFailover", ComputerSystem=vm_path("NO-SUCH-VM"))
    assert code == 32773
    assert out == {"Job": None}


def test_reference_to_an_unknown_class_is_32773(world: World) -> None:
    _replica(world)
    ref = CIMInstanceName("Msvm_NoSuchClass", {"Name": VM_ID}, namespace=VIRT)
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem=ref)
    assert code == 32773


def test_job_path_for_computer_system_is_32776(world: World) -> None:
    _replica(world)
    job = put_running_job(world, "SOMETHING-ELSE")
    ref = CIMInstanceName("Msvm_ConcreteJob", {"InstanceID": job.job_id}, namespace=VIRT)
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem=ref)
    assert code == 32776


def test_not_a_reference_at_all_is_32773(world: World) -> None:
    _replica(world)
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem="just some words")
    assert code == 32773


def test_host_as_computer_system_is_32773(world: World) -> None:
    _replica(world)
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem=vm_path("primary-host"))
    assert code == 32773


def _vssd_ref(point_id: str) -> CIMInstanceName:
    return CIMInstanceName("Msvm_VirtualSystemSettingData", {"InstanceID": f"Microsoft:{point_id}"},
                           namespace=VIRT)


def test_non_replica_snapshot_is_32776(world: World) -> None:
    _replica(world)
    checkpoint = RecoveryPoint("CHECKPOINT", VM_ID, 2, NOW, VirtualSystemType.SNAPSHOT_REALIZED)
    world.db.recovery_points.insert(checkpoint)
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem=vm_path(),
                           SnapshotSettingData=_vssd_ref("CHECKPOINT"))
    assert code == 32776


def test_recovery_point_of_another_vm_is_32773(world: World) -> None:
    _replica(world)
    put_vm(world, mode=ReplicationMode.REPLICA, state=ReplicationState.REPLICATING, received=True,
           vm_id="OTHER-VM", name="other")
    code, _ = world.invoke(service_path(), "InitiateFailover", ComputerSystem=vm_path(),
                           SnapshotSettingData=_vssd_ref("OTHER-VM-RP1"))
    assert code == 32773


def test_recovery_point_of_this_vm_passes_the_guards(world: World) -> None:
    _replica(world)
    code, out = world.invoke(service_path(), "InitiateFailover", ComputerSystem=vm_path(),
                             SnapshotSettingData=_vssd_ref(f"{VM_ID}-RP1"))
    assert code == 4096  # the guards pass and the failover job (97) is started
    assert world.db.jobs.get(str(out["Job"].keybindings["InstanceID"])).job_type == 97


def test_malformed_embedded_instance_is_32773(world: World) -> None:
    put_vm(world)
    for bad in ("<INSTANCE CLASSNAME=", "not xml", "<CLASS NAME=\"Msvm_ReplicationSettingData\"/>", ""):
        code, _ = world.invoke(service_path(), "CreateReplicationRelationship", ComputerSystem=vm_path(),
                               ReplicationSettingData=bad)
        assert code == 32773, bad


def test_embedded_instance_of_the_wrong_class_is_32776(world: World) -> None:
    put_vm(world)
    code, _ = world.invoke(service_path(), "CreateReplicationRelationship", ComputerSystem=vm_path(),
                           ReplicationSettingData=entry_xml())
    assert code == 32776
    code, _ = world.invoke(service_path(), "AddAuthorizationEntry", AuthorizationEntry=settings_xml())
    assert code == 32776


def test_embedded_instance_with_a_bad_property_value_is_32773(world: World) -> None:
    put_vm(world)
    bad_type = embedded("Msvm_ReplicationSettingData", RecoveryServerPortNumber="not a port")
    unknown = embedded("Msvm_ReplicationSettingData", NoSuchProperty="x")
    bad_enum = settings_xml(AuthenticationType=Uint16(9))
    for xml in (bad_type, unknown):
        code, _ = world.invoke(service_path(), "CreateReplicationRelationship", ComputerSystem=vm_path(),
                               ReplicationSettingData=xml)
        assert code == 32773
    code, _ = world.invoke(service_path(), "CreateReplicationRelationship", ComputerSystem=vm_path(),
                           ReplicationSettingData=bad_enum)
    assert code == 32773


def test_relationship_of_another_vm_is_32773(world: World) -> None:
    _replica(world)
    code, _ = world.invoke(service_path(), "GetReplicationStatisticsEx", ComputerSystem=vm_path(),
                           ReplicationRelationship=relationship_xml(0, vm_id="SOMEONE-ELSE"))
    assert code == 32773


def test_value_outside_the_value_map_is_32773(world: World) -> None:
    put_vm(world, mode=ReplicationMode.PRIMARY, state=ReplicationState.READY_FOR_REPLICATION)
    code, _ = world.invoke(service_path(), "StartReplication", ComputerSystem=vm_path(),
                           InitialReplicationType="4")
    assert code == 32773
    code, _ = world.invoke(service_path(), "StartReplication", ComputerSystem=vm_path(),
                           InitialReplicationType="70000")
    assert code == 32773


def test_job_running_on_the_element_is_32774(world: World) -> None:
    put_vm(world, mode=ReplicationMode.PRIMARY, state=ReplicationState.REPLICATING, received=True)
    put_running_job(world, VM_ID)
    code, _ = world.invoke(vm_path(), "RequestReplicationStateChange", RequestedState="7")
    assert code == 32774


def test_unknown_method_is_method_not_found(world: World) -> None:
    with pytest.raises(CIMError) as caught:
        world.invoke(service_path(), "FailEverything")
    assert caught.value.status_code == 17  # CIM_ERR_METHOD_NOT_FOUND


def test_unknown_parameter_is_invalid_parameter(world: World) -> None:
    with pytest.raises(CIMError) as caught:
        world.invoke(service_path(), "GetSystemCertificates", Bogus="1")
    assert caught.value.status_code == 4  # CIM_ERR_INVALID_PARAMETER


def test_unknown_target_instance_is_not_found(world: World) -> None:
    with pytest.raises(CIMError) as caught:
        world.invoke(vm_path("NO-SUCH-VM"), "RequestReplicationStateChange", RequestedState="7")
    assert caught.value.status_code == 6


def test_unknown_namespace_is_invalid_namespace(world: World) -> None:
    with pytest.raises(CIMError) as caught:
        world.invoke(service_path(namespace="root/cimv2"), "GetSystemCertificates")
    assert caught.value.status_code == 3


def test_class_level_invocation_works(world: World) -> None:
    from pywbem import CIMClassName

    rv, out = world.om.invoke_method(CIMClassName("Msvm_ReplicationService", namespace=VIRT),
                                     "GetSystemCertificates", {}, RequestContext())
    assert int(rv) == 0 and out == {"EncodedCertificates": []}


def test_unexpected_exception_is_32768_and_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    def broken(call: MethodCall) -> MethodResult:
        raise RuntimeError("boom")

    world.om.registry._methods.clear()
    world.om.registry.add_method("Msvm_ReplicationService", "GetSystemCertificates", broken)
    with caplog.at_level(logging.ERROR):
        code, out = world.invoke(service_path(), "GetSystemCertificates")
    assert code == 32768
    assert out == {"EncodedCertificates": None}
    assert "boom" in caplog.text


def test_failures_use_the_methods_own_code_table(world: World) -> None:
    # Msvm_RedundancySet.Failover: a dangling REF is "4 Parameter Error", a job REF too.
    ref = CIMInstanceName("Msvm_RedundancySet", {"InstanceID": "Microsoft:SET"}, namespace=CLUSTER)
    from standby.domain.entities import RedundancySet
    from standby.domain.enums import RedundancyStatus, TypeOfSet

    world.db.redundancy_sets.insert(RedundancySet("SET", "pair", TypeOfSet.SPARING,
                                                  RedundancyStatus.FULLY_REDUNDANT, ("A", "B"), "A"))
    pair = {"FailoverFrom": vm_path("A", CLUSTER), "FailoverTo": vm_path("B", CLUSTER)}
    code, _ = world.invoke(ref, "Failover", **pair)
    assert code == 4
    put_vm(world, vm_id="A", name="a")
    put_vm(world, vm_id="B", name="b")
    code, _ = world.invoke(ref, "Failover", **pair)
    assert code == 1  # not implemented yet: Not Supported


def test_code_tables_come_from_the_value_maps() -> None:
    from standby.cim.schema import load_schema

    schema = load_schema()
    method = schema.get_class(VIRT, "Msvm_ReplicationService").methods
    assert code_table(method["InitiateFailover"]) is CodeTable.STANDARD
    assert code_table(method["RequestStateChange"]) is CodeTable.BINARY
    assert code_table(schema.get_class(VIRT, "Msvm_ConcreteJob").methods["RequestStateChange"]) \
        is CodeTable.STATE_CHANGE
    failover = schema.get_class(CLUSTER, "Msvm_RedundancySet").methods["Failover"]
    assert code_table(failover) is CodeTable.FAILOVER
    assert failure_code(CodeTable.STATE_CHANGE, ReturnCode.INVALID_STATE) == 4097
    assert failure_code(CodeTable.STATE_CHANGE, ReturnCode.SYSTEM_IN_USE) == 6
    assert failure_code(CodeTable.STATE_CHANGE, ReturnCode.FAILED) == 4
    assert failure_code(CodeTable.FAILOVER, ReturnCode.SYSTEM_IN_USE) == 3
    assert failure_code(CodeTable.BINARY, ReturnCode.INVALID_PARAMETER) == 1


def test_duplicate_method_handlers_are_refused() -> None:
    registry = ProviderRegistry()
    registry.add_method("Msvm_X", "Go", lambda call: MethodResult(0))
    with pytest.raises(DuplicateHandlerError):
        registry.add_method("msvm_x", "go", lambda call: MethodResult(0))
    registry.add_method("Msvm_Y", "Go", lambda call: MethodResult(0), namespaces=frozenset({VIRT}))
    registry.add_method("Msvm_Y", "Go", lambda call: MethodResult(1), namespaces=frozenset({CLUSTER}))
    handler = registry.method_handler(CLUSTER, ["Msvm_Y"], "GO")
    assert handler is not None


def test_collection_reference_to_a_vm_is_32776(world: World) -> None:
    put_vm(world)
    target = service_path("Msvm_CollectionManagementService", "CollectionManagementService", CLUSTER)
    code, _ = world.invoke(target, "DestroyCollection", Collection=vm_path(namespace=CLUSTER))
    assert code == 32776
    code, _ = world.invoke(target, "DestroyCollection", Collection=collection_path("NONE"))
    assert code == 32773
