"""Retention driving chain merges: which merges run, in which order, and what the store says afterwards.

The qcow2 work is replaced by a recorder (the real merge is covered by tests/integration/test_chain.py and
test_apply.py); the clock is fake, so hour buckets are exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from standby.domain.entities import Disk, RecoveryPoint, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.replica import ReplicaSite
from standby.engine import apply as apply_module
from standby.engine.apply import ReplicaApplier
from standby.store.sqlite import Database
from standby.store.sqlite.repos_failover import PointHold

VM_ID = "11111111-2222-4333-8444-555555555555"
NOW = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def merges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []

    def record(older: RecoveryPoint, newer: RecoveryPoint) -> None:
        done.append((older.sequence, newer.sequence))

    monkeypatch.setattr(apply_module, "_merge_images", record)
    return done


def _world(history: int, ages_minutes: list[int], *, app_interval: int = 0,
           app_consistent: frozenset[int] = frozenset()) -> tuple[Database, ReplicaApplier, Clock]:
    db = Database.memory()
    clock = Clock()
    db.vms.insert(VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "", 1 << 20),),
                                 replication_mode=ReplicationMode.REPLICA))
    db.replicas.insert(ReplicaSite(VM_ID, "hv1", "g", "/nowhere", NOW, base_sequence=1))
    settings = ReplicationSettings(recovery_history=history, app_consistent_interval_hours=app_interval)
    db.relationships.insert(Relationship(VM_ID, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING,
                                         settings=settings))
    parent = None
    for sequence, age in enumerate(ages_minutes, start=1):
        kind = (VirtualSystemType.REPLICA_APPLICATION_CONSISTENT if sequence in app_consistent
                else VirtualSystemType.REPLICA_STANDARD)
        point = RecoveryPoint(f"P{sequence}", VM_ID, sequence, NOW - timedelta(minutes=age), kind,
                              images=(("d0", f"/nowhere/rp-{sequence}.qcow2"),), parent_id=parent)
        db.recovery_points.insert(point)
        parent = point.point_id
    return db, ReplicaApplier(db, clock), clock


def _sequences(db: Database) -> list[int]:
    return [point.sequence for point in db.recovery_points.list(vm_id=VM_ID)]


def test_history_zero_merges_everything_into_the_newest(merges: list[tuple[int, int]]) -> None:
    db, applier, _ = _world(0, [50, 40, 30, 20])
    assert asyncio.run(applier.retain(VM_ID)) == 3
    assert merges == [(1, 2), (2, 3), (3, 4)]  # oldest first: each merge feeds the next
    assert _sequences(db) == [4]
    assert db.recovery_points.get("P4").parent_id is None  # it inherited P1's (no) parent
    assert db.relationships.get(VM_ID, 0).intent is None


def test_hourly_points_survive_as_time_passes(merges: list[tuple[int, int]]) -> None:
    # Every 20 minutes over 4 hours; keep 2 hours of history beyond the last hour.
    ages = list(range(240, -1, -20))
    db, applier, clock = _world(2, ages)
    asyncio.run(applier.retain(VM_ID))
    kept = _sequences(db)
    recent = [s for s, age in enumerate(ages, start=1) if age < 60]
    assert set(recent) <= set(kept)
    older_kept = [s for s in kept if s not in recent]
    assert len(older_kept) == 2  # one per clock hour, two hours
    assert all(older < newer for older, newer in merges)
    # An hour later the recent ones have aged into hour buckets; the plan converges.
    clock.now += timedelta(hours=1)
    before = len(merges)
    asyncio.run(applier.retain(VM_ID))
    assert len(merges) > before
    assert max(_sequences(db)) == len(ages)
    assert len(_sequences(db)) <= 3  # the newest, plus at most one per hour for two hours
    assert asyncio.run(applier.retain(VM_ID)) == 0
    # Long after, only the newest stays.
    clock.now += timedelta(hours=5)
    asyncio.run(applier.retain(VM_ID))
    assert _sequences(db) == [len(ages)]


def test_app_consistent_points_are_preferred(merges: list[tuple[int, int]]) -> None:
    ages = [150, 140, 130, 100, 90, 80, 5]
    # 10:00 10:10 10:20 10:50 | 11:00 11:10 | 12:25: hour 10 keeps its app-consistent point, not its newest.
    db, applier, _ = _world(2, ages, app_interval=1, app_consistent=frozenset({2}))
    asyncio.run(applier.retain(VM_ID))
    assert _sequences(db) == [2, 6, 7]


def test_held_points_and_their_older_chain_are_never_merged(merges: list[tuple[int, int]]) -> None:
    db, applier, _ = _world(0, [50, 40, 30, 20, 10])
    test_vm = VirtualMachine("TEST-VM", "web - Test", 256, 1, replication_mode=ReplicationMode.TEST_REPLICA)
    db.vms.insert(test_vm)
    db.point_holds.hold(PointHold("P3", "TEST-VM", "test", NOW))
    asyncio.run(applier.retain(VM_ID))
    assert all(older > 3 for older, _ in merges)
    assert _sequences(db) == [1, 2, 3, 5]


def test_another_intent_or_a_failover_blocks_retention(merges: list[tuple[int, int]]) -> None:
    db, applier, _ = _world(0, [50, 40, 30])
    relationship = db.relationships.get(VM_ID, 0)
    db.relationships.update(replace(relationship, intent="failover:P2"))
    assert asyncio.run(applier.retain(VM_ID)) == 0
    relationship = db.relationships.get(VM_ID, 0)
    db.relationships.update(replace(relationship, intent=None, state=ReplicationState.RECOVERED))
    assert asyncio.run(applier.retain(VM_ID)) == 0
    assert merges == [] and _sequences(db) == [1, 2, 3]


def test_a_failed_merge_stays_journaled(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(older: RecoveryPoint, newer: RecoveryPoint) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(apply_module, "_merge_images", broken)
    db, applier, _ = _world(0, [50, 40])
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(applier.retain(VM_ID))
    assert db.relationships.get(VM_ID, 0).intent == "merge:P1:P2"
    assert _sequences(db) == [1, 2]


def _choose_after_first_merge(db: Database, applier: ReplicaApplier, change: str) -> None:
    """Once the first merge is recorded, a failover or a test failover chooses a point (as it can under
    the chain guard, between two merges of one plan)."""
    finish = applier._finish_merge

    def finished(relationship: Relationship, older: RecoveryPoint, newer: RecoveryPoint) -> None:
        finish(relationship, older, newer)
        if older.sequence != 1:
            return
        if change == "failover":
            rel = db.relationships.get(VM_ID, int(RelationshipIndex.PRIMARY))
            db.relationships.update(replace(rel, state=ReplicationState.FAILOVER_IN_PROGRESS))
        else:  # a test VM being made on point 4 holds it (and its older chain)
            db.point_holds.hold(PointHold("P4", VM_ID, "test-pending", NOW))

    applier._finish_merge = finished  # type: ignore[method-assign]


@pytest.mark.parametrize("change", ["failover", "test"])
def test_a_point_chosen_between_two_merges_stops_the_rest(merges: list[tuple[int, int]], change: str) -> None:
    db, applier, _ = _world(0, [50, 40, 30, 20, 10])
    _choose_after_first_merge(db, applier, change)
    assert asyncio.run(applier.retain(VM_ID)) == 1
    assert merges == [(1, 2)]
    assert _sequences(db) == [2, 3, 4, 5]


def test_retention_waits_for_a_failover_choosing_a_point(merges: list[tuple[int, int]]) -> None:
    db, applier, _ = _world(0, [50, 40, 30])

    async def scenario() -> int:
        async with applier.chain_guard(VM_ID):  # a failover mid-choice
            retaining = asyncio.create_task(applier.retain(VM_ID))
            await asyncio.sleep(0.05)
            assert not retaining.done() and merges == []
            rel = db.relationships.get(VM_ID, int(RelationshipIndex.PRIMARY))
            db.relationships.update(replace(rel, state=ReplicationState.FAILOVER_IN_PROGRESS))
        return await retaining

    assert asyncio.run(scenario()) == 0
    assert merges == [] and _sequences(db) == [1, 2, 3]
