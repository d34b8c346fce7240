"""Statistics of a replica VM over an in-memory store: the replica keeps a cycle record per heartbeat it takes
(and per log it applies, as ``engine.apply`` writes them), so GetReplicationStatistics counts what it
received; refused and failed-over heartbeats add nothing, and removing the replica drops the records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from standby.domain.cycles import HEARTBEAT_DETAIL, CycleKind, CycleOutcome, CycleRecord
from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    RecoveryPoint,
    Relationship,
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
from standby.domain.replica import OutOfSequence, ReplicaSite
from standby.engine.apply import ReplicaApplier
from standby.engine.replica import ReplicaUseCases
from standby.engine.statistics import report
from standby.store.sqlite import Database

VM_ID = "6E0D3C2A-1111-4222-8333-944455550003"
PRIMARY = "hv-a.test"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
P = RelationshipIndex.PRIMARY


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _replica(state: ReplicationState = ReplicationState.REPLICATING) -> tuple[
        Database, Clock, ReplicaUseCases]:
    db = Database.memory()
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry(PRIMARY, "lab", "/srv/replicas"))
    db.vms.insert(VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "", 1 << 20),),
                                 replication_mode=ReplicationMode.REPLICA, created_at=NOW))
    db.replicas.insert(ReplicaSite(VM_ID, PRIMARY, "lab", "/srv/replicas/web", NOW))
    db.relationships.insert(Relationship(VM_ID, P, state, health=ReplicationHealth.WARNING,
                                         last_replication_time=NOW - timedelta(minutes=5)))
    db.recovery_points.insert(RecoveryPoint("P7", VM_ID, 7, NOW - timedelta(minutes=5),
                                            VirtualSystemType.REPLICA_STANDARD))
    clock = Clock()
    return db, clock, ReplicaUseCases(db, clock, ReplicaApplier(db, clock))


def _applied(sequence: int, kind: CycleKind, wire: int, minutes_ago: int) -> CycleRecord:
    """A record as the applier writes it for one applied log."""
    at = NOW - timedelta(minutes=minutes_ago)
    return CycleRecord(VM_ID, int(P), sequence, kind, CycleOutcome.SUCCESS, at, at + timedelta(seconds=2),
                       dirty_bytes=wire * 2, wire_bytes=wire, latency_ms=2000)


def test_each_heartbeat_is_a_successful_zero_byte_cycle_of_the_replica() -> None:
    db, clock, replica = _replica()
    for _ in range(3):
        clock.now += timedelta(seconds=30)
        assert asyncio.run(replica.heartbeat(PRIMARY, VM_ID, 7)) == 7
    records = db.cycles.list(VM_ID, int(P))
    assert [(r.sequence, r.kind, r.outcome, r.detail, r.wire_bytes) for r in records] == [
        (7, CycleKind.DELTA, CycleOutcome.SUCCESS, HEARTBEAT_DETAIL, 0)] * 3
    assert records[-1].finished_at == clock.now == db.relationships.get(VM_ID, int(P)).last_replication_time
    stats = report(db, db.relationships.get(VM_ID, int(P)), clock.now)
    assert (stats.success_count, stats.size_bytes, stats.average_size_bytes) == (3, 0, None)


def test_refused_and_failed_over_heartbeats_are_not_counted() -> None:
    db, _, replica = _replica()
    with pytest.raises(OutOfSequence):
        asyncio.run(replica.heartbeat(PRIMARY, VM_ID, 6))
    assert db.cycles.list(VM_ID, int(P)) == []
    db, _, failed_over = _replica(ReplicationState.RECOVERED)
    assert asyncio.run(failed_over.heartbeat(PRIMARY, VM_ID, 7)) == 7
    assert db.cycles.list(VM_ID, int(P)) == []


def test_a_replica_vm_reports_its_applied_logs_and_heartbeats() -> None:
    db, clock, replica = _replica()
    for record in (_applied(5, CycleKind.INITIAL, 9000, 30), _applied(6, CycleKind.DELTA, 3000, 20),
                   _applied(7, CycleKind.DELTA, 1000, 10)):
        db.cycles.record(record)
    asyncio.run(replica.heartbeat(PRIMARY, VM_ID, 7))
    stats = report(db, db.relationships.get(VM_ID, int(P)), clock.now)
    assert (stats.success_count, stats.size_bytes, stats.max_size_bytes) == (4, 13000, 9000)
    assert stats.initial_size_bytes == 9000
    assert stats.average_size_bytes == 13000 / 3  # the heartbeat shipped no log
    assert (stats.latency_seconds, stats.miss_count, stats.failure_count) == (6, 0, 0)
    assert stats.health == ReplicationHealth.OK


def test_removing_the_replica_drops_its_records() -> None:
    db, _, replica = _replica()
    asyncio.run(replica.heartbeat(PRIMARY, VM_ID, 7))
    asyncio.run(replica.remove(PRIMARY, VM_ID))
    assert db.cycles.list(VM_ID, int(P)) == []
