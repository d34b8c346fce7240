"""The replica's own statistics with real qemu-img / qemu-nbd: after N applied logs and a heartbeat the
replica VM's GetReplicationStatistics counts N + 1 successful replications and the logs' bytes as they
arrived; a repeated or out-of-sequence log adds nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from standby.domain.cycles import HEARTBEAT_DETAIL, CycleKind, CycleOutcome
from standby.domain.enums import RelationshipIndex, ReplicationHealth
from standby.domain.replica import OutOfSequence
from standby.engine.apply import ApplyResult
from standby.engine.statistics import report
from standby.storage.logformat import LogKind
from tests.integration.test_apply import PRIMARY, VM_ID, MiB, Rig, build_log, rig, stream

__all__ = ["rig"]  # the replica host of test_apply, used as a fixture here

P = RelationshipIndex.PRIMARY
DELTA = {"disk0": [(1 * MiB, 64 * 1024), (9 * MiB, 100 * 1024)], "disk1": [(1 * MiB, 4096)]}


def _ship(rig: Rig, sequence: int, parent: int, kind: LogKind) -> tuple[ApplyResult, int]:
    """Apply one log built from the sources; (the answer, the log's size in bytes)."""
    chunks = build_log(rig.sources, sequence, parent, kind, None if kind is LogKind.INITIAL else DELTA,
                       app=False, extra={}, cut_time=rig.clock.now)

    async def put() -> ApplyResult:
        result = await rig.replica.put_log(PRIMARY, VM_ID, sequence, stream(chunks))
        await rig.replica.applier.settled(VM_ID)
        return result

    return asyncio.run(put()), len(b"".join(chunks))


def test_applied_logs_and_a_heartbeat_count_on_the_replica(rig: Rig) -> None:
    sizes = []
    for sequence in (1, 2, 3):
        rig.clock.now += timedelta(minutes=1)
        result, size = _ship(rig, sequence, sequence - 1, LogKind.INITIAL if sequence == 1 else LogKind.DELTA)
        assert result.applied
        sizes.append(size)
    rig.clock.now += timedelta(minutes=1)
    assert asyncio.run(rig.replica.heartbeat(PRIMARY, VM_ID, 3)) == 3

    # Neither a repeat of the head nor a log out of sequence is a replication the replica received.
    repeat, _ = _ship(rig, 3, 2, LogKind.DELTA)
    assert not repeat.applied
    with pytest.raises(OutOfSequence):
        _ship(rig, 9, 8, LogKind.DELTA)

    records = rig.db.cycles.list(VM_ID, int(P))
    assert [(r.sequence, r.kind, r.outcome, r.wire_bytes) for r in records] == [
        (1, CycleKind.INITIAL, CycleOutcome.SUCCESS, sizes[0]),
        (2, CycleKind.DELTA, CycleOutcome.SUCCESS, sizes[1]),
        (3, CycleKind.DELTA, CycleOutcome.SUCCESS, sizes[2]),
        (3, CycleKind.DELTA, CycleOutcome.SUCCESS, 0),
    ]
    assert records[-1].detail == HEARTBEAT_DETAIL and all(r.dirty_bytes > 0 for r in records[:3])

    stats = report(rig.db, rig.db.relationships.get(VM_ID, int(P)), rig.clock.now)
    assert stats.success_count == 4
    assert (stats.size_bytes, stats.max_size_bytes, stats.initial_size_bytes) == (
        sum(sizes), max(sizes), sizes[0])
    assert stats.average_size_bytes == sum(sizes) / 3
    assert stats.last_replication_time == rig.clock.now
    assert stats.health == ReplicationHealth.OK
