"""Failover over real qcow2 recovery-point chains (qemu-img, qemu-io): initiate, write, revert, fail over to
an older point, commit, test VMs, the split-brain guard, the seed disk and start-up recovery.

The engine's job bodies are awaited directly (the job wrapping is covered through CIM in
``test_failover_cim.py``); the hypervisor is the in-memory fake, since no guest boots here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
    VirtualSystemType,
)
from standby.domain.errors import InvalidState, Unavailable
from standby.domain.failover import FailoverNetworkSettings
from standby.domain.preconditions import Operation
from standby.engine.failover import FailoverUseCases, PrimaryProbe
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.storage.seed import parse_documents
from standby.store.sqlite import Database
from tests.integration.test_failover_support import (
    VM_ID,
    Replica,
    backing_of,
    clock,
    file_hash,
    images_identical,
    make_replica,
    qemu_io,
)

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def make_failover(db: Database, probe: PrimaryProbe | None = None) -> tuple[FailoverUseCases, FakeHypervisor]:
    hv = FakeHypervisor()
    return FailoverUseCases(db, clock, None, hv, ReplicationUseCases(db, clock), primary_probe=probe), hv


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return make_replica(tmp_path, Database.memory())


def rel(replica: Replica) -> Relationship:
    return replica.db.relationships.get(VM_ID, 0)


def vm(replica: Replica) -> VirtualMachine:
    return replica.db.vms.get(VM_ID)


def disk_path(replica: Replica) -> Path:
    return Path(vm(replica).disks[0].path)


def test_failover_write_revert_older_point_commit(replica: Replica) -> None:
    failover, _ = make_failover(replica.db)
    chain_hashes = {i: file_hash(replica.image(i)) for i in range(3)}

    result = run(failover.initiate(VM_ID, None))
    assert result["RecoveryPoint"] == replica.points[2].point_id
    relationship = rel(replica)
    assert relationship.state == ReplicationState.RECOVERED
    assert relationship.state_before_failover == ReplicationState.REPLICATING
    assert relationship.failed_over_type == ReplicationType.REGULAR
    assert relationship.health == ReplicationHealth.WARNING and relationship.intent is None
    failover_disk = disk_path(replica)
    assert failover_disk == replica.folder / "failover" / "d0.qcow2"
    assert backing_of(failover_disk) == str(replica.image(2))
    assert failover_disk.stat().st_size < 1 << 20  # an overlay: a header, nothing copied
    assert images_identical(failover_disk, replica.image(2))
    assert [h.point_id for h in replica.db.point_holds.list()] == [replica.points[2].point_id]

    # The failed-over VM writes: only the failover disk changes, the points stay as they were.
    qemu_io(failover_disk, "write -P 0x77 4M 1M")
    assert not images_identical(failover_disk, replica.image(2))
    assert {i: file_hash(replica.image(i)) for i in range(3)} == chain_hashes

    run(failover.revert(VM_ID))
    relationship = rel(replica)
    assert relationship.state == ReplicationState.REPLICATING and relationship.state_before_failover is None
    assert relationship.failed_over_type == ReplicationType.NONE
    assert relationship.health == ReplicationHealth.OK
    assert disk_path(replica) == replica.image(2)
    assert not failover_disk.exists()
    assert replica.db.point_holds.list() == []
    assert {i: file_hash(replica.image(i)) for i in range(3)} == chain_hashes

    # Again, to the oldest point this time: the failover disk shows exactly that point's bytes.
    run(failover.initiate(VM_ID, replica.points[0].point_id))
    failover_disk = disk_path(replica)
    assert images_identical(failover_disk, replica.image(0))
    assert not images_identical(failover_disk, replica.image(2))
    qemu_io(failover_disk, "write -P 0x99 8M 64k")

    result = run(failover.commit(VM_ID))
    assert result == {"RecoveryPoint": replica.points[0].point_id, "DroppedPoints": "2"}
    assert rel(replica).state == ReplicationState.COMMITTED
    assert [p.point_id for p in replica.db.recovery_points.list(vm_id=VM_ID)] == [replica.points[0].point_id]
    assert replica.image(0).exists() and not replica.image(1).exists() and not replica.image(2).exists()
    # The data stayed: the committed disk is the chosen point plus what the VM wrote.
    assert disk_path(replica) == failover_disk
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x99 8M 64k", "-c", "read -P 0x11 0 1M",
                    str(failover_disk)], check=True, capture_output=True)
    assert [h.reason for h in replica.db.point_holds.list()] == ["committed"]
    kinds = [e.kind for e in replica.db.events.list(element_id=VM_ID)]
    assert kinds.count("failover.initiated") == 2 and "failover.reverted" in kinds
    assert "failover.committed" in kinds


def test_revert_powers_off_a_running_failed_over_vm(replica: Replica) -> None:
    failover, hv = make_failover(replica.db)

    async def scenario() -> None:
        await failover.initiate(VM_ID, None)
        await hv.start(vm(replica))
        assert hv.state(VM_ID) is EnabledState.ENABLED
        await failover.revert(VM_ID)

    run(scenario())
    assert hv.state(VM_ID) is EnabledState.DISABLED
    assert vm(replica).enabled_state is EnabledState.DISABLED
    assert disk_path(replica) == replica.image(2)


def test_planned_point_skips_the_split_brain_question(replica: Replica) -> None:
    asked: list[str] = []

    async def probe(v: VirtualMachine, r: Relationship) -> bool | None:
        asked.append(v.vm_id)
        return True

    point = dataclasses.replace(replica.points[2], kind=VirtualSystemType.REPLICA_PLANNED_FAILOVER)
    replica.db.recovery_points.delete(point.point_id)
    replica.db.recovery_points.insert(point)
    failover, _ = make_failover(replica.db, probe)
    run(failover.initiate(VM_ID, None))
    assert asked == []
    assert rel(replica).failed_over_type == ReplicationType.PLANNED


def test_a_running_primary_refuses_an_unplanned_failover_unless_forced(replica: Replica) -> None:
    async def running(v: VirtualMachine, r: Relationship) -> bool | None:
        assert r.settings.primary_connection_point == "primary.example.com"
        return True

    failover, _ = make_failover(replica.db, running)
    with pytest.raises(InvalidState) as caught:
        run(failover.initiate(VM_ID, None))
    assert caught.value.code == 32775 and caught.value.message_id == "FailoverPrimaryRunning"
    assert rel(replica).state == ReplicationState.REPLICATING
    assert disk_path(replica) == replica.image(2)
    assert not (replica.folder / "failover").exists()

    run(failover.initiate(VM_ID, None, force=True))
    assert rel(replica).state == ReplicationState.RECOVERED
    assert "failover.forced" in [e.kind for e in replica.db.events.list(element_id=VM_ID)]


def test_an_unreachable_primary_does_not_stop_the_failover(replica: Replica) -> None:
    async def unreachable(v: VirtualMachine, r: Relationship) -> bool | None:
        raise Unavailable("connection refused", message_id="PeerUnreachable")

    failover, _ = make_failover(replica.db, unreachable)
    run(failover.initiate(VM_ID, None))
    assert rel(replica).state == ReplicationState.RECOVERED
    assert "failover.primary-unknown" in [e.kind for e in replica.db.events.list(element_id=VM_ID)]


def test_a_failed_failover_leaves_nothing_behind(replica: Replica) -> None:
    failover, _ = make_failover(replica.db)
    replica.image(1).unlink()  # the chain under the head is broken: qemu-img cannot open the backing file
    with pytest.raises(Exception):  # noqa: B017 - whichever error qemu-img reports, the undo is the point
        run(failover.initiate(VM_ID, None))
    relationship = rel(replica)
    assert relationship.state == ReplicationState.REPLICATING and relationship.intent is None
    assert disk_path(replica) == replica.image(2)
    assert not any((replica.folder / "failover").glob("*"))


def iso_file(iso: Path, name: str) -> str:
    proc = subprocess.run(["isoinfo", "-i", str(iso), "-J", "-x", f"/{name}"], capture_output=True,
                          check=True)
    return proc.stdout.decode()


def test_failover_attaches_a_nocloud_seed_with_the_ip_settings(replica: Replica) -> None:
    failover, _ = make_failover(replica.db)
    failover.set_network_settings(VM_ID, [FailoverNetworkSettings(
        VM_ID, "", ip_addresses=("192.0.2.10",), subnets=("255.255.255.0",),
        default_gateways=("192.0.2.1",), dns_servers=("192.0.2.53",))])
    run(failover.initiate(VM_ID, None))
    disks = vm(replica).disks
    assert [d.disk_id for d in disks] == ["d0", "cidata"]
    iso = replica.folder / "seed" / "cidata.iso"
    assert backing_of(Path(disks[1].path)) == str(iso)
    label = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                           check=True).stdout
    assert "Volume id: cidata" in label
    docs = parse_documents({name: iso_file(iso, name) for name in ("meta-data", "user-data",
                                                                      "network-config")})
    assert docs["network-config"] == {"version": 2, "ethernets": {"n0": {
        "match": {"macaddress": "52:54:00:12:34:56"}, "set-name": "eth-n0", "dhcp4": False,
        "addresses": ["192.0.2.10/24"], "routes": [{"to": "0.0.0.0/0", "via": "192.0.2.1"}],
        "nameservers": {"addresses": ["192.0.2.53"]}}}}
    assert docs["meta-data"]["instance-id"].startswith(VM_ID.lower() + "-failover-")
    run(failover.revert(VM_ID))
    assert [d.disk_id for d in vm(replica).disks] == ["d0"]
    assert not iso.exists()


def test_test_vm_over_a_point_and_its_removal(replica: Replica) -> None:
    failover, hv = make_failover(replica.db)
    chain_hashes = {i: file_hash(replica.image(i)) for i in range(3)}
    result = run(failover.drill.create(VM_ID, replica.points[1].point_id))
    test_vm = replica.db.vms.get(result["ResultingSystem"])
    assert test_vm.name == "web01 - Test" and test_vm.replication_mode == ReplicationMode.TEST_REPLICA
    assert [n.network for n in test_vm.nics] == ["isolated:standby-test"]
    assert test_vm.nics[0].mac == vm(replica).nics[0].mac
    overlay = Path(test_vm.disks[0].path)
    assert overlay == replica.folder / "test" / "d0.qcow2"
    assert images_identical(overlay, replica.image(1))
    assert replica.db.point_holds.oldest_held_sequence(VM_ID) == 2
    assert replica.db.test_failovers.last_time(VM_ID) == clock()
    # The replica itself is untouched and keeps replicating.
    assert rel(replica).state == ReplicationState.REPLICATING and disk_path(replica) == replica.image(2)
    # A second test VM is refused by the precondition table.
    with pytest.raises(InvalidState):
        failover.guards.guard(Operation.TEST_REPLICA_SYSTEM, VM_ID)

    async def write_and_remove() -> None:
        await hv.start(test_vm)
        qemu_io(overlay, "write -P 0x55 0 1M")
        await failover.drill.remove(failover.drill.resolve_test_vm(VM_ID).vm_id)

    run(write_and_remove())
    assert replica.db.vms.find(test_vm.vm_id) is None
    assert not any((replica.folder / "test").iterdir())
    assert replica.db.point_holds.list() == []
    assert {i: file_hash(replica.image(i)) for i in range(3)} == chain_hashes


def test_start_up_recovery_rolls_back_a_half_done_failover(replica: Replica) -> None:
    failover, _ = make_failover(replica.db)
    run(failover.initiate(VM_ID, None))
    # As if the daemon died between "state 12 + intent" and the end: the relationship still says 12.
    replica.db.relationships.update(dataclasses.replace(
        rel(replica), state=ReplicationState.FAILOVER_IN_PROGRESS,
        intent=f"failover:{replica.points[2].point_id}", state_before_failover=ReplicationState.REPLICATING))
    # and a stale test overlay with no test VM.
    (replica.folder / "test").mkdir()
    (replica.folder / "test" / "d0.qcow2").write_bytes(b"stale")
    touched = run(failover.recover())
    assert touched == [VM_ID]
    relationship = rel(replica)
    assert relationship.state == ReplicationState.REPLICATING and relationship.intent is None
    assert disk_path(replica) == replica.image(2)
    assert not (replica.folder / "failover" / "d0.qcow2").exists()
    assert not (replica.folder / "test" / "d0.qcow2").exists()
