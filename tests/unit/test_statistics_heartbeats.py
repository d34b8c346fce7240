"""Statistics of a mostly idle VM: its heartbeats (0-byte successful cycles, no log) count as successes but
do not dilute the average replication size, which is over the cycles that shipped a log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from standby.domain.cycles import CycleKind, CycleOutcome, CycleRecord
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReplicationMode, ReplicationState
from standby.engine.cycle import HEARTBEAT
from standby.engine.statistics import average_log_size, report
from standby.store.sqlite import Database

VM_ID = "6E0D3C2A-1111-4222-8333-944455550002"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
P = RelationshipIndex.PRIMARY


def _record(minute: int, wire: int, *, heartbeat: bool = False,
            outcome: CycleOutcome = CycleOutcome.SUCCESS) -> CycleRecord:
    at = NOW - timedelta(minutes=minute)
    return CycleRecord(VM_ID, int(P), 3, CycleKind.DELTA, outcome, at, at + timedelta(milliseconds=400),
                       dirty_bytes=wire * 2, wire_bytes=wire, latency_ms=400,
                       detail=HEARTBEAT if heartbeat else "")


def _db(records: list[CycleRecord]) -> Database:
    db = Database.memory()
    db.vms.insert(VirtualMachine(VM_ID, "idle", 256, 1, disks=(Disk("d0", "/img/d0.qcow2", 1 << 20),),
                                 replication_mode=ReplicationMode.PRIMARY, created_at=NOW))
    db.relationships.insert(Relationship(VM_ID, P, ReplicationState.REPLICATING,
                                         settings=ReplicationSettings("replica.example", 8443), sequence=3,
                                         last_replication_time=NOW - timedelta(minutes=1)))
    for record in records:
        db.cycles.record(record)
    return db


def test_heartbeats_count_as_successes_but_not_in_the_average_size() -> None:
    records = [_record(40, 6000), _record(30, 0, heartbeat=True), _record(20, 0, heartbeat=True),
               _record(15, 2000), _record(10, 0, heartbeat=True), _record(5, 0, outcome=CycleOutcome.MISS)]
    db = _db(records)
    stats = report(db, db.relationships.get(VM_ID, int(P)), NOW)
    assert (stats.success_count, stats.miss_count) == (5, 1)  # three heartbeats are successful cycles
    assert (stats.size_bytes, stats.max_size_bytes) == (8000, 6000)
    assert stats.average_size_bytes == 4000  # (6000 + 2000) / 2, not / 5


def test_an_idle_window_has_no_average_size() -> None:
    db = _db([_record(20, 0, heartbeat=True), _record(10, 0, heartbeat=True)])
    stats = report(db, db.relationships.get(VM_ID, int(P)), NOW)
    assert (stats.success_count, stats.size_bytes, stats.average_size_bytes) == (2, 0, None)


def test_an_empty_log_is_a_shipped_cycle_and_failures_are_not() -> None:
    records = [_record(20, 120), _record(15, 9000, outcome=CycleOutcome.NETWORK),
               _record(10, 0, heartbeat=True)]
    assert average_log_size(records) == 120
    assert average_log_size([]) is None
