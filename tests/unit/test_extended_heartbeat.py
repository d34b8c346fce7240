"""Heartbeats on a forwarding replica B (fakes for C and for the qcow2 merge): a recorded heartbeat reaches
the extended replica C as a heartbeat at the extended interval, moves the extended relationship's
LastReplicationTime on and adds no point; a lagging C gets a forward instead, an out-of-sequence C means a
resync. Retention runs after a heartbeat as after an apply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import Unavailable
from standby.domain.replica import OutOfSequence, ReplicaSite
from standby.engine import apply as apply_module
from standby.engine.apply import ReplicaApplier
from standby.engine.extended import ExtendedReplication
from standby.engine.replica import ReplicaUseCases
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

VM_ID = "6E0D3C2A-1111-4222-8333-944455550003"
HOST_A, HOST_B = "hv-a.test", "hv-b.test"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
P, EXT = RelationshipIndex.PRIMARY, RelationshipIndex.EXTENDED
S = ReplicationState


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FakeC:
    """The extended replica's peer client: records heartbeats; its head is ``head``."""

    def __init__(self, head: int) -> None:
        self.head = head
        self.heartbeats: list[int] = []
        self.fail: Exception | None = None

    async def heartbeat(self, vm_id: str, sequence: int) -> int:
        assert vm_id == VM_ID
        if self.fail is not None:
            raise self.fail
        if sequence != self.head:
            raise OutOfSequence(self.head, f"heartbeat for point {sequence}, head is {self.head}")
        self.heartbeats.append(sequence)
        return self.head

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> Any:
        raise AssertionError("an idle VM ships no log to C")


class B:
    """Host B: the replica of A (head ``P7``) with an extended relationship to C."""

    def __init__(self, *, forwarded: int = 7, state: ReplicationState = S.REPLICATING,
                 last_forward: timedelta = timedelta(minutes=10), history: int = 0,
                 point_ages: tuple[timedelta, ...] = (timedelta(minutes=5),)) -> None:
        self.clock = Clock()
        self.db = db = Database.memory()
        db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
        db.auth_entries.insert(AuthorizationEntry(HOST_A, "lab", "/srv/replicas"))
        db.vms.insert(VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "", 1 << 20),),
                                     replication_mode=ReplicationMode.REPLICA, created_at=NOW))
        db.replicas.insert(ReplicaSite(VM_ID, HOST_A, "lab", "/srv/replicas/web", NOW))
        db.relationships.insert(Relationship(VM_ID, P, S.REPLICATING, health=ReplicationHealth.WARNING,
                                             settings=ReplicationSettings(recovery_history=history),
                                             last_replication_time=NOW - timedelta(minutes=5)))
        db.relationships.insert(Relationship(
            VM_ID, EXT, state, health=ReplicationHealth.WARNING, sequence=forwarded,
            settings=ReplicationSettings(recovery_connection_point="hv-c.test", recovery_port=8443,
                                         interval_seconds=300),
            last_replication_time=NOW - last_forward))
        parent = None
        first = 8 - len(point_ages)
        for sequence, age in enumerate(point_ages, start=first):
            db.recovery_points.insert(RecoveryPoint(f"P{sequence}", VM_ID, sequence, NOW - age,
                                                    VirtualSystemType.REPLICA_STANDARD,
                                                    images=(("d0", f"/nowhere/rp-{sequence}.qcow2"),),
                                                    parent_id=parent))
            parent = f"P{sequence}"
        self.c = FakeC(head=forwarded)
        self.replica = ReplicaUseCases(db, self.clock, ReplicaApplier(db, self.clock))
        c: Any = self.c  # the parts of the peer client a heartbeat uses
        self.extended = ExtendedReplication(ReplicationUseCases(db, self.clock), None, None, lambda s: c,
                                            db=db, clock=self.clock, host_name=HOST_B)
        self.extended.chain_lock = self.replica.applier.lock
        self.replica.heartbeat_listeners.append(self.extended.on_heartbeat)

    def ext(self) -> Relationship:
        return self.db.relationships.get(VM_ID, int(EXT))

    async def heartbeat_from_a(self, sequence: int = 7) -> int:
        """A's idle cycle reaches B; wait for what it started (retention, the step towards C)."""
        head = await self.replica.heartbeat(HOST_A, VM_ID, sequence)
        await self.settle()
        return head

    async def settle(self) -> None:
        await self.replica.applier.settled(VM_ID)
        while self.extended._tasks:
            await asyncio.gather(*self.extended._tasks)


def test_a_heartbeat_on_b_reaches_c_once_the_extended_interval_has_passed() -> None:
    b = B()
    b.clock.now = NOW + timedelta(seconds=30)
    assert asyncio.run(b.heartbeat_from_a()) == 7
    assert b.c.heartbeats == [7]
    ext = b.ext()
    assert (ext.state, ext.sequence, ext.health, ext.last_replication_time) == (
        S.REPLICATING, 7, ReplicationHealth.OK, NOW + timedelta(seconds=30))
    assert [p.sequence for p in b.db.recovery_points.list(vm_id=VM_ID)] == [7]  # no point anywhere


def test_heartbeats_before_the_interval_ends_make_one_heartbeat_when_it_ends() -> None:
    b = B(last_forward=timedelta(seconds=299.9))  # 0.1 s of C's 300 s interval left

    async def run() -> None:
        await b.replica.heartbeat(HOST_A, VM_ID, 7)
        await b.replica.applier.settled(VM_ID)
        await b.replica.heartbeat(HOST_A, VM_ID, 7)  # a step is already waiting: no second one
        assert b.c.heartbeats == [] and len(b.extended._tasks) == 1
        await b.settle()

    asyncio.run(run())
    assert b.c.heartbeats == [7] and b.ext().last_replication_time == NOW


def test_a_lagging_c_is_not_told_it_is_current() -> None:
    b = B(forwarded=6)  # B's head 7 has not reached C yet: the step forwards instead
    assert asyncio.run(b.extended.heartbeat(VM_ID)) is None
    assert b.c.heartbeats == [] and b.ext().last_replication_time == NOW - timedelta(minutes=10)


def test_c_out_of_sequence_requires_a_resync() -> None:
    b = B()
    b.c.head = 5  # C lost point 7
    with pytest.raises(OutOfSequence):
        asyncio.run(b.extended.heartbeat(VM_ID))
    ext = b.ext()
    assert (ext.state, ext.health) == (S.WAITING_TO_START_RESYNCHRONIZATION, ReplicationHealth.CRITICAL)
    # An unreachable C is only a failed step: the next heartbeat tries again.
    b = B()
    b.c.fail = Unavailable("C is down")
    asyncio.run(b.heartbeat_from_a())
    ext = b.ext()
    assert (ext.state, ext.last_replication_time) == (S.REPLICATING, NOW - timedelta(minutes=10))


@pytest.mark.parametrize("state", [S.READY_FOR_REPLICATION, S.WAITING_TO_START_RESYNCHRONIZATION,
                                   S.SUSPENDED])
def test_an_extended_relationship_that_is_not_replicating_hears_nothing(state: ReplicationState) -> None:
    b = B(state=state)

    async def run() -> None:
        await b.replica.heartbeat(HOST_A, VM_ID, 7)
        assert not b.extended._tasks
        await b.settle()

    asyncio.run(run())
    assert b.c.heartbeats == [] and b.ext().last_replication_time == NOW - timedelta(minutes=10)
    assert b.db.relationships.get(VM_ID, int(P)).last_replication_time == NOW  # B's own still moves


def test_no_extended_relationship_and_a_failing_listener_leave_the_heartbeat_alone() -> None:
    b = B()
    b.db.relationships.delete(VM_ID, int(EXT))

    def broken(vm_id: str) -> None:
        raise RuntimeError("listener bug")

    b.replica.heartbeat_listeners.append(broken)
    assert asyncio.run(b.heartbeat_from_a()) == 7
    assert b.db.relationships.get(VM_ID, int(P)).last_replication_time == NOW and b.c.heartbeats == []


def test_retention_runs_after_a_heartbeat_under_the_vm_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    merged: list[tuple[int, int]] = []
    monkeypatch.setattr(apply_module, "_merge_images",
                        lambda older, newer: merged.append((older.sequence, newer.sequence)))
    hours = tuple(timedelta(hours=h) for h in (5, 4, 3, 2))  # points 4..7, the newest two hours old
    b = B(history=1, point_ages=hours)
    b.db.relationships.delete(VM_ID, int(EXT))

    async def run() -> None:
        await b.replica.heartbeat(HOST_A, VM_ID, 7)
        lock = b.replica.applier.lock(VM_ID)
        assert lock.locked()  # the answer is out; retention still holds the VM's lock
        await b.replica.applier.settled(VM_ID)
        assert not lock.locked()

    asyncio.run(run())
    # RecoveryHistory 1: every older point is past the last hour plus one, so all merge into the newest.
    assert merged == [(4, 5), (5, 6), (6, 7)]
    assert [p.sequence for p in b.db.recovery_points.list(vm_id=VM_ID)] == [7]
    rel = b.db.relationships.get(VM_ID, int(P))
    assert rel.intent is None and rel.last_replication_time == NOW


def test_no_retention_after_a_refused_or_failed_over_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    merged: list[tuple[int, int]] = []
    monkeypatch.setattr(apply_module, "_merge_images",
                        lambda older, newer: merged.append((older.sequence, newer.sequence)))
    hours = tuple(timedelta(hours=h) for h in (5, 4, 3))
    b = B(history=0, point_ages=hours)

    async def run() -> None:
        with pytest.raises(OutOfSequence):
            await b.replica.heartbeat(HOST_A, VM_ID, 6)
        assert not b.replica.applier.lock(VM_ID).locked()
        rel = b.db.relationships.get(VM_ID, int(P))
        b.db.relationships.update(replace(rel, state=S.RECOVERED))
        assert await b.replica.heartbeat(HOST_A, VM_ID, 7) == 7
        assert not b.replica.applier.lock(VM_ID).locked()
        await b.settle()

    asyncio.run(run())
    assert merged == [] and len(b.db.recovery_points.list(vm_id=VM_ID)) == 3
