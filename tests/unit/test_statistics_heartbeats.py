"""Statistics of a mostly idle VM: its heartbeats (0-byte successful cycles, no log) count as successes but
do not dilute the average replication size or latency, which are over the cycles that shipped a log."""

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
            outcome: CycleOutcome = CycleOutcome.SUCCESS, latency_ms: int = 400) -> CycleRecord:
    at = NOW - timedelta(minutes=minute)
    end = at + timedelta(milliseconds=latency_ms)
    return CycleRecord(VM_ID, int(P), 3, CycleKind.DELTA, outcome, at, end,
                       dirty_bytes=wire * 2, wire_bytes=wire, latency_ms=latency_ms,
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


def test_the_average_latency_is_over_the_shipped_cycles_and_the_max_over_all() -> None:
    # A slow link: logs take 9 s and 5 s; twenty quick heartbeats (each counted as a whole second) must not
    # pull the average down to ~1.6 s and hide it from the latency health rule.
    records = [_record(50, 6000, latency_ms=9000), _record(40, 2000, latency_ms=4200)]
    records += [_record(30 - minute, 0, heartbeat=True, latency_ms=30) for minute in range(20)]
    db = _db(records)
    stats = report(db, db.relationships.get(VM_ID, int(P)), NOW)
    assert stats.success_count == 22
    assert stats.average_latency_seconds == 7.0  # (9 + 5) / 2
    assert (stats.latency_seconds, stats.max_latency_seconds) == (34, 9)  # totals and max count every cycle


def test_an_idle_window_has_no_average_latency() -> None:
    db = _db([_record(20, 0, heartbeat=True, latency_ms=2500)])
    stats = report(db, db.relationships.get(VM_ID, int(P)), NOW)
    assert stats.average_latency_seconds is None and stats.max_latency_seconds == 3
