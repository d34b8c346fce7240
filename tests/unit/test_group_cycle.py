"""Group cycles over fakes of capture, pauser and peer: the order of pause / transactions / resume, the
measured pause, one tag in every member's log, failures, and the replica side's collection-point assembly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from standby.domain.cycles import CycleOutcome
from standby.domain.entities import (
    Collection,
    Disk,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import Unavailable
from standby.domain.groups import CUT_TAG_KEY, CutTag, GroupOutcome
from standby.engine.capture import Cut, ReadMode
from standby.engine.cycle import CycleRunner
from standby.engine.group_cycle import CollectionUnits, GroupCycle, PointAssembler
from standby.peer.client import LogAck
from standby.storage.logformat import DiskInfo, LogDecoder, LogHeader, LogKind
from standby.store.sqlite import Database

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SIZE = 1 << 20
VMS = ("AAAAAAAA-0000-4000-8000-000000000001", "BBBBBBBB-0000-4000-8000-000000000002",
       "CCCCCCCC-0000-4000-8000-000000000003")
GROUP = "GROUP-1"
P = RelationshipIndex.PRIMARY


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.mono = 100.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Reader:
    capture: FakeCapture
    cut: Cut

    def blocks(self, mode: ReadMode = ReadMode.DELTA,
               ranges: Any = None) -> Iterator[tuple[int, int, bytes, int]]:
        yield 0, 0, bytes([self.cut.sequence % 251 + 1]) * 65536, 65536


@dataclass
class FakeCapture:
    """Bitmaps per VM; every call logged in order (shared with the pauser)."""

    log: list[str]
    clock: Clock
    bitmaps: dict[str, int] = field(default_factory=dict)
    fail_transaction: str | None = None
    off: set[str] = field(default_factory=set)

    def running(self, vm_id: str) -> bool:
        return vm_id not in self.off

    async def tracking(self, vm_id: str, disks: Any) -> int | None:
        return self.bitmaps.get(vm_id)

    async def prepare_cut(self, vm_id: str, disks: Any, sequence: int, *, previous: int | None,
                          now: datetime) -> Cut:
        self.log.append(f"prepare {vm_id[:1]}")
        return Cut(vm_id, sequence, previous, tuple(disks), now, self.running(vm_id), Path("/nonexistent"))

    async def transact_cut(self, cut: Cut) -> None:
        self.clock.mono += 0.004  # each transaction takes 4 ms of the pause
        if cut.vm_id == self.fail_transaction:
            raise Unavailable("QMP went away", message_id="QmpFailed")
        self.log.append(f"transact {cut.vm_id[:1]}")
        self.bitmaps[cut.vm_id] = cut.sequence

    async def export_cut(self, cut: Cut) -> None:
        self.log.append(f"export {cut.vm_id[:1]}")

    async def freeze(self, vm_id: str) -> Any:
        self.log.append(f"freeze {vm_id[:1]}")
        return object()

    async def thaw(self, agent: Any, vm_id: str) -> None:
        self.log.append(f"thaw {vm_id[:1]}")

    @contextlib.asynccontextmanager
    async def reader(self, cut: Cut) -> AsyncIterator[Reader]:
        yield Reader(self, cut)

    async def commit(self, vm_id: str, disks: Any, sequence: int) -> None:
        self.log.append(f"commit {vm_id[:1]} {sequence}")

    async def abort(self, vm_id: str, disks: Any, sequence: int) -> None:
        self.log.append(f"abort {vm_id[:1]} {sequence}")


@dataclass
class FakePauser:
    log: list[str]
    user_paused: set[str] = field(default_factory=set)
    clock: Clock | None = None
    fail_stop: str | None = None
    cancel_at_stop: str | None = None
    outer: asyncio.Task[Any] | None = None

    async def running(self, vm_id: str) -> bool:
        if self.clock is not None:
            self.clock.mono += 0.002  # asked before the window: must not count in the pause
        self.log.append(f"status {vm_id[:1]}")
        return vm_id not in self.user_paused

    async def stop(self, vm_id: str) -> None:
        self.log.append(f"stop {vm_id[:1]}")
        await asyncio.sleep(0)  # let the other members' stops interleave, as replies would
        if vm_id == self.fail_stop:
            raise Unavailable("the monitor did not answer", message_id="QmpUnavailable")
        if vm_id == self.cancel_at_stop and self.outer is not None:
            self.outer.cancel()  # e.g. the scheduler stopping while the members are paused
            await asyncio.sleep(1)

    async def cont(self, vm_id: str) -> None:
        self.log.append(f"cont {vm_id[:1]}")


@dataclass
class FakePeer:
    headers: dict[str, LogHeader] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> LogAck:
        decoder = LogDecoder()
        async for chunk in chunks:
            decoder.feed(chunk)
        decoder.finish()
        if vm_id in self.down:
            raise Unavailable("replica down", message_id="PeerUnreachable", target="b", reason="down")
        assert decoder.header is not None
        self.headers[vm_id] = decoder.header
        return LogAck(sequence, None)


@dataclass
class World:
    db: Database
    clock: Clock
    log: list[str]
    capture: FakeCapture
    peer: FakePeer
    cycle: GroupCycle
    runner: CycleRunner

    def run(self) -> Any:
        return asyncio.run(self.cycle.run(GROUP))


def make_world(app_hours: int = 0) -> World:
    db = Database.memory()
    clock = Clock()
    log: list[str] = []
    capture = FakeCapture(log, clock, {vm: 5 for vm in VMS})
    settings = ReplicationSettings("replica.example", 8443, app_consistent_interval_hours=app_hours,
                                   recovery_history=max(app_hours, 0))
    for number, vm_id in enumerate(VMS):
        disks = (Disk("d0", f"/img/{number}", SIZE),)
        db.vms.insert(VirtualMachine(vm_id, f"vm{number}", 128, 1, disks=disks,
                                     replication_mode=ReplicationMode.PRIMARY, created_at=NOW))
        db.relationships.insert(Relationship(vm_id, P, ReplicationState.REPLICATING, settings=settings,
                                             sequence=5, last_replication_time=NOW))
    db.collections.insert(Collection(GROUP, "web tier", VMS, ReplicationMode.PRIMARY,
                                     CollectionReplicationState.REPLICATING))
    peer = FakePeer()
    runner = CycleRunner(db, capture, lambda settings: peer, clock, monotonic=clock.monotonic)  # type: ignore[arg-type]
    cycle = GroupCycle(db, runner, capture, FakePauser(log), clock, monotonic=clock.monotonic)
    return World(db, clock, log, capture, peer, cycle, runner)


def test_every_member_pauses_once_around_the_transactions_only() -> None:
    world = make_world()
    result = world.run()
    assert result.outcome is GroupOutcome.SUCCESS, result.detail
    steps = world.log
    last_prepare = max(i for i, s in enumerate(steps) if s.startswith("prepare"))
    last_status = max(i for i, s in enumerate(steps) if s.startswith("status"))
    first_stop = min(i for i, s in enumerate(steps) if s.startswith("stop"))
    transacts = [i for i, s in enumerate(steps) if s.startswith("transact")]
    conts = [i for i, s in enumerate(steps) if s.startswith("cont")]
    exports = [i for i, s in enumerate(steps) if s.startswith("export")]
    assert last_prepare < last_status < first_stop
    for vm in "ABC":  # each member's transaction follows its own stop; nobody resumes before every cut
        assert steps.index(f"stop {vm}") < steps.index(f"transact {vm}") < min(conts)
    assert max(transacts) < min(conts) and max(conts) < min(exports)
    assert len(transacts) == len(conts) == 3
    assert result.pause_ms == pytest.approx(12.0)  # three transactions of 4 ms, nothing else while paused
    assert sorted(s for s in steps if s.startswith("commit")) == ["commit A 6", "commit B 6", "commit C 6"]


def test_every_members_log_carries_the_same_cut_tag_and_the_cycle_is_recorded() -> None:
    world = make_world()
    result = world.run()
    tags = {vm: CutTag.from_extra(header.extra) for vm, header in world.peer.headers.items()}
    assert set(tags) == set(VMS)
    assert len({tag.cut_id for tag in tags.values() if tag}) == 1
    tag = tags[VMS[0]]
    assert tag is not None and tag.members == VMS and tag.collection_id == GROUP
    assert tag.pause_ms == pytest.approx(result.pause_ms) and tag.cut_id == result.cut_id
    [record] = world.db.group_cycles.list(GROUP)
    assert (record.outcome, record.cut_id, record.consistency) == (GroupOutcome.SUCCESS, result.cut_id,
                                                                   ConsistencyLevel.GROUP_CRASH_CONSISTENT)
    assert record.pause_ms == pytest.approx(12.0) and record.wire_bytes == result.wire_bytes > 0
    for vm_id in VMS:
        rel = world.db.relationships.get(vm_id, int(P))
        assert (rel.sequence, rel.intent) == (6, None)


def test_an_app_consistent_group_cut_freezes_every_guest_before_the_pause_and_thaws_after() -> None:
    world = make_world(app_hours=1)
    result = world.run()
    assert result.outcome is GroupOutcome.SUCCESS and result.app_consistent
    steps = world.log
    assert max(i for i, s in enumerate(steps) if s.startswith("freeze")) < \
        min(i for i, s in enumerate(steps) if s.startswith("stop"))
    assert min(i for i, s in enumerate(steps) if s.startswith("thaw")) > \
        max(i for i, s in enumerate(steps) if s.startswith("cont"))
    assert all(h.application_consistent for h in world.peer.headers.values())
    assert world.db.group_cycles.list(GROUP)[0].consistency is ConsistencyLevel.APPLICATION_CONSISTENT


def test_a_failed_transaction_still_resumes_every_paused_member_and_aborts_all_cuts() -> None:
    world = make_world()
    world.capture.fail_transaction = VMS[1]
    result = world.run()
    assert result.outcome is GroupOutcome.NETWORK  # Unavailable from QMP
    assert sorted(s for s in world.log if s.startswith("cont")) == ["cont A", "cont B", "cont C"]
    assert sorted(s for s in world.log if s.startswith("abort")) == ["abort A 6", "abort B 6", "abort C 6"]
    assert not world.peer.headers
    for vm_id in VMS:
        rel = world.db.relationships.get(vm_id, int(P))
        assert (rel.sequence, rel.intent, rel.state) == (5, None, ReplicationState.REPLICATING)


def test_a_member_not_replicating_makes_the_cycle_a_miss_without_pausing_anyone() -> None:
    world = make_world()
    rel = world.db.relationships.get(VMS[2], int(P))
    world.db.relationships.update(replace(rel, state=ReplicationState.SUSPENDED))
    result = world.run()
    assert result.outcome is GroupOutcome.MISS and VMS[2] in result.detail
    assert not world.log
    assert world.db.group_cycles.list(GROUP)[0].outcome is GroupOutcome.MISS


def test_a_member_whose_log_does_not_arrive_fails_the_cycle_naming_it() -> None:
    world = make_world()
    world.peer.down.add(VMS[2])
    result = world.run()
    assert result.outcome is GroupOutcome.NETWORK and VMS[2] in result.detail
    outcomes = {vm: r.outcome for vm, r in result.members}
    assert outcomes[VMS[2]] is CycleOutcome.NETWORK and outcomes[VMS[0]] is CycleOutcome.SUCCESS
    assert "abort C 6" in world.log and "commit A 6" in world.log


def test_the_status_query_stays_out_of_the_pause_window() -> None:
    world = make_world()
    pauser = FakePauser(world.log, clock=world.clock)
    world.cycle = GroupCycle(world.db, world.cycle._runner, world.capture, pauser, world.clock,
                             monotonic=world.clock.monotonic)
    result = world.run()
    assert result.outcome is GroupOutcome.SUCCESS
    assert result.pause_ms == pytest.approx(12.0)  # the three 2 ms status queries came before the window


def test_a_failed_stop_resumes_every_member_a_stop_went_to_and_aborts_all_cuts() -> None:
    world = make_world()
    pauser = FakePauser(world.log, fail_stop=VMS[1])
    world.cycle = GroupCycle(world.db, world.cycle._runner, world.capture, pauser, world.clock,
                             monotonic=world.clock.monotonic)
    result = world.run()
    assert result.outcome is GroupOutcome.NETWORK and "did not answer" in result.detail
    assert "transact B" not in world.log  # no cut of a member that may still run
    # B's stop may have reached QEMU even though its answer did not come back: B is resumed as well.
    assert sorted(s for s in world.log if s.startswith("cont")) == ["cont A", "cont B", "cont C"]
    assert sorted(s for s in world.log if s.startswith("abort")) == ["abort A 6", "abort B 6", "abort C 6"]
    assert not world.peer.headers


def test_a_cycle_cancelled_inside_the_window_resumes_every_member_a_stop_went_to() -> None:
    world = make_world()
    pauser = FakePauser(world.log, cancel_at_stop=VMS[2])
    world.cycle = GroupCycle(world.db, world.cycle._runner, world.capture, pauser, world.clock,
                             monotonic=world.clock.monotonic)

    async def cancelled() -> None:
        pauser.outer = asyncio.create_task(world.cycle.run(GROUP))
        await pauser.outer

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    assert sorted(s for s in world.log if s.startswith("cont")) == ["cont A", "cont B", "cont C"]
    assert sorted(s for s in world.log if s.startswith("abort")) == ["abort A 6", "abort B 6", "abort C 6"]


def test_a_member_its_user_paused_is_not_resumed() -> None:
    world = make_world()
    pauser = FakePauser(world.log, {VMS[1]})
    world.cycle = GroupCycle(world.db, world.cycle._runner, world.capture, pauser, world.clock,
                             monotonic=world.clock.monotonic)
    assert world.run().outcome is GroupOutcome.SUCCESS
    assert "cont B" not in world.log and "transact B" in world.log


def test_an_off_member_is_cut_without_a_pause() -> None:
    world = make_world()
    world.capture.off.add(VMS[0])
    result = world.run()
    assert result.outcome is GroupOutcome.SUCCESS
    assert "stop A" not in world.log and "transact A" not in world.log
    assert result.pause_ms == pytest.approx(8.0)


# -- collections as units of the scheduler (the loop: tests/unit/test_scheduler_units.py) --------------------


def test_a_replicating_primary_collection_claims_its_members() -> None:
    world = make_world()
    units = CollectionUnits(world.db, world.cycle, world.runner, lambda vm: EnabledState.ENABLED, world.clock)
    assert all(units.claims(vm) for vm in VMS)
    world.db.collections.update(Collection(GROUP, "web tier", VMS, ReplicationMode.NONE,
                                           CollectionReplicationState.DISABLED, version=0))
    assert not any(units.claims(vm) for vm in VMS)


# -- the replica side: collection points appear only when every member's log is applied ----------------------


def _replica_db() -> Database:
    db = Database.memory()
    for number, vm_id in enumerate(VMS):
        db.vms.insert(VirtualMachine(vm_id, f"vm{number}", 128, 1, replication_mode=ReplicationMode.REPLICA,
                                     created_at=NOW))
    return db


def _header(vm_id: str, tag: CutTag, sequence: int) -> LogHeader:
    return LogHeader(vm_id, 0, sequence, sequence - 1, LogKind.DELTA, NOW.isoformat(),
                     (DiskInfo("d0", SIZE),), extra={CUT_TAG_KEY: tag.to_extra()})


def _applied(db: Database, assembler: PointAssembler, vm_id: str, tag: CutTag, sequence: int, *,
             kind: VirtualSystemType = VirtualSystemType.REPLICA_STANDARD) -> RecoveryPoint:
    point = RecoveryPoint(f"{vm_id[:1]}-{sequence}", vm_id, sequence, NOW, kind)
    db.recovery_points.insert(point)
    assembler.note(point, _header(vm_id, tag, sequence))
    return point


def test_a_collection_point_exists_only_once_every_member_point_is_applied() -> None:
    db = _replica_db()
    assembler = PointAssembler(db, lambda: NOW + timedelta(seconds=5))
    tag = CutTag(GROUP, "web tier", "CUT-1", VMS, NOW.isoformat(), 3.5)
    _applied(db, assembler, VMS[0], tag, 7)
    collection = db.collections.get(GROUP)  # created on the replica side at the first tagged log
    assert (collection.replication_mode, collection.member_vm_ids) == (ReplicationMode.REPLICA, VMS)
    _applied(db, assembler, VMS[1], tag, 4)
    assert db.collection_points.find("CUT-1") is None
    _applied(db, assembler, VMS[2], tag, 9)
    point = db.collection_points.get("CUT-1")
    assert point.members == ((VMS[0], "A-7"), (VMS[1], "B-4"), (VMS[2], "C-9"))
    assert point.consistency is ConsistencyLevel.GROUP_CRASH_CONSISTENT and point.pause_ms == 3.5
    assert point.created_at == NOW
    assert db.collections.get(GROUP).last_apply_time == NOW + timedelta(seconds=5)
    assert db.recovery_points.get("B-4").collection_point_id == "CUT-1"


def test_app_consistent_member_points_make_an_application_consistent_collection_point() -> None:
    db = _replica_db()
    assembler = PointAssembler(db, lambda: NOW)
    tag = CutTag(GROUP, "web tier", "CUT-2", VMS, NOW.isoformat(), 1.0, app_consistent=True)
    for number, vm_id in enumerate(VMS):
        _applied(db, assembler, vm_id, tag, 3 + number, kind=VirtualSystemType.REPLICA_APPLICATION_CONSISTENT)
    assert db.collection_points.get("CUT-2").consistency is ConsistencyLevel.APPLICATION_CONSISTENT


def test_a_collection_point_whose_member_point_was_merged_away_is_no_longer_listed() -> None:
    db = _replica_db()
    assembler = PointAssembler(db, lambda: NOW)
    for cut, base in (("CUT-1", 1), ("CUT-2", 2)):
        tag = CutTag(GROUP, "web tier", cut, VMS, NOW.isoformat(), 1.0)
        for vm_id in VMS:
            _applied(db, assembler, vm_id, tag, base)
    assert [p.point_id for p in assembler.points(GROUP)] == ["CUT-1", "CUT-2"]
    db.recovery_points.delete("B-1")  # retention merged B's point of CUT-1 into its next one
    assert [p.point_id for p in assembler.points(GROUP)] == ["CUT-2"]
    assert db.collection_points.find("CUT-1") is None


def test_a_log_without_a_tag_is_not_a_group_cut_and_a_malformed_tag_is_refused() -> None:
    db = _replica_db()
    assembler = PointAssembler(db, lambda: NOW)
    point = RecoveryPoint("A-1", VMS[0], 1, NOW, VirtualSystemType.REPLICA_STANDARD)
    db.recovery_points.insert(point)
    plain = LogHeader(VMS[0], 0, 1, 0, LogKind.DELTA, NOW.isoformat(), (DiskInfo("d0", SIZE),))
    assembler.note(point, plain)
    assert db.collections.list() == [] and db.recovery_points.get("A-1").collection_point_id is None
    assert CutTag.from_extra({}) is None
    from standby.domain.groups import MalformedTag

    with pytest.raises(MalformedTag):
        CutTag.from_extra({CUT_TAG_KEY: {"id": GROUP, "members": []}})
