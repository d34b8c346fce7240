"""The cycle logic over fakes of capture and peer: outcomes, abort/commit, intent recovery, statistics,
bandwidth throttling with an injected clock, initial replication, export and resync."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import xxhash

from standby.domain.cycles import CycleKind, CycleOutcome, bitmap_name
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.domain.errors import InvalidState, NotSupported, StandbyError, Unavailable
from standby.domain.replica import OutOfSequence
from standby.engine.capture import Cut, ReadMode, TrackingLost
from standby.engine.cycle import (
    EXPORT_LOG,
    EXPORT_MANIFEST,
    HEARTBEAT,
    CycleRunner,
    export_folder,
    heartbeat_possible,
)
from standby.engine.statistics import report, success_keeps_health, verdict
from standby.peer.client import LogAck, ReplicaState
from standby.storage.logformat import LogDecoder, LogKind
from standby.store.sqlite import Database

VM_ID = "6E0D3C2A-1111-4222-8333-944455556666"
SIZE = 4 << 20
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
P = RelationshipIndex.PRIMARY


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.mono = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds


@dataclass
class FakeReader:
    capture: FakeCapture
    cut: Cut

    def blocks(self, mode: ReadMode = ReadMode.DELTA,
               ranges: dict[str, list[tuple[int, int]]] | None = None,
               ) -> Iterator[tuple[int, int, bytes, int]]:
        data = self.capture.content
        if mode is ReadMode.DELTA:
            todo = sorted(self.capture.shipping)
        elif mode is ReadMode.FULL:
            todo = [(o, 65536) for o in range(0, SIZE, 65536) if data[o:o + 65536].strip(b"\0")]
        else:
            todo = (ranges or {}).get("d0", [])
        for offset, length in todo:
            yield 0, offset, bytes(data[offset:offset + length]), length

    def hashes(self, disk: Disk, block_size: int) -> bytes:
        return block_hashes(bytes(self.capture.content), block_size)


@dataclass
class FakeCapture:
    """One disk in memory; ``dirty`` ranges since the last cut, ``shipping`` the ranges of the open cut."""

    content: bytearray = field(default_factory=lambda: bytearray(SIZE))
    dirty: set[tuple[int, int]] = field(default_factory=set)
    shipping: set[tuple[int, int]] = field(default_factory=set)
    bitmaps: list[int] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    lost: bool = False
    online: bool = True
    counted: list[int] = field(default_factory=list)  # the sequences whose dirty count was read

    def write(self, offset: int, data: bytes) -> None:
        self.content[offset:offset + len(data)] = data
        self.dirty.add((offset, len(data)))

    async def tracking(self, vm_id: str, disks: Any) -> int | None:
        if self.lost:
            raise TrackingLost("lost", message_id="TrackingLost", disk="d0")
        return max(self.bitmaps) if self.bitmaps else None

    async def dirty_bytes(self, vm_id: str, disks: Any, sequence: int) -> int | None:
        self.counted.append(sequence)
        if not self.online or not self.bitmaps or sequence != max(self.bitmaps):
            return None
        # the recording bitmap holds the writes since the cut and, after an abort, the merged-back ones
        return sum(length for _, length in self.dirty | self.shipping)

    async def cut(self, vm_id: str, disks: Any, sequence: int, *, previous: int | None, now: datetime,
                  app_consistent: bool = False) -> Cut:
        self.calls.append(f"cut {sequence} prev {previous}")
        if previous is None:
            self.bitmaps, self.lost = [], False
        self.shipping, self.dirty = self.dirty | self.shipping, set()
        self.bitmaps.append(sequence)
        return Cut(vm_id, sequence, previous, tuple(disks), now, True, Path("/nonexistent"), app_consistent)

    @contextlib.asynccontextmanager
    async def reader(self, cut: Cut) -> AsyncIterator[FakeReader]:
        yield FakeReader(self, cut)

    async def commit(self, vm_id: str, disks: Any, sequence: int) -> None:
        self.calls.append(f"commit {sequence}")
        self.shipping = set()
        self.bitmaps = [s for s in self.bitmaps if s >= sequence]

    async def abort(self, vm_id: str, disks: Any, sequence: int) -> None:
        self.calls.append(f"abort {sequence}")
        # merge back: what was being shipped stays to ship (kept in ``shipping``, unioned at the next cut)
        self.bitmaps = [s for s in self.bitmaps if s >= sequence] or self.bitmaps


@dataclass
class FakePeer:
    replica: bytearray = field(default_factory=lambda: bytearray(SIZE))
    head: int = 0
    fail: StandbyError | None = None
    logs: list[tuple[int, int, LogKind, int]] = field(default_factory=list)  # seq, parent, kind, bytes
    received: int = 0
    heartbeats: list[int] = field(default_factory=list)
    #: Answer logs without applying them, as a replica whose head is elsewhere does (``repeat``).
    refuse_with: LogAck | None = None

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> LogAck:
        decoder = LogDecoder()
        writes = []
        async for chunk in chunks:
            self.received += len(chunk)
            writes.extend(decoder.feed(chunk))
            if self.fail is not None:
                raise self.fail
        decoder.finish()
        assert decoder.header is not None
        if self.refuse_with is not None:
            return self.refuse_with
        for frame in writes:
            self.replica[frame.offset:frame.offset + frame.length] = frame.data or bytes(frame.length)
        self.logs.append((sequence, decoder.header.parent_sequence, decoder.header.kind, len(writes)))
        self.head = sequence
        return LogAck(sequence, None)

    async def heartbeat(self, vm_id: str, sequence: int) -> int:
        if self.fail is not None:
            raise self.fail
        if sequence != self.head:
            raise OutOfSequence(self.head, f"heartbeat for {sequence}, head is {self.head}")
        self.heartbeats.append(sequence)
        return self.head

    async def hashes(self, vm_id: str, disk_id: str, block_size: int) -> bytes:
        return block_hashes(bytes(self.replica), block_size)

    async def replica_status(self, vm_id: str) -> ReplicaState:
        return ReplicaState(vm_id, ReplicationState.REPLICATING, self.head)


def block_hashes(data: bytes, block: int) -> bytes:
    pieces = [data[i:i + block] for i in range(0, len(data), block)]
    return b"".join(xxhash.xxh3_128_digest(p) if p.strip(b"\0") else bytes(16) for p in pieces)


@dataclass
class World:
    db: Database
    clock: Clock
    capture: FakeCapture
    peer: FakePeer
    runner: CycleRunner

    def rel(self) -> Relationship:
        return self.db.relationships.get(VM_ID, int(P))

    def run(self, kind: CycleKind = CycleKind.DELTA, **kwargs: Any) -> Any:
        return asyncio.run(self.runner.run(VM_ID, P, kind, **kwargs))


def make_world(state: ReplicationState = ReplicationState.REPLICATING, *, sequence: int = 3,
               settings: ReplicationSettings | None = None, local: time = time(12, 0)) -> World:
    db = Database.memory()
    db.vms.insert(VirtualMachine(VM_ID, "web01", 256, 1, disks=(Disk("d0", "/img/d0.qcow2", SIZE),),
                                 replication_mode=ReplicationMode.PRIMARY, created_at=NOW))
    db.relationships.insert(Relationship(
        VM_ID, P, state, settings=settings or ReplicationSettings("replica.example", 8443), sequence=sequence,
        last_replication_time=NOW - timedelta(minutes=1) if sequence else None))
    clock = Clock()
    capture = FakeCapture(bitmaps=[sequence] if sequence else [])
    peer = FakePeer(head=sequence)
    runner = CycleRunner(db, capture, lambda settings: peer, clock, monotonic=clock.monotonic,  # type: ignore[arg-type]
                         sleep=clock.sleep, local_time=lambda: local)
    return World(db, clock, capture, peer, runner)


def test_a_cycle_ships_the_dirty_blocks_and_commits() -> None:
    world = make_world()
    world.capture.write(65536, b"\x11" * 65536)
    world.capture.write(3 * 65536, bytes(65536))  # zeros travel as a zero frame
    result = world.run()
    assert result.outcome is CycleOutcome.SUCCESS and result.sequence == 4
    assert world.capture.calls == ["cut 4 prev 3", "commit 4"]
    assert world.peer.logs == [(4, 3, LogKind.DELTA, 2)]
    assert world.peer.replica == world.capture.content
    rel = world.rel()
    assert (rel.sequence, rel.intent, rel.last_replication_time) == (4, None, NOW)
    assert rel.last_replication_type is ReplicationType.REGULAR
    assert result.dirty_bytes == 2 * 65536 and 0 < result.wire_bytes < 65536  # compressed + a zero frame
    [record] = world.db.cycles.list(VM_ID, int(P))
    assert (record.outcome, record.dirty_bytes, record.wire_bytes) == (CycleOutcome.SUCCESS, 2 * 65536,
                                                                       result.wire_bytes)


def test_a_network_failure_aborts_and_the_next_cycle_ships_everything() -> None:
    world = make_world()
    world.capture.write(0, b"\x22" * 65536)
    world.peer.fail = Unavailable("replica down")
    result = world.run()
    assert result.outcome is CycleOutcome.NETWORK
    assert world.capture.calls == ["cut 4 prev 3", "abort 4"]
    rel = world.rel()
    assert (rel.sequence, rel.intent, rel.state) == (3, None, ReplicationState.REPLICATING)
    world.peer.fail = None
    world.capture.write(8 * 65536, b"\x33" * 65536)
    result = world.run()
    assert result.outcome is CycleOutcome.SUCCESS and result.sequence == 5  # sequence 4 is never reused
    assert world.peer.logs == [(5, 3, LogKind.DELTA, 2)]  # parent: the last acknowledged cut
    assert world.peer.replica == world.capture.content  # the aborted cut's block arrived too
    stats = report(world.db, world.rel(), NOW)
    assert (stats.success_count, stats.network_failure_count, stats.failure_count) == (1, 1, 0)


def test_out_of_sequence_and_lost_tracking_require_a_resync() -> None:
    world = make_world()
    world.capture.write(0, b"\x21" * 65536)  # a log, not a heartbeat (see the heartbeat tests below)
    world.peer.fail = InvalidState("parent 3 is not the head", message_id="LogOutOfSequence")
    assert world.run().outcome is CycleOutcome.FAILURE
    assert world.rel().state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
    assert world.rel().health is ReplicationHealth.CRITICAL

    world = make_world()
    world.capture.lost = True
    assert world.run().outcome is CycleOutcome.FAILURE
    assert world.capture.calls == []  # nothing cut
    assert world.rel().state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION


def test_a_log_the_replica_did_not_take_is_not_counted_as_shipped() -> None:
    world = make_world()
    before = world.rel().sequence
    world.capture.write(0, b"\x21" * 65536)
    # Someone else's point sits at the replica's head: it answers "repeat, not applied" with that head.
    world.peer.refuse_with = LogAck(1000, "P1000", applied=False)
    result = world.run()
    assert result.outcome is CycleOutcome.FAILURE and "head 1000" in result.detail
    rel = world.rel()
    assert (rel.sequence, rel.intent) == (before, None)  # nothing acknowledged
    assert rel.state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
    assert rel.health is ReplicationHealth.CRITICAL
    assert world.capture.calls[-1].startswith("abort")  # the cut's changes stay tracked for the resync


@pytest.mark.parametrize("answer", [LogAck(4, "P4", applied=False), LogAck(3, None, applied=False,
                                                                           kept_aside=True)],
                         ids=["repeat of this log", "kept aside while failed over"])
def test_a_repeat_of_this_very_log_or_one_kept_aside_counts_as_shipped(answer: LogAck) -> None:
    world = make_world()
    world.capture.write(0, b"\x21" * 65536)
    world.peer.refuse_with = answer
    result = world.run()
    assert (result.outcome, result.sequence) == (CycleOutcome.SUCCESS, 4)
    assert (world.rel().sequence, world.rel().state) == (4, ReplicationState.REPLICATING)


def test_a_resync_applies_on_top_of_whatever_head_the_replica_has() -> None:
    world = make_world(ReplicationState.RESYNCHRONIZING)
    world.peer.head = 1000  # a point this primary never sent
    world.capture.write(0, b"\x21" * 65536)
    result = world.run(CycleKind.RESYNC)
    assert (result.outcome, result.sequence) == (CycleOutcome.SUCCESS, 1001)
    sequence, parent, kind, _ = world.peer.logs[-1]
    assert (sequence, parent, kind) == (1001, 1000, LogKind.RESYNC)
    assert world.peer.replica == world.capture.content
    assert (world.rel().sequence, world.rel().state) == (1001, ReplicationState.REPLICATING)


def test_a_half_done_cycle_found_at_start_up_is_aborted() -> None:
    world = make_world()
    world.db.relationships.update(replace(world.rel(), intent="cycle:7"))
    settled = asyncio.run(world.runner.recover())
    assert settled == [VM_ID]
    assert world.capture.calls == ["abort 7"]
    assert world.rel().intent is None and world.rel().state is ReplicationState.REPLICATING
    # the next cycle never reuses the interrupted sequence
    world.db.relationships.update(replace(world.rel(), intent="cycle:7"))
    world.capture.calls.clear()
    assert world.run().sequence == 8


def test_bandwidth_schedule_throttles_with_a_token_bucket() -> None:
    rate = 1 << 20
    settings = ReplicationSettings("replica.example", 8443, compression_enabled=False,
                                   bandwidth_schedule=((time(8, 0), time(18, 0), rate),))
    world = make_world(settings=settings)
    noise = bytes((i * 7919) % 251 for i in range(65536))
    for i in range(48):  # 3 MiB of incompressible-ish data at 1 MiB/s: one second of burst, two of waiting
        world.capture.write(i * 65536, noise)
    world.run()
    assert 1.9 < sum(world.clock.slept) < 2.2
    # outside the window nothing waits
    night = make_world(settings=settings, local=time(22, 0))
    for i in range(48):
        night.capture.write(i * 65536, noise)
    night.run()
    assert night.clock.slept == []


def test_initial_replication_is_thin_and_export_writes_a_folder(tmp_path: Path) -> None:
    world = make_world(ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, sequence=0)
    world.capture.write(2 * 65536, b"\x44" * 65536)
    percents: list[int] = []
    result = world.run(CycleKind.INITIAL, progress=percents.append)
    assert result.sequence == 1 and world.peer.logs == [(1, 0, LogKind.INITIAL, 1)]
    assert world.capture.calls == ["cut 1 prev None", "commit 1"]
    assert world.rel().state is ReplicationState.REPLICATING and percents

    export = make_world(ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, sequence=0)
    export.capture.write(0, b"\x55" * 65536)
    export.run(CycleKind.INITIAL, export_dir=tmp_path)
    folder = export_folder(tmp_path, export.db.vms.get(VM_ID))
    assert folder.name == f"web01_{VM_ID}"
    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    assert manifest["sequence"] == 1 and manifest["disks"] == [{"disk_id": "d0", "size": SIZE}]
    decoder = LogDecoder()
    frames = decoder.feed((folder / EXPORT_LOG).read_bytes())
    assert decoder.finish().frames == 1 and frames[0].data == b"\x55" * 65536
    rel = export.rel()  # waits for the replica's import: still state 2, no deltas yet
    assert rel.state is ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION and rel.intent == "export:1"
    assert export.peer.logs == []


def test_a_failed_initial_replication_goes_back_to_ready() -> None:
    world = make_world(ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, sequence=0)
    world.peer.fail = Unavailable("down")
    with pytest.raises(Unavailable):
        world.run(CycleKind.INITIAL)
    assert world.rel().state is ReplicationState.READY_FOR_REPLICATION
    assert world.capture.calls == ["cut 1 prev None", "abort 1"]


def test_resync_sends_only_the_blocks_whose_hashes_differ() -> None:
    world = make_world(ReplicationState.RESYNCHRONIZING)
    for i in range(16):
        world.capture.write(i * 256 * 1024, bytes([i + 1]) * 1000)
    world.peer.replica[:] = world.capture.content
    world.peer.replica[5 * 256 * 1024] = 0xFF  # one damaged block on the replica
    world.capture.write(9 * 256 * 1024 + 7, b"new")  # one change the replica never got
    result = world.run(CycleKind.RESYNC)
    assert world.capture.calls[0] == "cut 4 prev None"  # fresh tracking
    assert result.dirty_bytes == 2 * 256 * 1024
    assert world.peer.replica == world.capture.content
    assert world.rel().state is ReplicationState.REPLICATING and world.capture.bitmaps == [4]
    assert world.peer.logs[-1][2] is LogKind.RESYNC


def test_statistics_cover_every_field_and_reset() -> None:
    world = make_world()
    for i in range(3):
        world.capture.write(i * 65536, b"\x66" * 65536)
        world.run()
    world.peer.fail = Unavailable("down")
    world.capture.write(0, b"\x77" * 65536)
    world.run()
    world.runner.record_miss(VM_ID, P)
    stats = report(world.db, world.rel(), NOW)
    assert stats.success_count == 3 and stats.miss_count == 1 and stats.network_failure_count == 1
    successes = [r for r in world.db.cycles.list(VM_ID, int(P)) if r.outcome is CycleOutcome.SUCCESS]
    assert stats.size_bytes == sum(r.wire_bytes for r in successes)
    assert stats.max_size_bytes > 0 and stats.pending_bytes == 65536
    assert stats.average_size_bytes == stats.size_bytes / 3
    assert stats.health in (ReplicationHealth.OK, ReplicationHealth.WARNING)
    world.db.cycles.reset(VM_ID, int(P), NOW + timedelta(seconds=1))
    cleared = report(world.db, world.rel(), NOW + timedelta(seconds=2))
    assert (cleared.success_count, cleared.miss_count, cleared.size_bytes) == (0, 0, 0)


def test_bitmap_names_round_trip() -> None:
    assert bitmap_name(12) == "rep-12"


# -- idle cycles: a heartbeat instead of a log ------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CycleKind))
@pytest.mark.parametrize("app_due", [False, True])
@pytest.mark.parametrize("tracked", [3, 4, None])
def test_heartbeat_possible_only_for_a_plain_delta_with_the_acknowledged_bitmap(
        kind: CycleKind, app_due: bool, tracked: int | None) -> None:
    possible = heartbeat_possible(kind, state=ReplicationState.REPLICATING, tracked=tracked, acknowledged=3,
                                  pending=None, app_consistent_due=app_due, special=False)
    assert possible is (kind is CycleKind.DELTA and not app_due and tracked == 3)


@pytest.mark.parametrize(("state", "pending", "special", "acknowledged"), [
    (ReplicationState.RESYNCHRONIZING, None, False, 3),
    (ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, None, False, 3),
    (ReplicationState.REPLICATING, "cycle:4", False, 3),  # a cut is pending: it ships
    (ReplicationState.REPLICATING, None, True, 3),  # an export, a given resync diff or a group's cut
    (ReplicationState.REPLICATING, None, False, 0),  # nothing acknowledged yet
])
def test_no_heartbeat_outside_plain_replication(state: ReplicationState, pending: str | None, special: bool,
                                                acknowledged: int) -> None:
    assert not heartbeat_possible(CycleKind.DELTA, state=state, tracked=acknowledged,
                                  acknowledged=acknowledged, pending=pending, app_consistent_due=False,
                                  special=special)


def test_a_clean_cycle_sends_a_heartbeat_and_cuts_nothing() -> None:
    world = make_world()
    world.clock.now = NOW + timedelta(seconds=30)
    result = world.run()
    assert (result.outcome, result.sequence, result.dirty_bytes, result.wire_bytes, result.detail) == (
        CycleOutcome.SUCCESS, 3, 0, 0, HEARTBEAT)
    assert world.capture.calls == [] and world.capture.counted == [3]
    assert world.peer.heartbeats == [3] and world.peer.logs == []
    rel = world.rel()
    assert (rel.sequence, rel.intent, rel.state) == (3, None, ReplicationState.REPLICATING)
    assert rel.last_replication_time == NOW + timedelta(seconds=30)  # moved on from a minute before NOW
    assert rel.last_replication_type is ReplicationType.NONE  # as the fixture left it: no new cut
    assert rel.health is ReplicationHealth.OK
    [record] = world.db.cycles.list(VM_ID, int(P))
    assert (record.outcome, record.dirty_bytes, record.wire_bytes, record.detail) == (
        CycleOutcome.SUCCESS, 0, 0, HEARTBEAT)
    stats = report(world.db, world.rel(), NOW + timedelta(seconds=30))
    assert (stats.success_count, stats.size_bytes, stats.pending_bytes) == (1, 0, 0)


def test_a_write_ships_with_the_next_cycle_and_then_heartbeats_resume() -> None:
    world = make_world()
    world.run()
    world.capture.write(5 * 65536, b"\x5a" * 65536)
    shipped = world.run()
    assert shipped.sequence == 4 and shipped.dirty_bytes == 65536 and shipped.detail == ""
    assert world.peer.logs == [(4, 3, LogKind.DELTA, 1)] and world.peer.replica == world.capture.content
    idle = world.run()
    assert idle.detail == HEARTBEAT and idle.sequence == 4
    assert world.peer.heartbeats == [3, 4] and world.capture.calls == ["cut 4 prev 3", "commit 4"]


def test_an_app_consistent_cut_due_is_taken_even_when_clean() -> None:
    settings = ReplicationSettings("replica.example", 8443, app_consistent_interval_hours=1)
    world = make_world(settings=settings)
    result = world.run()
    assert world.capture.calls == ["cut 4 prev 3", "commit 4"] and world.peer.heartbeats == []
    assert result.detail == "" and world.peer.logs == [(4, 3, LogKind.DELTA, 0)]


@pytest.mark.parametrize("kind", [CycleKind.PLANNED, CycleKind.RESYNC])
def test_planned_and_resync_cycles_ship_even_when_clean(kind: CycleKind) -> None:
    world = make_world()
    world.run(kind)
    assert world.capture.calls[0].startswith("cut 4") and world.peer.heartbeats == []
    assert world.capture.counted == []


def test_after_an_aborted_cut_the_next_cycle_ships_whatever_the_count() -> None:
    world = make_world()
    world.capture.bitmaps = [4]  # cut 4 was aborted: rep-3 merged into rep-4, maybe nothing in it
    result = world.run()
    assert world.capture.counted == [] and world.peer.heartbeats == []
    assert result.sequence == 5 and world.peer.logs == [(5, 3, LogKind.DELTA, 0)]


def test_an_off_vm_is_cut_as_before() -> None:
    world = make_world()
    world.capture.online = False  # its bitmaps are in the images: counting them is not cheap
    world.run()
    assert world.capture.calls == ["cut 4 prev 3", "commit 4"] and world.peer.heartbeats == []


def test_a_replica_without_the_heartbeat_route_gets_a_cut_instead() -> None:
    world = make_world()

    async def no_route(vm_id: str, sequence: int) -> int:
        raise NotSupported("the replica does not know POST /heartbeat", message_id="PeerRouteMissing")

    world.peer.heartbeat = no_route  # type: ignore[method-assign]
    result = world.run()
    assert (result.outcome, result.sequence, result.detail) == (CycleOutcome.SUCCESS, 4, "")
    assert world.capture.calls == ["cut 4 prev 3", "commit 4"]
    assert world.peer.logs == [(4, 3, LogKind.DELTA, 0)] and world.rel().sequence == 4


def test_a_heartbeat_out_of_sequence_requires_a_resync() -> None:
    world = make_world()
    world.peer.head = 2  # the replica lost point 3
    result = world.run()
    assert result.outcome is CycleOutcome.FAILURE and "out of sequence" in result.detail
    assert world.capture.calls == []
    rel = world.rel()
    assert rel.state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION and rel.intent is None
    assert rel.health is ReplicationHealth.CRITICAL


def test_an_unreachable_replica_fails_the_heartbeat_as_a_network_failure() -> None:
    world = make_world()
    world.peer.fail = Unavailable("replica down")
    result = world.run()
    assert result.outcome is CycleOutcome.NETWORK and result.sequence == 3
    rel = world.rel()
    assert (rel.state, rel.intent, rel.last_replication_time) == (
        ReplicationState.REPLICATING, None, NOW - timedelta(minutes=1))
    stats = report(world.db, rel, NOW)
    assert (stats.success_count, stats.network_failure_count, stats.pending_bytes) == (0, 1, 0)


@pytest.mark.parametrize(("health", "latency_ms", "keeps"), [
    (ReplicationHealth.OK, 5, True),
    (ReplicationHealth.OK, 300_000, True),  # 300 s: at the 5-minute bound, still within it
    (ReplicationHealth.OK, 300_001, False),  # rounds up to 301 s: could raise the average over the bound
    (ReplicationHealth.WARNING, 5, False),  # a success may mend a Warning: recompute
    (ReplicationHealth.CRITICAL, 5, False),
])
def test_a_success_skips_the_health_refresh_only_when_it_cannot_change_it(
        health: ReplicationHealth, latency_ms: int, keeps: bool) -> None:
    assert success_keeps_health(health, latency_ms, 30) is keeps


def test_stored_health_stays_what_a_full_refresh_says() -> None:
    world = make_world()
    steps = ["beat", "write", "fail", "fail", "fail", "beat", "miss", "miss", "miss", "beat", "beat"]
    for step in steps:
        world.clock.now += timedelta(seconds=30)
        if step == "miss":
            world.runner.record_miss(VM_ID, P)
            continue
        world.peer.fail = Unavailable("down") if step == "fail" else None
        if step == "write":
            world.capture.write(0, b"\x31" * 65536)
        world.run()
        assert world.rel().health is verdict(world.db, world.rel(), world.clock.now).health, step
    assert world.rel().health is ReplicationHealth.WARNING  # 3 of 11 cycles missed: over 20 %
