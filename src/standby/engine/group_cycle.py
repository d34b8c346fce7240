"""Group-consistent replication of a collection (issue 7 item 2, DESIGN §4 "for a collection").

Primary, one group cycle (``GroupCycle.run``):
1. every member's relationship must be Replicating; each member's cycle lock is taken (sorted, so two
   group cycles never deadlock) and ``CycleRunner.open_cut`` writes each member's intent;
2. fleecing nodes are added while the guests run (``Capture.prepare_cut``); for an app-consistent cut every
   guest is frozen through its agent first;
3. which members run is asked first (a VM its user paused is not ours to resume); then every running member
   is paused with QMP ``stop`` and its cut transaction follows its own ``stop`` at once (members do not wait
   for each other's ``stop``: each is paused from its ``stop`` until the common ``cont``, so every cut equals
   its member's state at the moment the last one stopped); once every transaction has answered, ``cont``
   resumes them all in a ``finally``. The pause recorded is the window, from the first ``stop`` sent to the
   last ``cont`` answered (it bounds every member's own pause). ``stop``/``cont`` go through the driver's
   ``hold``/``release``: members are not reported paused and resumed (their state stays Enabled);
4. the guests are thawed, the cuts exported, and every member's log is shipped with the same ``CutTag`` in
   its header ``extra`` (``CycleRunner.close_cut`` commits or aborts each one).
Every group cycle is recorded (``db.group_cycles``) with its pause.

Replica (``PointAssembler.note``, a listener of the applier): a point whose log carries a tag is marked with
the cut id; the replica collection is created when first seen; once every member's point of that cut exists
an ``Msvm_CollectionRecoveryPoint`` is recorded — never before.

``CollectionUnits`` makes replicating collections units of the primary's scheduler (``engine.scheduler``):
a group cycle at the collection's interval, and the members are not units of their own (``claims``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as _time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from standby.domain.clock import Clock
from standby.domain.cycles import CycleOutcome
from standby.domain.entities import Collection, CollectionRecoveryPoint, RecoveryPoint
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import InvalidState, StandbyError, Unavailable
from standby.domain.groups import (
    CUT_TAG_KEY,
    CutTag,
    GroupCycleRecord,
    GroupOutcome,
    assemble,
    complete,
    consistency,
)
from standby.engine.capture import Cut
from standby.engine.cycle import CycleResult, CycleRunner, OpenCut
from standby.engine.scheduler import Plan
from standby.hypervisor.port import FrozenGuest
from standby.storage.logformat import LogHeader
from standby.store.port import Store

log = logging.getLogger("standby.groups")

_PRIMARY = RelationshipIndex.PRIMARY
#: ``UnitKind.name`` of collections in the scheduler.
COLLECTION_UNITS = "collection"
#: Collection states in which the collection, not the member itself, is the unit whose cycles cut a member.
_GROUPED_STATES = frozenset(set(CollectionReplicationState) - {CollectionReplicationState.DISABLED})


class GroupCapture(Protocol):
    """What a group cut needs of ``engine.capture.Capture``."""

    def running(self, vm_id: str) -> bool:
        """Whether the VM's QEMU runs."""
        ...

    async def prepare_cut(self, vm_id: str, disks: Sequence[Any], sequence: int, *, previous: int | None,
                          now: datetime) -> Cut:
        """Step 1 (fleecing nodes; an off VM is cut whole)."""
        ...

    async def transact_cut(self, cut: Cut) -> None:
        """Step 2 (paused)."""
        ...

    async def export_cut(self, cut: Cut) -> None:
        """Step 3."""
        ...

    async def freeze(self, vm_id: str) -> FrozenGuest | None:
        """Freeze the guest's file systems."""
        ...

    async def thaw(self, agent: FrozenGuest, vm_id: str) -> None:
        """Thaw them."""
        ...


class Pauser(Protocol):
    """QMP ``stop``/``cont`` of a running VM (without the VM life-cycle's state bookkeeping)."""

    async def running(self, vm_id: str) -> bool:
        """Whether the vCPUs run now (asked before the pause window, so it costs the window nothing)."""
        ...

    async def stop(self, vm_id: str) -> None:
        """Halt the vCPUs."""
        ...

    async def cont(self, vm_id: str) -> None:
        """Let them run again."""
        ...


class QmpPauser:
    """``Pauser`` over the QEMU driver (``hypervisor.qemu.QemuHypervisor``): ``hold``/``release``, not a
    user's pause — a cut's STOP/RESUME events are not reported, so no member's state flickers to Quiesce and
    no vm.paused/vm.resumed record is written (on the event loop, inside the window) for every member."""

    def __init__(self, hypervisor: Any) -> None:
        self._hv = hypervisor

    async def running(self, vm_id: str) -> bool:
        """Whether the vCPUs run, as QEMU says (a VM paused by its user is not ours to resume)."""
        return bool(await self._hv.vcpus_running(vm_id))

    async def stop(self, vm_id: str) -> None:
        """``hold``: QMP ``stop`` (QEMU drains and flushes the disks before it answers)."""
        await self._hv.hold(vm_id)

    async def cont(self, vm_id: str) -> None:
        """``release``: QMP ``cont``, unless the VM's user paused it meanwhile."""
        await self._hv.release(vm_id)


@dataclass(frozen=True, slots=True)
class GroupCycleResult:
    """What one group cycle did."""

    cut_id: str
    outcome: GroupOutcome
    pause_ms: float = 0.0
    members: tuple[tuple[str, CycleResult], ...] = ()
    detail: str = ""
    #: Every member froze through its guest agent for the cut (consistency 1, else 3).
    app_consistent: bool = False

    @property
    def wire_bytes(self) -> int:
        """Bytes shipped for every member."""
        return sum(result.wire_bytes for _, result in self.members)


class GroupCycle:
    """Runs group cycles of collections (see the module docstring)."""

    def __init__(self, db: Store, runner: CycleRunner, capture: GroupCapture, pauser: Pauser,
                 clock: Clock, *, monotonic: Callable[[], float] = _time.monotonic) -> None:
        self._db = db
        self._runner = runner
        self._capture = capture
        self._pauser = pauser
        self._clock = clock
        self._monotonic = monotonic

    async def run(self, collection_id: str) -> GroupCycleResult:
        """One group cycle; recorded in ``db.group_cycles`` whatever its outcome (a cancellation raises)."""
        collection = self._db.collections.get(collection_id)
        cut_id = str(uuid.uuid4()).upper()
        started = self._clock()
        try:
            result = await self._run(collection, cut_id, started)
        except asyncio.CancelledError:
            raise
        except StandbyError as exc:
            outcome = GroupOutcome.NETWORK if isinstance(exc, Unavailable) else GroupOutcome.FAILURE
            if isinstance(exc, InvalidState) and exc.message_id == "GroupMemberNotReplicating":
                outcome = GroupOutcome.MISS
            result = GroupCycleResult(cut_id, outcome, detail=str(exc))
        self._record(collection, result, started)
        return result

    async def _run(self, collection: Collection, cut_id: str, started: datetime) -> GroupCycleResult:
        members = self._replicating_members(collection)
        async with contextlib.AsyncExitStack() as stack:
            for vm_id in sorted(members):
                await stack.enter_async_context(self._runner.lock(vm_id))
            opened: list[OpenCut] = []
            try:
                for vm_id in members:
                    opened.append(await self._runner.open_cut(vm_id, _PRIMARY))
                cuts, pause_ms, frozen = await self._cut_all(opened, started)
            except BaseException as exc:
                for item in opened:
                    await self._runner.abandon_cut(item, exc)
                raise
            tag = CutTag(collection.collection_id, collection.name, cut_id, tuple(members),
                         started.isoformat(), round(pause_ms, 3), frozen)
            extra = {CUT_TAG_KEY: tag.to_extra()}
            shipped = await asyncio.gather(*(self._runner.close_cut(item, cut, extra=extra)
                                             for item, cut in zip(opened, cuts, strict=True)))
        results = tuple(zip(members, shipped, strict=True))
        failed = [(vm, r) for vm, r in results if r.outcome is not CycleOutcome.SUCCESS]
        if failed:
            vm, first = failed[0]
            outcome = GroupOutcome.NETWORK if first.outcome is CycleOutcome.NETWORK else GroupOutcome.FAILURE
            return GroupCycleResult(cut_id, outcome, pause_ms, results, f"member {vm}: {first.detail}")
        return GroupCycleResult(cut_id, GroupOutcome.SUCCESS, pause_ms, results, app_consistent=frozen)

    def _replicating_members(self, collection: Collection) -> list[str]:
        if not collection.member_vm_ids:
            raise InvalidState(f"collection {collection.name} has no members", message_id="CollectionEmpty",
                               collection=collection.name)
        for vm_id in collection.member_vm_ids:
            rel = self._db.relationships.find(vm_id, int(_PRIMARY))
            if rel is None or rel.state is not ReplicationState.REPLICATING:
                state = int(rel.state) if rel else 0
                raise InvalidState(f"member {vm_id} of collection {collection.name} is not replicating "
                                   f"(state {state})", message_id="GroupMemberNotReplicating",
                                   vm=vm_id, collection=collection.name, state=state)
        return list(collection.member_vm_ids)

    async def _cut_all(self, opened: list[OpenCut], now: datetime) -> tuple[list[Cut], float, bool]:
        """Steps 2-4 of the module docstring: the cuts, the pause in ms, whether every guest froze."""
        cuts: list[Cut] = []
        for item in opened:
            cuts.append(await self._capture.prepare_cut(item.vm.vm_id, item.disks, item.sequence,
                                                        previous=item.previous, now=now))
        online = [cut for cut in cuts if cut.online]
        agents = await self._freeze_all(opened, online)
        try:
            pause_ms = await self._paused_transactions(online)
        finally:
            await asyncio.gather(*(self._capture.thaw(agent, vm_id) for vm_id, agent in agents.items()
                                   if agent is not None))
        for cut in online:
            await self._capture.export_cut(cut)
        frozen = len(agents) == len(cuts) > 0 and all(agent is not None for agent in agents.values())
        done = [replace(cut, app_consistent=frozen) if cut.online else cut for cut in cuts]
        return done, pause_ms, frozen

    async def _freeze_all(self, opened: list[OpenCut], online: list[Cut]) -> dict[str, FrozenGuest | None]:
        if not online or not all(self._app_consistent_due(item) for item in opened):
            return {}
        agents: dict[str, FrozenGuest | None] = {}
        for cut in online:
            agents[cut.vm_id] = await self._capture.freeze(cut.vm_id)
        return agents

    def _app_consistent_due(self, item: OpenCut) -> bool:
        hours = item.rel.settings.app_consistent_interval_hours
        last = item.rel.last_app_consistent_time
        return hours > 0 and (last is None or self._clock() - last >= timedelta(hours=hours))

    async def _paused_transactions(self, online: list[Cut]) -> float:
        """Pause every running member, run each transaction, resume them all; the pause window in ms.

        Only ``stop``, the transactions and ``cont`` happen inside the window (whether a member runs is asked
        before it). A user's pause landing between that answer and our ``cont`` stands: ``QmpPauser.cont``
        (the driver's ``release``) leaves that member stopped. A failure of any member still resumes every
        member a ``stop`` was sent to, then raises (the caller aborts every cut); so does a cancellation.
        """
        running = await asyncio.gather(*(self._pauser.running(cut.vm_id) for cut in online))
        to_pause = {cut.vm_id for cut, runs in zip(online, running, strict=True) if runs}
        sent: list[str] = []  # every member a stop went to, even one whose reply never came: resume it too
        t0 = self._monotonic()
        try:
            outcomes = await asyncio.gather(*(self._pause_and_cut(cut, cut.vm_id in to_pause, sent)
                                              for cut in online), return_exceptions=True)
            errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if errors:
                raise errors[0]
        finally:
            resumed = await asyncio.gather(*(self._pauser.cont(vm_id) for vm_id in sent),
                                           return_exceptions=True)
            pause_ms = (self._monotonic() - t0) * 1000.0
            for vm_id, outcome in zip(sent, resumed, strict=True):
                if isinstance(outcome, BaseException):  # the VM stays paused: say so loudly
                    log.error("could not resume %s after a group cut: %s", vm_id, outcome)
        return pause_ms

    async def _pause_and_cut(self, cut: Cut, pause: bool, sent: list[str]) -> None:
        """One member's part of the window: its ``stop``, then at once its transaction (no wait for the
        others' ``stop``: it stays paused until every cut is taken, see the module docstring)."""
        if pause:
            sent.append(cut.vm_id)
            await self._pauser.stop(cut.vm_id)
        await self._capture.transact_cut(cut)

    def _record(self, collection: Collection, result: GroupCycleResult, started: datetime) -> None:
        level = consistency([result.app_consistent]) if result.outcome is GroupOutcome.SUCCESS \
            else ConsistencyLevel.UNKNOWN
        record = GroupCycleRecord(collection.collection_id, result.cut_id, result.outcome, started,
                                  self._clock(), result.wire_bytes, result.pause_ms, level, result.detail)
        try:
            self._db.group_cycles.record(record)
        except StandbyError as exc:
            log.error("recording the group cycle of %s failed: %s", collection.collection_id, exc)


# -- replica side -------------------------------------------------------------------------------------------


class PointAssembler:
    """Listener of ``ReplicaApplier.point_listeners``: collection points appear when their cut is whole."""

    def __init__(self, db: Store, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def note(self, point: RecoveryPoint, header: LogHeader) -> None:
        """A member's point of a group cut was recorded."""
        tag = CutTag.from_extra(header.extra)
        if tag is None:
            return
        self._db.recovery_points.update(replace(point, collection_point_id=tag.cut_id))
        collection = self._replica_collection(tag)
        if self._db.collection_points.find(tag.cut_id) is not None:
            return
        found: dict[str, tuple[str, bool]] = {}
        for vm_id in tag.members:
            for candidate in self._db.recovery_points.list(vm_id=vm_id):
                if candidate.collection_point_id == tag.cut_id:
                    app = candidate.kind is VirtualSystemType.REPLICA_APPLICATION_CONSISTENT
                    found[vm_id] = (candidate.point_id, app)
        created = _parse_time(tag.created_at) or point.created_at
        assembled = assemble(tag, found, created)
        if assembled is None:
            return
        with self._db.transaction():
            self._db.collection_points.insert(assembled)
            self._db.collections.update(replace(self._db.collections.get(collection.collection_id),
                                                last_apply_time=self._clock()))
        log.info("collection recovery point complete", extra={"fields": {
            "collection": tag.collection_id, "cut": tag.cut_id, "members": len(tag.members)}})

    def _replica_collection(self, tag: CutTag) -> Collection:
        """The replica side's collection of the tag, created (mode Replica, Replicating) when first seen."""
        current = self._db.collections.find(tag.collection_id)
        members = tuple(vm for vm in tag.members if self._db.vms.find(vm) is not None)
        if current is None:
            return self._db.collections.insert(Collection(
                tag.collection_id, tag.name, members, ReplicationMode.REPLICA,
                CollectionReplicationState.REPLICATING))
        if current.replication_mode is ReplicationMode.REPLICA and current.member_vm_ids != members:
            return self._db.collections.update(replace(current, member_vm_ids=members, name=tag.name))
        return current

    def points(self, collection_id: str) -> list[CollectionRecoveryPoint]:
        """The collection's points whose every member point still exists, oldest first; incomplete ones (a
        member point merged away by retention) are dropped."""
        existing = {p.point_id for vm in self._db.collections.get(collection_id).member_vm_ids
                    for p in self._db.recovery_points.list(vm_id=vm)}
        kept = []
        for point in self._db.collection_points.list(collection_id=collection_id):
            if complete(point, existing):
                kept.append(point)
            else:
                self._db.collection_points.delete(point.point_id)
        return kept


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# -- collections as units of the scheduler ------------------------------------------------------------------


class CollectionUnits:
    """Replicating primary collections as units of the primary's scheduler (``engine.scheduler``): a group
    cycle every ReplicationInterval, with the timing, miss counting and stop behaviour of every unit.

    A collection is idle while every member is off and its last cycle, taken with them all off, succeeded:
    nothing can have changed since. Until then it cycles even with every member off, so the replica gets
    the collection and a collection recovery point after StartReplication (the members' initial
    replications are their own, untagged), and the writes before the last member stopped reach it.
    """

    name = COLLECTION_UNITS

    def __init__(self, db: Store, cycle: GroupCycle, runner: CycleRunner,
                 vm_state: Callable[[str], EnabledState], clock: Clock) -> None:
        self._db = db
        self._cycle = cycle
        self._runner = runner
        self._vm_state = vm_state
        self._clock = clock
        #: Collections whose last cycle succeeded with every member off (kept in memory only: after a
        #: restart such a collection gets one more cycle, which costs a small log and is always right).
        self._settled: set[str] = set()
        self._last_cut: dict[str, str] = {}

    def claims(self, vm_id: str) -> bool:
        """Whether a primary collection schedules this VM's cycles (it is then not a unit of its own)."""
        return any(c.replication_mode is ReplicationMode.PRIMARY and c.replication_state in _GROUPED_STATES
                   for c in self._db.collections.containing(vm_id))

    async def survey(self) -> list[str]:
        """The replicating primary collections."""
        wanted = [c.collection_id for c in self._db.collections.list()
                  if c.replication_mode is ReplicationMode.PRIMARY
                  and c.replication_state is CollectionReplicationState.REPLICATING]
        self._settled.intersection_update(wanted)
        return wanted

    def plan(self, unit: str) -> Plan | None:
        """The collection's interval (300 s without settings); idle as the class docstring says."""
        collection = self._db.collections.find(unit)
        if collection is None or collection.replication_mode is not ReplicationMode.PRIMARY \
                or collection.replication_state is not CollectionReplicationState.REPLICATING:
            return None
        stored = self._db.collection_settings.find(unit)
        interval = float(stored[1].interval_seconds if stored else 300)
        if not self._all_off(collection):
            self._settled.discard(unit)
        return Plan(interval, unit in self._settled, collection.member_vm_ids)

    async def run(self, unit: str) -> None:
        """One group cycle (recorded in ``db.group_cycles`` by ``GroupCycle.run``)."""
        off = self._all_off(self._db.collections.get(unit))
        result = await self._cycle.run(unit)
        self._last_cut[unit] = result.cut_id
        if result.outcome is GroupOutcome.SUCCESS and off:
            self._settled.add(unit)
        else:
            self._settled.discard(unit)
        if result.outcome is not GroupOutcome.SUCCESS:
            log.info("group cycle of %s: %s %s", unit, result.outcome.value, result.detail)

    def record_miss(self, unit: str, count: int) -> None:
        """``count`` group cycles missed (ReplicationWALMissCount), and as many for every member's own
        statistics and health (the collection is as healthy as its least healthy member)."""
        collection = self._db.collections.find(unit)
        if collection is None:
            return
        now = self._clock()
        detail = "the cycle before overran its interval"
        for _ in range(count):
            self._db.group_cycles.record(GroupCycleRecord(unit, self._last_cut.get(unit, ""),
                                                          GroupOutcome.MISS, now, now, detail=detail))
        for vm_id in collection.member_vm_ids:
            if self._db.relationships.find(vm_id, int(_PRIMARY)) is not None:
                self._runner.record_miss(vm_id, _PRIMARY, count)

    def _all_off(self, collection: Collection) -> bool:
        return all(self._vm_state(vm) is EnabledState.DISABLED for vm in collection.member_vm_ids)
