"""The operations that work today, end to end through CIM: their effect on the store and their out-values."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pywbem import CIMInstanceName, Uint16, Uint32

from standby.cim.embedded import serialize
from standby.domain.entities import AuthorizationEntry, Relationship
from standby.domain.enums import (
    AllowedAuthenticationType,
    CollectionReplicationState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.engine.replication import ReplicationUseCases
from tests.unit.test_cim_support import (
    CLUSTER,
    CTX,
    VIRT,
    VM_ID,
    World,
    clock,
    collection_path,
    embedded,
    entry_xml,
    make_world,
    parse_embedded,
    put_collection,
    put_running_job,
    put_vm,
    relationship_xml,
    service_path,
    vm_path,
)


@pytest.fixture
def world() -> World:
    return make_world()


# -- service settings --------------------------------------------------------------------------------------


def test_modify_service_settings_round_trip(world: World) -> None:
    [current] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationServiceSettingData", CTX)
    current["RecoveryServerEnabled"] = True
    current["AllowedAuthenticationType"] = Uint16(2)
    current["HttpsPort"] = Uint16(8443)
    current["MonitoringInterval"] = Uint32(3600)
    code, out = world.invoke(service_path(), "ModifyServiceSettings", SettingData=serialize(current))
    assert (code, out) == (0, {"Job": None})
    stored = world.db.service_settings.get()
    assert stored.recovery_server_enabled and stored.https_port == 8443
    assert stored.allowed_authentication_type == AllowedAuthenticationType.CERTIFICATE
    assert stored.monitoring_interval_seconds == 3600 and stored.http_port == 80
    [after] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationServiceSettingData", CTX)
    assert after["HttpsPort"] == 8443


@pytest.mark.parametrize("props", [
    {"HttpPort": Uint16(0)}, {"MonitoringInterval": Uint32(60)}, {"AllowedAuthenticationType": Uint16(7)},
])
def test_bad_service_settings_are_refused(world: World, props: dict[str, object]) -> None:
    code, _ = world.invoke(service_path(), "ModifyServiceSettings",
                           SettingData=embedded("Msvm_ReplicationServiceSettingData", **props))
    assert code == 32773
    assert world.db.service_settings.get().http_port == 80


def test_missing_setting_data_is_invalid(world: World) -> None:
    assert world.invoke(service_path(), "ModifyServiceSettings")[0] == 32773


# -- authorization entries -----------------------------------------------------------------------------------


def test_authorization_entry_life_cycle(world: World) -> None:
    svc = service_path()
    assert world.invoke(svc, "AddAuthorizationEntry", AuthorizationEntry=entry_xml())[0] == 0
    assert world.db.auth_entries.get("*.example.com").storage_location == "/srv/replicas"
    assert world.invoke(svc, "AddAuthorizationEntry", AuthorizationEntry=entry_xml())[0] == 32773  # twice
    moved = entry_xml(location="/srv/elsewhere")
    assert world.invoke(svc, "ModifyAuthorizationEntry", AuthorizationEntry=moved)[0] == 0
    assert world.db.auth_entries.get("*.example.com").storage_location == "/srv/elsewhere"
    unknown = entry_xml(host="other.example.com")
    assert world.invoke(svc, "ModifyAuthorizationEntry", AuthorizationEntry=unknown)[0] == 32773
    assert world.invoke(svc, "RemoveAuthorizationEntry", AllowedPrimaryHostSystem="*.example.com")[0] == 0
    assert world.db.auth_entries.list() == []
    assert world.invoke(svc, "RemoveAuthorizationEntry", AllowedPrimaryHostSystem="*.example.com")[0] == 32773
    assert world.invoke(svc, "RemoveAuthorizationEntry", AllowedPrimaryHostSystem="")[0] == 32773


@pytest.mark.parametrize("xml", [
    embedded("Msvm_ReplicationAuthorizationSettingData", TrustGroup="G", ReplicaStorageLocation="/x"),
    embedded("Msvm_ReplicationAuthorizationSettingData", AllowedPrimaryHostSystem="h",
             ReplicaStorageLocation=""),
])
def test_incomplete_entries_are_refused(world: World, xml: str) -> None:
    assert world.invoke(service_path(), "AddAuthorizationEntry", AuthorizationEntry=xml)[0] == 32773
    assert world.db.auth_entries.list() == []


def test_set_authorization_entry_binds_a_replica(world: World) -> None:
    waiting = ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
    put_vm(world, mode=ReplicationMode.REPLICA, state=waiting)
    code, _ = world.invoke(service_path(), "SetAuthorizationEntry", ComputerSystem=vm_path(),
                           AuthorizationEntry=entry_xml(host="primary.example.com"))
    assert code == 0
    assert world.db.auth_entries.get("primary.example.com").trust_group == "DEFAULT"
    [event] = world.db.events.list(element_id=VM_ID)
    assert event.message_id == "AuthorizationEntryBound"


def test_set_authorization_entry_on_a_primary_is_refused(world: World) -> None:
    put_vm(world, mode=ReplicationMode.PRIMARY, state=ReplicationState.REPLICATING)
    code, _ = world.invoke(service_path(), "SetAuthorizationEntry", ComputerSystem=vm_path(),
                           AuthorizationEntry=entry_xml())
    assert code == 32775
    assert world.db.auth_entries.list() == []


def test_entries_are_related_to_the_service(world: World) -> None:
    world.db.auth_entries.insert(AuthorizationEntry("a.example.com", "G", "/a"))
    related = world.om.associators(service_path(), CTX,
                                   result_class="Msvm_ReplicationAuthorizationSettingData")
    assert [r["AllowedPrimaryHostSystem"] for r in related] == ["a.example.com"]


# -- certificates and service state --------------------------------------------------------------------------


def _certificate_pem(tmp_path: Path) -> tuple[Path, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "primary-host.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "host.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def test_system_certificates_come_from_the_host_certificate(world: World, tmp_path: Path) -> None:
    path, der = _certificate_pem(tmp_path)
    world.runtime.engine.replication.guards = ReplicationUseCases(world.db, clock, certificate_path=path)
    code, out = world.invoke(service_path(), "GetSystemCertificates")
    assert code == 0 and out["EncodedCertificates"] == [der]


def test_no_certificate_means_an_empty_list(world: World, tmp_path: Path) -> None:
    world.runtime.engine.replication.guards = ReplicationUseCases(world.db, clock,
                                                                  certificate_path=tmp_path / "none.pem")
    assert world.invoke(service_path(), "GetSystemCertificates") == (0, {"EncodedCertificates": []})
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    world.runtime.engine.replication.guards = ReplicationUseCases(world.db, clock, certificate_path=broken)
    assert world.invoke(service_path(), "GetSystemCertificates")[0] == 32773


@pytest.mark.parametrize(("method", "params", "expected"), [
    ("RequestStateChange", {"RequestedState": "2"}, 0),
    ("RequestStateChange", {"RequestedState": "3"}, 1),
    ("RequestStateChange", {"RequestedState": "bad"}, 1),
    ("StartService", {}, 0),
    ("StopService", {}, 1),
])
def test_service_is_always_enabled(
    world: World, method: str, params: dict[str, object], expected: int
) -> None:
    assert world.invoke(service_path(), method, **params)[0] == expected


# -- statistics ---------------------------------------------------------------------------------------------


def test_statistics_of_a_relationship(world: World) -> None:
    put_vm(world, mode=ReplicationMode.PRIMARY, state=ReplicationState.REPLICATING, received=True)
    code, out = world.invoke(service_path(), "GetReplicationStatisticsEx", ComputerSystem=vm_path(),
                             ReplicationRelationship=relationship_xml(0))
    assert code == 0 and out["Job"] is None
    [text] = out["ReplicationStatistics"]  # type: ignore[misc]
    stats = parse_embedded(text)
    assert stats.classname == "Msvm_ReplicationStatistics"
    # The default window starts 09:00 and lasts 12 h; the tests run at 12:30.
    assert stats["StartStatisticTime"].datetime == datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    assert stats["EndStatisticTime"].datetime == datetime(2024, 5, 6, 21, 0, tzinfo=UTC)
    assert stats["ReplicationSuccessCount"] == 0 and out["ReplicationHealthIssues"] == []


def test_critical_health_is_reported_as_an_issue(world: World) -> None:
    put_vm(world, mode=ReplicationMode.PRIMARY)
    world.db.relationships.insert(Relationship(VM_ID, RelationshipIndex.PRIMARY, ReplicationState.CRITICAL,
                                               ReplicationHealth.CRITICAL))
    code, out = world.invoke(service_path(), "GetReplicationStatistics", ComputerSystem=vm_path())
    assert code == 0
    [issue] = [parse_embedded(t) for t in out["ReplicationHealthIssues"]]  # type: ignore[union-attr]
    assert issue["MessageID"] == "ReplicationHealthCritical" and issue["PerceivedSeverity"] == 6
    assert parse_embedded(out["ReplicationStatistics"][0])["ReplicationHealth"] == 3  # type: ignore[index]


def test_statistics_of_a_missing_extended_relationship_are_refused(world: World) -> None:
    put_vm(world, mode=ReplicationMode.REPLICA, state=ReplicationState.REPLICATING)
    code, _ = world.invoke(service_path(), "GetReplicationStatisticsEx", ComputerSystem=vm_path(),
                           ReplicationRelationship=relationship_xml(1))
    assert code == 32775


# -- collection management --------------------------------------------------------------------------------


def _mgmt(namespace: str = CLUSTER) -> CIMInstanceName:
    return service_path("Msvm_CollectionManagementService", "CollectionManagementService", namespace)


@pytest.mark.parametrize("namespace", [VIRT, CLUSTER])
def test_collection_life_cycle(world: World, namespace: str) -> None:
    put_vm(world)
    code, out = world.invoke(_mgmt(namespace), "DefineCollection", Name="web tier", Id="GROUP-7", Type="0")
    assert code == 0
    defined = out["DefinedCollection"]
    assert isinstance(defined, CIMInstanceName) and defined.keybindings["CollectionID"] == "GROUP-7"
    assert world.om.get_instance(defined, CTX)["ElementName"] == "web tier"
    vm = vm_path(namespace=namespace)
    assert world.invoke(_mgmt(namespace), "AddMember", Member=vm, Collection=defined)[0] == 0
    assert world.invoke(_mgmt(namespace), "AddMember", Member=vm, Collection=defined)[0] == 0  # no duplicate
    assert world.db.collections.get("GROUP-7").member_vm_ids == (VM_ID,)
    assert world.invoke(_mgmt(namespace), "RenameCollection", Collection=defined, NewName="web")[0] == 0
    assert world.db.collections.get("GROUP-7").name == "web"
    assert world.invoke(_mgmt(namespace), "RemoveMember", Member=vm, Collection=defined)[0] == 0
    assert world.invoke(_mgmt(namespace), "RemoveMember", Member=vm, Collection=defined)[0] == 32773
    assert world.invoke(_mgmt(namespace), "RemoveMemberById", Member=vm, CollectionId="GROUP-7")[0] == 0
    assert world.invoke(_mgmt(namespace), "DestroyCollection", Collection=defined)[0] == 0
    assert world.db.collections.find("GROUP-7") is None
    assert world.db.vms.find(VM_ID) is not None  # members stay


def test_define_collection_makes_up_an_id(world: World) -> None:
    code, out = world.invoke(_mgmt(), "DefineCollection", Name="g")
    assert code == 0
    collection_id = str(out["DefinedCollection"].keybindings["CollectionID"])  # type: ignore[union-attr]
    assert len(collection_id) == 36 and collection_id == collection_id.upper()


@pytest.mark.parametrize(("params", "expected"), [
    ({"Name": "", "Id": "X"}, 32773),
    ({"Name": "x" * 257}, 32773),
    ({"Name": "g", "Type": "1"}, 32770),  # collections of collections
    ({"Name": "g", "Type": "2"}, 32773),  # outside the ValueMap
    ({"Name": "g", "Id": "GROUP-1"}, 32773),  # taken
])
def test_bad_collection_definitions(world: World, params: dict[str, object], expected: int) -> None:
    put_collection(world)
    assert world.invoke(_mgmt(), "DefineCollection", **params)[0] == expected


def test_member_must_be_a_vm(world: World) -> None:
    put_collection(world)
    job = put_running_job(world, "ELSEWHERE")
    job_ref = CIMInstanceName("Msvm_ConcreteJob", {"InstanceID": job.job_id}, namespace=CLUSTER)
    assert world.invoke(_mgmt(), "AddMember", Member=job_ref, Collection=collection_path())[0] == 32776
    host = vm_path("primary-host", CLUSTER)
    assert world.invoke(_mgmt(), "AddMember", Member=host, Collection=collection_path())[0] == 32773
    ghost = vm_path("NO-SUCH-VM", CLUSTER)
    assert world.invoke(_mgmt(), "AddMember", Member=ghost, Collection=collection_path())[0] == 32773


def test_replicating_collection_cannot_be_destroyed(world: World) -> None:
    put_collection(world, mode=ReplicationMode.PRIMARY, state=CollectionReplicationState.REPLICATING)
    assert world.invoke(_mgmt(), "DestroyCollection", Collection=collection_path())[0] == 32775
    assert world.db.collections.find("GROUP-1") is not None


def test_collection_with_a_running_job_is_in_use(world: World) -> None:
    put_collection(world)
    put_running_job(world, "GROUP-1")
    assert world.invoke(_mgmt(), "RenameCollection", Collection=collection_path(), NewName="n")[0] == 32774
    assert world.db.collections.get("GROUP-1").name == "group"
