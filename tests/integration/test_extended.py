"""Extended replication with real qemu-img / qemu-nbd: a replica B forwards its recovery points to C.

B and C are two replica sides over their own databases and folders (``ReplicaUseCases`` with a real
``ReplicaApplier``); the "network" between B and C is an in-process peer that calls C's use cases the way
the peer routes do. The primary A is a source image the test writes with ``qemu-io`` and ships to B as logs
(or, idle, heartbeats: B passes them on to C).
Every check compares image contents (``qemu-img compare``) and counts what crossed to C.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import JobState, RelationshipIndex, ReplicationMode, ReplicationState
from standby.domain.errors import InvalidParameter, InvalidState
from standby.engine.apply import ReplicaApplier
from standby.engine.extended import ExtendedReplication
from standby.engine.jobs import JobManager
from standby.engine.replica import ReplicaSpec, ReplicaStatus, ReplicaUseCases
from standby.engine.replication import ReplicationUseCases
from standby.storage import chain, qemu_img
from standby.storage.logformat import DiskInfo, LogEncoder, LogHeader, LogKind
from standby.store.sqlite import Database

MiB = 1024 * 1024
SIZE = 16 * MiB
VM_ID = "7B1C2D3E-0000-4000-8000-0000000000E1"
HOST_A, HOST_B = "hva.lab.example", "hvb.lab.example"


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _io(path: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def _random(path: Path, offset: int, length: int) -> None:
    """Incompressible data, so the bytes shipped measure what was sent, not how well it compresses."""
    with chain.NbdServer(path, writable=True) as server, server.connect() as client:
        client.write(offset, os.urandom(length))
        client.flush()


def _same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _log(source: Path, sequence: int, parent: int, kind: LogKind, ranges: Sequence[tuple[int, int]] | None,
         *, at: datetime) -> list[bytes]:
    """A log of the source image: every allocated extent (None) or these ranges."""
    encoder = LogEncoder(LogHeader(VM_ID, 0, sequence, parent, kind, at.isoformat(), (DiskInfo("d0", SIZE),)))
    out = [encoder.header_bytes()]
    with chain.NbdServer(source, writable=False) as server, server.connect([chain.BASE_ALLOCATION]) as client:
        wanted = list(ranges) if ranges is not None else [
            (e.offset, e.length) for e in client.block_status(chain.BASE_ALLOCATION) if not e.flags & 3]
        for offset, data in client.read_many(wanted):
            out.append(encoder.frame(0, offset, data))
    out.append(encoder.end())
    return out


class InProcessPeer:
    """What B's peer client does, as direct calls into C's replica use cases (caller = B)."""

    def __init__(self, replica: ReplicaUseCases) -> None:
        self.replica = replica
        self.shipped: list[int] = []
        self.heartbeats: list[int] = []

    async def create_replica(self, vm: VirtualMachine, settings: ReplicationSettings, *, primary_host: str,
                             disks: Sequence[tuple[str, int]] | None = None,
                             extended: bool = False) -> ReplicaStatus:
        spec = ReplicaSpec(vm.vm_id, vm.name, vm.memory_mib, vm.cpus, tuple(disks or ()), settings=settings,
                           extended=extended)
        return self.replica.create_replica(primary_host, spec)

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> Any:
        data = b"".join([chunk async for chunk in chunks])
        self.shipped.append(len(data))
        answer = await self.replica.put_log(HOST_B, vm_id, sequence, _stream([data]))
        await self.replica.applier.settled(vm_id)  # retention too, before the test's loop may end
        return answer

    async def heartbeat(self, vm_id: str, sequence: int) -> int:
        self.heartbeats.append(sequence)
        return await self.replica.heartbeat(HOST_B, vm_id, sequence)

    async def hashes(self, vm_id: str, disk_id: str, block_size: int) -> bytes:
        return await self.replica.hashes(HOST_B, vm_id, disk_id, block_size)

    async def replica_status(self, vm_id: str) -> ReplicaStatus:
        return self.replica.status(HOST_B, vm_id)

    async def set_state(self, vm_id: str, requested_state: int) -> ReplicationState:
        return self.replica.set_state(HOST_B, vm_id, requested_state)

    async def remove_replica(self, vm_id: str) -> None:
        await self.replica.remove(HOST_B, vm_id)


@dataclass
class Site:
    """Host B (replica of A, forwarding to C) and host C."""

    clock: Clock
    source: Path
    b: Database
    b_replica: ReplicaUseCases
    c: Database
    peer: InProcessPeer
    extended: ExtendedReplication

    def ship_to_b(self, sequence: int, parent: int, kind: LogKind,
                  ranges: Sequence[tuple[int, int]] | None) -> None:
        self.clock.now += timedelta(minutes=1)
        chunks = _log(self.source, sequence, parent, kind, ranges, at=self.clock.now)

        async def put() -> None:
            await self.b_replica.put_log(HOST_A, VM_ID, sequence, _stream(chunks))
            # Retention runs after the answer: wait for it in this loop (a merge cut off by the loop's end
            # would leave its files done and its store record journaled).
            await self.b_replica.applier.settled(VM_ID)

        asyncio.run(put())

    def head_image(self, db: Database) -> Path:
        head = db.recovery_points.latest(VM_ID)
        assert head is not None
        return Path(dict(head.images)["d0"])


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    clock = Clock()
    dbs = []
    replicas = []
    for name, allowed in (("b", HOST_A), ("c", HOST_B)):
        db = Database.open(tmp_path / f"{name}.db")
        location = tmp_path / f"replicas-{name}"
        location.mkdir()
        db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
        db.auth_entries.insert(AuthorizationEntry(allowed, "lab", str(location)))
        dbs.append(db)
        replicas.append(ReplicaUseCases(db, clock, ReplicaApplier(db, clock)))
    source = tmp_path / "a-d0.qcow2"
    qemu_img.create(source, SIZE)
    _random(source, 0, 2 * MiB)
    _io(source, "write -P 0x12 9M 100k")
    spec = ReplicaSpec(VM_ID, "web", 256, 1, (("d0", SIZE),), settings=ReplicationSettings(
        recovery_connection_point=HOST_B, recovery_port=8443, interval_seconds=30, recovery_history=0))
    replicas[0].create_replica(HOST_A, spec)
    peer = InProcessPeer(replicas[1])
    extended = ExtendedReplication(ReplicationUseCases(dbs[0], clock), None, None, lambda s: peer,
                                   db=dbs[0], clock=clock, host_name=HOST_B)
    extended.chain_lock = replicas[0].applier.lock
    out = Site(clock, source, dbs[0], replicas[0], dbs[1], peer, extended)
    out.ship_to_b(1, 0, LogKind.INITIAL, None)
    return out


def _enable(site: Site, interval: int = 300) -> None:
    vm, settings = site.extended.check_create(VM_ID, ReplicationSettings(
        recovery_connection_point="hvc.lab.example", recovery_port=8443, interval_seconds=interval))
    asyncio.run(site.extended.create(vm, settings))


def test_extended_replica_is_mode_4_and_follows_every_forwarded_point(site: Site) -> None:
    _enable(site)
    assert site.c.vms.get(VM_ID).replication_mode is ReplicationMode.EXTENDED_REPLICA
    extended = site.b.relationships.get(VM_ID, int(RelationshipIndex.EXTENDED))
    assert extended.state is ReplicationState.READY_FOR_REPLICATION

    initial = asyncio.run(site.extended.forward(VM_ID, LogKind.INITIAL))
    assert initial["Sequence"] == "1" and _same(site.head_image(site.b), site.head_image(site.c))
    assert site.b.relationships.get(VM_ID, 1).state is ReplicationState.REPLICATING

    # Two logs reach B (retention merges B's chain down to its head meanwhile), then one forward to C.
    _random(site.source, 4 * MiB, 64 * 1024)
    _io(site.source, "write -z 9M 100k")
    site.ship_to_b(2, 1, LogKind.DELTA, [(4 * MiB, 64 * 1024), (9 * MiB, 100 * 1024)])
    _random(site.source, 12 * MiB, 128 * 1024)
    site.ship_to_b(3, 2, LogKind.DELTA, [(12 * MiB, 128 * 1024)])
    delta = asyncio.run(site.extended.forward(VM_ID, LogKind.DELTA))
    assert (delta["Sequence"], delta["Parent"]) == ("3", "1")
    assert _same(site.source, site.head_image(site.c)) and _same(site.head_image(site.b), site.source)
    # Only the changed clusters travel (64 KiB + 128 KiB of data, 100 KiB of zeros), not the 2 MiB the
    # initial log carried.
    assert site.peer.shipped[-1] < 400 * 1024 < site.peer.shipped[0]
    assert [p.sequence for p in site.c.recovery_points.list(vm_id=VM_ID)][-1] == 3
    # Nothing new: no log at all.
    shipped = len(site.peer.shipped)
    assert asyncio.run(site.extended.forward(VM_ID, LogKind.DELTA))["WireBytes"] == "0"
    assert len(site.peer.shipped) == shipped


def test_resynchronize_ships_only_the_differing_blocks(site: Site) -> None:
    _enable(site)
    asyncio.run(site.extended.forward(VM_ID, LogKind.INITIAL))
    _random(site.source, 6 * MiB, 256 * 1024)
    site.ship_to_b(2, 1, LogKind.DELTA, [(6 * MiB, 256 * 1024)])
    rel = site.b.relationships.get(VM_ID, 1)
    site.b.relationships.update(replace(rel, state=ReplicationState.WAITING_TO_START_RESYNCHRONIZATION))
    result = asyncio.run(site.extended.forward(VM_ID, LogKind.RESYNC))
    assert result["Parent"] == "1" and _same(site.source, site.head_image(site.c))
    # The one differing 256 KiB hash block (+ framing), nowhere near the 2 MiB of data on the disk.
    assert 256 * 1024 <= site.peer.shipped[-1] < 600 * 1024


def test_extended_settings_are_checked(site: Site) -> None:
    with pytest.raises(InvalidParameter):  # faster than the primary relationship's 30 s
        site.extended.check_create(VM_ID, ReplicationSettings(
            recovery_connection_point="hvc.lab.example", recovery_port=8443, interval_seconds=10))
    with pytest.raises(InvalidParameter):
        site.extended.check_create(VM_ID, ReplicationSettings(
            recovery_connection_point="hvc.lab.example", recovery_port=8443, interval_seconds=300,
            app_consistent_interval_hours=1))
    _enable(site)
    with pytest.raises(InvalidState):  # one extended relationship only
        site.extended.check_create(VM_ID, ReplicationSettings(
            recovery_connection_point="hvc.lab.example", recovery_port=8443, interval_seconds=300))


def test_modify_and_remove_the_extended_relationship_as_jobs(site: Site) -> None:
    _enable(site)

    async def run() -> None:
        jobs = JobManager(site.b, site.clock)
        extended = ExtendedReplication(ReplicationUseCases(site.b, site.clock), jobs, None,
                                       lambda s: site.peer, db=site.b, clock=site.clock, host_name=HOST_B)
        settings = ReplicationSettings(recovery_connection_point="hvc.lab.example", recovery_port=8443,
                                       interval_seconds=900)
        with pytest.raises(InvalidParameter):  # the disks of an extended relationship cannot change
            extended.submit_modify(VM_ID, replace(settings, included_disks=("d0",)))
        job = await jobs.wait(extended.submit_modify(VM_ID, settings).job_id, 30)
        assert job.state is JobState.COMPLETED
        assert site.b.relationships.get(VM_ID, 1).settings.interval_seconds == 900
        job = await jobs.wait(extended.submit_remove(VM_ID).job_id, 30)
        assert job.state is JobState.COMPLETED

    asyncio.run(run())
    assert site.b.relationships.find(VM_ID, 1) is None
    assert site.c.relationships.find(VM_ID, 0) is None  # C's side went too; its VM stays
    assert site.c.vms.get(VM_ID).replication_mode is ReplicationMode.NONE


def test_a_point_before_the_interval_ends_is_forwarded_when_it_ends(site: Site) -> None:
    _enable(site)
    asyncio.run(site.extended.forward(VM_ID, LogKind.INITIAL))
    forwarded_at = site.b.relationships.get(VM_ID, 1).last_replication_time
    assert forwarded_at is not None
    _random(site.source, 5 * MiB, 64 * 1024)
    site.ship_to_b(2, 1, LogKind.DELTA, [(5 * MiB, 64 * 1024)])
    site.clock.now = forwarded_at + timedelta(seconds=299.8)  # 0.2 s of the 300 s interval left
    head = site.b.recovery_points.latest(VM_ID)
    assert head is not None

    async def run() -> None:
        site.extended.on_point(head, None)
        site.extended.on_point(head, None)  # already waiting: no second forward
        assert site.peer.shipped[1:] == []  # not yet
        for _ in range(400):
            if not site.extended._tasks:
                break
            await asyncio.sleep(0.05)

    asyncio.run(run())
    assert len(site.peer.shipped) == 2  # the initial log, then this one - no next point needed
    assert _same(site.source, site.head_image(site.c))
    assert site.b.relationships.get(VM_ID, 1).sequence == 2


def test_an_idle_vm_s_heartbeats_reach_c_and_add_no_point(site: Site) -> None:
    _enable(site)
    asyncio.run(site.extended.forward(VM_ID, LogKind.INITIAL))
    site.b_replica.heartbeat_listeners.append(site.extended.on_heartbeat)
    c_before = site.c.relationships.get(VM_ID, 0).last_replication_time
    assert c_before is not None

    async def heartbeat_from_a(sequence: int) -> None:
        """A's idle cycle reaches B; wait for B's retention, B's step towards C and C's retention."""
        assert await site.b_replica.heartbeat(HOST_A, VM_ID, sequence) == sequence
        await site.b_replica.applier.settled(VM_ID)
        while site.extended._tasks:
            await asyncio.gather(*site.extended._tasks)
        await site.peer.replica.applier.settled(VM_ID)

    # Past C's 300 s interval: B tells C its head is current - no log, no point, the times move on.
    site.clock.now += timedelta(seconds=301)
    asyncio.run(heartbeat_from_a(1))
    assert site.peer.heartbeats == [1] and len(site.peer.shipped) == 1  # the initial log only
    assert [p.sequence for p in site.c.recovery_points.list(vm_id=VM_ID)] == [1]
    assert site.c.relationships.get(VM_ID, 0).last_replication_time == site.clock.now > c_before
    assert site.b.relationships.get(VM_ID, 1).last_replication_time == site.clock.now
    assert _same(site.head_image(site.b), site.head_image(site.c))

    # A point reached B meanwhile (C lags): the next heartbeat's step forwards it instead.
    _random(site.source, 7 * MiB, 64 * 1024)
    site.ship_to_b(2, 1, LogKind.DELTA, [(7 * MiB, 64 * 1024)])
    site.clock.now += timedelta(seconds=301)
    asyncio.run(heartbeat_from_a(2))
    assert site.peer.heartbeats == [1] and len(site.peer.shipped) == 2
    assert site.b.relationships.get(VM_ID, 1).sequence == 2
    assert _same(site.source, site.head_image(site.c))
