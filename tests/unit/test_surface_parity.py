"""CIM and REST answer alike: for every per-VM and collection method and every mode × state of the
precondition table, the CIM call (through the object manager, pywbem values) and the REST call (through the
daemon's FastAPI app) on the same world give the same return code and leave the same effect — the same
VMs, relationships, recovery points, failover settings and entries, and a started job of the same type on
the same element.

REST answers are read back as return codes: 202 with a job is 4096, 2xx without one is 0, an error is the
``code`` of its JSON body.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from pywbem import Uint16

from standby.api.app import create_app
from standby.domain.enums import CollectionReplicationState, ReplicationMode, ReplicationState
from tests.unit.test_cim_support import (
    CLUSTER,
    VM_ID,
    World,
    collection_path,
    embedded,
    entry_xml,
    make_world,
    put_collection,
    put_vm,
    relationship_xml,
    service_path,
    settings_xml,
    vm_path,
)

IMPORT_FOLDER = tempfile.mkdtemp(prefix="standby-parity-import-")
VM = f"/api/v1/vms/{VM_ID}"
REPLICA = {"replica": "replica.example.com", "port": 443, "interval": 300}


@dataclass(frozen=True)
class Operation:
    """One method in both forms: the CIM call and the REST request."""

    name: str
    cim: Callable[[], tuple[str, dict[str, object]]]  # (method, parameters)
    rest: tuple[str, str, object]  # (HTTP method, path, JSON body)
    on_vm: bool = False  # an Msvm_ComputerSystem method


def _service(method: str, **params: object) -> Callable[[], tuple[str, dict[str, object]]]:
    return lambda: (method, params)


def _network() -> str:
    return embedded("Msvm_FailoverNetworkAdapterSettingData", DHCPEnabled=False, IPAddresses=["192.0.2.10"],
                    Subnets=["24"], ProtocolIFType=Uint16(4096))


VM_OPERATIONS = [
    Operation("CreateReplicationRelationship",
              lambda: ("CreateReplicationRelationship", {"ReplicationSettingData": settings_xml()}),
              ("post", f"{VM}/replication", REPLICA)),
    Operation("StartReplication", _service("StartReplication", InitialReplicationType="1"),
              ("post", f"{VM}/replication/start", {"type": "network"})),
    Operation("ImportInitialReplica",
              _service("ImportInitialReplica", InitialReplicationImportLocation=IMPORT_FOLDER),
              ("post", f"{VM}/replication/import", {"location": IMPORT_FOLDER})),
    Operation("InitiateFailover", _service("InitiateFailover"), ("post", f"{VM}/failover", {})),
    Operation("TestReplicaSystem", _service("TestReplicaSystem"), ("post", f"{VM}/failover", {"test": True})),
    Operation("RevertFailover", _service("RevertFailover"), ("post", f"{VM}/failover/revert", None)),
    Operation("CommitFailover", _service("CommitFailover"), ("post", f"{VM}/failover/complete", None)),
    Operation("ReverseReplicationRelationship",
              lambda: ("ReverseReplicationRelationship", {"ReplicationSettingData": settings_xml()}),
              ("post", f"{VM}/replication/reverse", REPLICA)),
    Operation("ChangeReplicationModeToPrimary",
              lambda: ("ChangeReplicationModeToPrimary", {"ReplicationRelationship": relationship_xml(1)}),
              ("post", f"{VM}/replication/continue", None)),
    Operation("RemoveReplicationRelationship", _service("RemoveReplicationRelationship"),
              ("delete", f"{VM}/replication", None)),
    Operation("RemoveReplicationRelationshipEx",
              lambda: ("RemoveReplicationRelationshipEx", {"ReplicationRelationship": relationship_xml(1)}),
              ("delete", f"{VM}/replication?relationship=extended", None)),
    Operation("ModifyReplicationSettings",
              lambda: ("ModifyReplicationSettings", {"ReplicationSettingData": settings_xml()}),
              ("put", f"{VM}/replication", REPLICA)),
    Operation("Resynchronize", _service("Resynchronize"), ("post", f"{VM}/replication/resync", {})),
    Operation("SetFailoverNetworkAdapterSettings",
              lambda: ("SetFailoverNetworkAdapterSettings", {"NetworkSettings": [_network()]}),
              ("put", f"{VM}/failover/network", [{"protocol": 4096, "addresses": ["192.0.2.10/24"]}])),
    Operation("GetReplicationStatistics", _service("GetReplicationStatistics"),
              ("get", f"{VM}/replication/statistics", None)),
    Operation("ResetReplicationStatisticsEx",
              lambda: ("ResetReplicationStatisticsEx", {"ReplicationRelationship": relationship_xml(1)}),
              ("post", f"{VM}/replication/statistics/reset?relationship=extended", None)),
    Operation("InitiateFailback", _service("InitiateFailback"), ("post", f"{VM}/replication/failback", None)),
    Operation("SetAuthorizationEntry",
              lambda: ("SetAuthorizationEntry", {"AuthorizationEntry": entry_xml()}),
              ("put", f"{VM}/replication/authorization",
               {"host": "*.example.com", "storage": "/srv/replicas", "trust_group": "DEFAULT"})),
    *(Operation(f"RequestReplicationStateChange({state})",
                _service("RequestReplicationStateChange", RequestedState=str(state)),
                ("post", f"{VM}/replication/state", {"requested": state}), on_vm=True)
      for state in (1, 2, 3, 4, 7, 9)),
]

GROUP = "/api/v1/groups/GROUP-1"
GROUP_SETTINGS = {"element_name": "group", "replica_host": "replica.example.com", "port": 8443,
                  "interval": 300}


def _collection_settings() -> str:
    return embedded("Msvm_CollectionReplicationSettingData", ElementName="group",
                    RecoveryConnectionPoint="replica.example.com", RecoveryServerPortNumber=Uint16(8443),
                    ReplicationInterval=Uint16(300))


def _collection_params() -> dict[str, object]:
    return {"CollectionReplicationSettingData": _collection_settings()}


def _group(method: str, **params: object) -> Callable[[], tuple[str, dict[str, object]]]:
    return lambda: (method, params)


COLLECTION_OPERATIONS = [
    Operation("CreateReplicationRelationship",
              lambda: ("CreateReplicationRelationship", _collection_params()),
              ("post", f"{GROUP}/replication", GROUP_SETTINGS)),
    Operation("ModifyReplicationSettings",
              lambda: ("ModifyReplicationSettings", _collection_params()),
              ("put", f"{GROUP}/replication", GROUP_SETTINGS)),
    Operation("StartReplication", _group("StartReplication", InitialReplicationType="1"),
              ("post", f"{GROUP}/start", {"type": 1})),
    Operation("SuspendReplication", _group("SuspendReplication"), ("post", f"{GROUP}/suspend", None)),
    Operation("ResumeReplication", _group("ResumeReplication"), ("post", f"{GROUP}/resume", None)),
    Operation("CancelInitialReplication", _group("CancelInitialReplication"),
              ("post", f"{GROUP}/cancel-initial", None)),
    Operation("CancelResynchronize", _group("CancelResynchronize"), ("post", f"{GROUP}/cancel-resync", None)),
    Operation("Resynchronize", _group("Resynchronize"), ("post", f"{GROUP}/resync", None)),
    Operation("RemoveReplicationRelationship", _group("RemoveReplicationRelationship"),
              ("post", f"{GROUP}/remove", None)),
    Operation("CancelUpdateDiskSet", _group("CancelUpdateDiskSet"),
              ("post", f"{GROUP}/cancel-update-disk-set", None)),
    Operation("InitiateFailover", _group("InitiateFailover"), ("post", f"{GROUP}/failover", None)),
    Operation("RevertFailover", _group("RevertFailover"), ("post", f"{GROUP}/revert", None)),
    Operation("CommitFailover", _group("CommitFailover"), ("post", f"{GROUP}/commit", None)),
    Operation("TestReplicaCollection", _group("TestReplicaCollection"), ("post", f"{GROUP}/test", None)),
    Operation("RevertTestReplicaCollection", _group("RevertTestReplicaCollection"),
              ("post", f"{GROUP}/test-stop", None)),
    Operation("InitiatePlannedFailover", _group("InitiatePlannedFailover"),
              ("post", f"{GROUP}/planned-failover", None)),
    Operation("RevertPlannedFailover", _group("RevertPlannedFailover"),
              ("post", f"{GROUP}/revert-planned-failover", None)),
    Operation("PrepareForReverseReplication", _group("PrepareForReverseReplication"),
              ("post", f"{GROUP}/prepare-reverse", None)),
    Operation("ReverseReplicationRelationship",
              lambda: ("ReverseReplicationRelationship", _collection_params()),
              ("post", f"{GROUP}/replication/reverse", GROUP_SETTINGS)),
    Operation("ResetReplicationStatistics", _group("ResetReplicationStatistics"),
              ("post", f"{GROUP}/reset-statistics", None)),
]

_STATES: list[ReplicationState | None] = [None, *ReplicationState]


@dataclass(frozen=True)
class Case:
    """One operation in one mode and state."""

    operation: Operation
    mode: ReplicationMode
    state: ReplicationState | CollectionReplicationState | None
    extended: bool = False

    @property
    def id(self) -> str:
        """A readable pytest id."""
        state = "none" if self.state is None else str(int(self.state))
        return f"{self.operation.name}-m{int(self.mode)}-s{state}{'-ext' if self.extended else ''}"


def _vm_cases() -> Iterator[Case]:
    for operation in VM_OPERATIONS:
        for mode in ReplicationMode:
            for state in _STATES:
                yield Case(operation, mode, state)
                if mode == ReplicationMode.REPLICA and state is not None:
                    yield Case(operation, mode, state, extended=True)


def _collection_cases() -> Iterator[Case]:
    for operation in COLLECTION_OPERATIONS:
        for mode in ReplicationMode:
            for state in CollectionReplicationState:
                yield Case(operation, mode, state)


VM_CASES = list(_vm_cases())
COLLECTION_CASES = list(_collection_cases())


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[World, TestClient]]:
    world = make_world()
    with TestClient(create_app(world.services), raise_server_exceptions=True) as client:
        yield world, client
    world.services.close()


def effect(world: World) -> tuple[object, ...]:
    """What a call left, without the identities and times that differ between two runs."""
    db = world.db
    names = {vm.vm_id: vm.name for vm in db.vms.list()}
    return (
        sorted((vm.name, int(vm.replication_mode), int(vm.enabled_state), len(vm.disks))
               for vm in db.vms.list()),
        sorted((names.get(r.vm_id, r.vm_id), int(r.index), int(r.state), int(r.health), r.intent or "",
                r.settings) for r in db.relationships.list()),
        sorted((p.vm_id, p.sequence) for p in db.recovery_points.list()),
        sorted((int(j.job_type), names.get(j.element_id.split(":")[0], j.element_id))
               for j in db.jobs.list()),
        sorted((s.nic_id, s.ip_addresses, s.subnets, s.dhcp_enabled) for s in db.failover_network.list()),
        sorted((e.allowed_primary_host, e.storage_location, e.trust_group) for e in db.auth_entries.list()),
        sorted((c.name, int(c.replication_mode), int(c.replication_state)) for c in db.collections.list()),
    )


def _rest_code(response: object) -> int:
    status = response.status_code  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    if status == 202:
        assert "job_id" in body or "id" in body, body
        return 4096
    if 200 <= status < 300:
        return 0
    assert isinstance(body, dict) and "code" in body, (status, body)
    return int(body["code"])


def _reset_vm(world: World, case: Case) -> None:
    world.reset()
    for entry in world.db.failover_network.list():
        world.db.failover_network.delete(entry.vm_id, entry.nic_id)
    assert not isinstance(case.state, CollectionReplicationState)
    put_vm(world, mode=case.mode, state=case.state, received=True, extended=case.extended)


def _rest(client: TestClient, operation: Operation) -> int:
    method, path, body = operation.rest
    response = client.request(method.upper(), path, json=body) if body is not None else \
        client.request(method.upper(), path)
    return _rest_code(response)


@pytest.mark.parametrize("case", VM_CASES, ids=[c.id for c in VM_CASES])
def test_vm_methods_answer_alike(site: tuple[World, TestClient], case: Case) -> None:
    world, client = site
    _reset_vm(world, case)
    method, params = case.operation.cim()
    if case.operation.on_vm:
        cim_code, _ = world.invoke(vm_path(), method, **params)
    else:
        cim_code, _ = world.invoke(service_path(), method, ComputerSystem=vm_path(), **params)
    cim_effect = effect(world)
    _reset_vm(world, case)
    rest_code = _rest(client, case.operation)
    assert rest_code == cim_code
    assert effect(world) == cim_effect


@pytest.mark.parametrize("case", COLLECTION_CASES, ids=[c.id for c in COLLECTION_CASES])
def test_collection_methods_answer_alike(site: tuple[World, TestClient], case: Case) -> None:
    world, client = site
    target = service_path("Msvm_CollectionReplicationService", "CollectionReplicationService", CLUSTER)
    assert isinstance(case.state, CollectionReplicationState)
    world.reset()
    put_collection(world, mode=case.mode, state=case.state, received=True)
    method, params = case.operation.cim()
    cim_code, _ = world.invoke(target, method, Collection=collection_path(), **params)
    cim_effect = effect(world)
    world.reset()
    put_collection(world, mode=case.mode, state=case.state, received=True)
    rest_code = _rest(client, case.operation)
    assert rest_code == cim_code
    assert effect(world) == cim_effect


def test_parity_covers_every_method_and_both_outcomes(site: tuple[World, TestClient]) -> None:
    world, client = site
    codes: set[int] = set()
    for case in VM_CASES[::7]:
        _reset_vm(world, case)
        codes.add(_rest(client, case.operation))
    assert {4096, 0, 32775} <= codes
    assert len({op.name for op in VM_OPERATIONS}) == len(VM_OPERATIONS) == 24
    assert len(COLLECTION_OPERATIONS) == 20
