"""Failover through the CIM layer with the real object manager, the real JobManager on a real loop and real
qcow2 chains: the state sequence 3 → 12 → 5 → revert → 3 → failover to an older point → commit → 6, test VMs
with Msvm_ReplicaSystemDependency and DestroySystem, failover IP settings, and the §10 rows of these methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIMInstanceName, Uint16

from standby.domain.entities import RecoveryPoint, Relationship, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    JobState,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.engine import failover as failover_module
from standby.engine.failover import FailoverUseCases
from standby.hypervisor.fake import FakeHypervisor
from tests.integration.test_failover_support import (
    VM_ID,
    Replica,
    clock,
    images_identical,
    make_replica,
)
from tests.unit.test_cim_support import CTX, VIRT, World, embedded, make_world, service_path, vm_path


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@dataclasses.dataclass
class Site:
    world: World
    replica: Replica
    failover: FailoverUseCases
    hv: FakeHypervisor
    loop: asyncio.AbstractEventLoop
    primary_running: list[bool]

    def invoke(self, method: str, **params: Any) -> tuple[int, dict[str, Any]]:
        return self.world.invoke(service_path(), method, ComputerSystem=vm_path(VM_ID), **params)

    def wait(self, out: dict[str, Any]) -> Any:
        jobs = self.failover.jobs
        assert jobs is not None
        job_id = str(out["Job"].keybindings["InstanceID"])
        return asyncio.run_coroutine_threadsafe(jobs.wait(job_id, 30), self.loop).result(timeout=40)

    def run_ok(self, method: str, **params: Any) -> Any:
        code, out = self.invoke(method, **params)
        assert code == 4096, (method, code)
        job = self.wait(out)
        assert job.state == JobState.COMPLETED, (method, job.error_description)
        return job

    def relationship(self) -> Relationship:
        return self.world.db.relationships.get(VM_ID, 0)

    def vm(self) -> VirtualMachine:
        return self.world.db.vms.get(VM_ID)


@pytest.fixture
def site(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Site:
    world = make_world(loop=loop, world_clock=clock)
    replica = make_replica(tmp_path, world.db)
    running: list[bool] = []

    async def probe(vm: VirtualMachine, relationship: Relationship) -> bool | None:
        return running[-1] if running else None

    failover = world.services.failover
    failover.primary_probe = probe
    hv = world.services.hypervisor
    assert isinstance(hv, FakeHypervisor)
    return Site(world, replica, failover, hv, loop, running)


def point_ref(point_id: str) -> CIMInstanceName:
    return CIMInstanceName("Msvm_VirtualSystemSettingData", {"InstanceID": f"Microsoft:{point_id}"},
                           namespace=VIRT)


def test_state_sequence_failover_revert_older_point_commit(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ReplicationState] = []
    real = failover_module.overlay_disks

    def watching(vm: Any, point: Any, folder: Any) -> Any:
        seen.append(site.relationship().state)  # what every reader sees while the disks are made
        return real(vm, point, folder)

    monkeypatch.setattr(failover_module, "overlay_disks", watching)
    assert site.relationship().state == ReplicationState.REPLICATING

    job = site.run_ok("InitiateFailover", SnapshotSettingData=None)
    assert job.job_type == 97 and dict(job.result)["RecoveryPoint"] == site.replica.points[2].point_id
    assert seen == [ReplicationState.FAILOVER_IN_PROGRESS]
    assert site.relationship().state == ReplicationState.RECOVERED
    [relationship] = site.world.om.enumerate_instances(VIRT, "Msvm_ReplicationRelationship", CTX)
    assert relationship["ReplicationState"] == 5 and relationship["FailedOverReplicationType"] == 1

    job = site.run_ok("RevertFailover")
    assert job.job_type == 98 and site.relationship().state == ReplicationState.REPLICATING

    site.run_ok("InitiateFailover", SnapshotSettingData=point_ref(site.replica.points[0].point_id))
    assert images_identical(Path(site.vm().disks[0].path), site.replica.image(0))

    job = site.run_ok("CommitFailover")
    assert job.job_type == 99 and site.relationship().state == ReplicationState.COMMITTED
    points = site.world.om.enumerate_instances(VIRT, "Msvm_VirtualSystemSettingData", CTX)
    replica_points = [p for p in points if "Snapshot:Replica" in str(p["VirtualSystemType"])]
    assert [p["InstanceID"] for p in replica_points] == [f"Microsoft:{site.replica.points[0].point_id}"]
    # Committed is final: neither revert nor another failover nor a second commit.
    for method, params in (("RevertFailover", {}), ("CommitFailover", {}),
                           ("InitiateFailover", {"SnapshotSettingData": None})):
        assert site.invoke(method, **params)[0] == 32775, method


def test_a_running_primary_fails_the_job_with_32775(site: Site) -> None:
    site.primary_running.append(True)
    code, out = site.invoke("InitiateFailover", SnapshotSettingData=None)
    assert code == 4096
    job = site.wait(out)
    assert job.state == JobState.EXCEPTION and job.error_code == 32775
    assert job.error_message_id == "FailoverPrimaryRunning"
    assert site.relationship().state == ReplicationState.REPLICATING
    site.primary_running.append(False)
    site.run_ok("InitiateFailover", SnapshotSettingData=None)


@pytest.mark.parametrize(("method", "state", "on", "code"), [
    ("InitiateFailover", ReplicationState.REPLICATING, True, 32775),   # VM must be off
    ("InitiateFailover", ReplicationState.RECOVERED, False, 32775),    # already failed over
    ("InitiateFailover", ReplicationState.READY_FOR_REPLICATION, False, 32775),
    ("InitiateFailover", ReplicationState.SUSPENDED, False, 4096),     # allowed (PS resumes first)
    ("InitiateFailover", ReplicationState.RESYNCHRONIZING, False, 4096),
    ("TestReplicaSystem", ReplicationState.RECOVERED, False, 32775),
    ("TestReplicaSystem", ReplicationState.RESYNCHRONIZING, False, 32775),
    ("TestReplicaSystem", ReplicationState.SUSPENDED, True, 4096),     # a running replica may be tested
    ("RevertFailover", ReplicationState.REPLICATING, False, 32775),
    ("CommitFailover", ReplicationState.REPLICATING, False, 32775),
    ("CommitFailover", ReplicationState.FAILOVER_IN_PROGRESS, False, 32775),
])
def test_precondition_rows(site: Site, method: str, state: ReplicationState, on: bool, code: int) -> None:
    site.world.db.relationships.update(dataclasses.replace(site.relationship(), state=state))
    if on:
        site.world.db.vms.update(dataclasses.replace(site.vm(), enabled_state=EnabledState.ENABLED))
    params = {"SnapshotSettingData": None} if method in ("InitiateFailover", "TestReplicaSystem") else {}
    got, out = site.invoke(method, **params)
    assert got == code
    if got == 4096:
        assert site.wait(out).state == JobState.COMPLETED


def test_recovery_point_refs(site: Site) -> None:
    other = make_replica(Path(site.replica.folder).parent / "other", site.world.db,
                         vm_id="0B0B0B0B-3333-4C3B-9D51-000000000002", name="other")
    foreign = point_ref(other.points[0].point_id)
    assert site.invoke("InitiateFailover", SnapshotSettingData=foreign)[0] == 32773
    site.world.db.recovery_points.insert(RecoveryPoint("CHECKPOINT", VM_ID, 9, clock(),
                                                       VirtualSystemType.SNAPSHOT_REALIZED))
    assert site.invoke("InitiateFailover", SnapshotSettingData=point_ref("CHECKPOINT"))[0] == 32776
    assert site.invoke("TestReplicaSystem", SnapshotSettingData=point_ref("CHECKPOINT"))[0] == 32776


def test_a_second_call_while_the_job_runs_is_32774(site: Site) -> None:
    gate = threading.Event()

    async def slow(vm: VirtualMachine, relationship: Relationship) -> bool | None:
        await asyncio.to_thread(gate.wait, 10)
        return False

    site.failover.primary_probe = slow
    code, out = site.invoke("InitiateFailover", SnapshotSettingData=None)
    assert code == 4096
    assert site.invoke("InitiateFailover", SnapshotSettingData=None)[0] == 32774
    assert site.invoke("RevertFailover")[0] == 32774
    gate.set()
    assert site.wait(out).state == JobState.COMPLETED


def test_revert_on_a_prepared_primary_cancels_the_prepare(site: Site) -> None:
    db = site.world.db
    db.vms.update(dataclasses.replace(site.vm(), replication_mode=ReplicationMode.PRIMARY,
                                      locked_from_start=True))
    db.relationships.update(dataclasses.replace(site.relationship(),
                                                state=ReplicationState.SYNCED_REPLICATION_COMPLETE))
    site.run_ok("RevertFailover")
    assert site.relationship().state == ReplicationState.REPLICATING
    assert site.vm().locked_from_start is False


def test_test_replica_system_dependency_and_destroy(site: Site) -> None:
    code, out = site.invoke("TestReplicaSystem", SnapshotSettingData=None)
    assert code == 4096
    ref = out["ResultingSystem"]
    assert site.wait(out).state == JobState.COMPLETED
    test_vm = site.world.om.get_instance(ref, CTX)
    assert test_vm["ElementName"] == "web01 - Test" and test_vm["ReplicationMode"] == 3
    linked = site.world.om.associators(vm_path(VM_ID), CTX, assoc_class="Msvm_ReplicaSystemDependency")
    assert [i.path.keybindings["Name"] for i in linked] == [ref.keybindings["Name"]]
    assert site.invoke("TestReplicaSystem", SnapshotSettingData=None)[0] == 32775  # one at a time
    vsms = CIMInstanceName("Msvm_VirtualSystemManagementService", {
        "CreationClassName": "Msvm_VirtualSystemManagementService", "Name": "vmms",
        "SystemCreationClassName": "Msvm_ComputerSystem", "SystemName": "primary-host"}, namespace=VIRT)
    code, out = site.world.invoke(vsms, "DestroySystem", AffectedSystem=ref)
    assert code == 4096
    job = site.wait(out)
    assert job.state == JobState.COMPLETED and job.job_type == 103
    assert site.world.db.vms.find(str(ref.keybindings["Name"])) is None
    assert site.world.db.point_holds.list() == []
    assert site.world.db.test_failovers.last_time(VM_ID) == clock()


def network(**props: Any) -> str:
    values: dict[str, Any] = {"ProtocolIFType": Uint16(4096), "DHCPEnabled": False,
                              "IPAddresses": ["198.51.100.7"], "Subnets": ["255.255.255.0"],
                              "DefaultGateways": ["198.51.100.1"], "DNSServers": ["198.51.100.53"]}
    values.update(props)
    # None leaves the property out (pywbem cannot type a NULL or an empty array by itself).
    values = {name: value for name, value in values.items() if value is not None}
    return embedded("Msvm_FailoverNetworkAdapterSettingData", **values)


def test_failover_network_settings_round_trip(site: Site) -> None:
    [before] = site.world.om.enumerate_instances(VIRT, "Msvm_FailoverNetworkAdapterSettingData", CTX)
    assert before["DHCPEnabled"] is True and before["IPAddresses"] == []
    assert site.invoke("SetFailoverNetworkAdapterSettings", NetworkSettings=[network()])[0] == 0
    [after] = site.world.om.enumerate_instances(VIRT, "Msvm_FailoverNetworkAdapterSettingData", CTX)
    assert after["InstanceID"] == f"Microsoft:{VM_ID}\\Nic\\n0\\Failover"
    assert after["IPAddresses"] == ["198.51.100.7"] and after["DefaultGateways"] == ["198.51.100.1"]
    nic = CIMInstanceName("Msvm_SyntheticEthernetPortSettingData",
                          {"InstanceID": f"Microsoft:{VM_ID}\\Nic\\n0"}, namespace=VIRT)
    [linked] = site.world.om.associators(nic, CTX,
                                         assoc_class="Msvm_EthernetPortFailoverSettingDataComponent")
    assert linked["InstanceID"] == after["InstanceID"]
    # Read, change, pass back by InstanceID (what a WMI client does).
    changed = network(InstanceID=after["InstanceID"], IPAddresses=["198.51.100.8"])
    assert site.invoke("SetFailoverNetworkAdapterSettings", NetworkSettings=[changed])[0] == 0
    assert site.world.db.failover_network.list(vm_id=VM_ID)[0].ip_addresses == ("198.51.100.8",)


@pytest.mark.parametrize("settings", [
    [network(IPAddresses=["198.51.100.300"])],
    [network(DNSServers=["dns.example.com"])],
    [network(Subnets=None)],
    [network(DHCPEnabled=None)],
    [network(IPAddresses=None)],
    [network(ProtocolIFType=Uint16(4097))],
    [network(), network()],  # two settings for the VM's one NIC
    [network(InstanceID="Microsoft:0B0B0B0B-3333-4C3B-9D51-000000000002\\Nic\\n0")],
    [network(InstanceID=f"Microsoft:{VM_ID}\\Nic\\n9")],
])
def test_bad_failover_network_settings_are_32773(site: Site, settings: list[str]) -> None:
    assert site.invoke("SetFailoverNetworkAdapterSettings", NetworkSettings=settings)[0] == 32773
    assert site.world.db.failover_network.list() == []
