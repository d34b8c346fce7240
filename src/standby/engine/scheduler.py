"""The replication scheduler of the primary: one loop for every scheduled unit.

A unit is what one cycle cuts: a VM's relationship (``RelationshipUnits``), or a collection whose members are
cut together (``engine.group_cycle.CollectionUnits``, added with ``add_kind``). A kind of unit answers a small
interface (``UnitKind``): which units want a task (``survey``, also the kind's own housekeeping), the plan
of a unit's next turn (its interval, whether it is idle, the VMs its cycle touches; None ends the task),
one cycle (``run``) and how to record missed cycles. Everything else is the same for every unit:

- a task per unit runs a cycle every interval (1 s at the least); an idle unit skips the turn;
- a cycle that overruns its interval counts as missed cycles (Hyper-V: "if a transfer overruns, the next
  is delayed"), recorded through the kind (they feed ReplicationWALMissCount / ReplicationMissCount and the
  missed-cycles health rule); the next cycle starts at the next interval boundary after it ended;
- a failed cycle (recorded by the kind) or an unexpected error keeps the schedule: the unit waits for its
  next boundary instead of being restarted at once;
- after each cycle, the clean-stop stamps of the VMs it touched are taken again (an off VM's cut rewrites
  its images' bitmaps: the tracking guard must not take that for a disk changed while off);
- a VM's start waits for a cycle in flight that touches it (that cycle holds the images);
- a reconcile loop (every ``poll`` seconds) starts and ends the tasks as the store changes; ``stop``
  cancels every task (a cycle cut short aborts its cut).

A VM that a collection claims (``UnitKind.claims``) is not a unit of its own. The relationship kind's
housekeeping starts an automatic resynchronization in its window (AutoResynchronize, hyperv-api §9.7) and
notices
when the replica imported an exported initial replica (state 2 → 3). The daemon starts the scheduler after
start-up recovery and stops it before it exits.

A replicating primary VM that stops cleanly (``on_vm_event``: the guest powered off, or a stop we asked for)
gets one last cycle at once, cut from its persistent bitmaps with the VM off (the path a planned-failover
prepare takes), so the replica's head equals the disk without waiting an interval or a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time as _time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Protocol

from standby.domain.cycles import IntentKind, auto_resync_allowed, interval_misses, parse_intent
from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.enums import EnabledState, RelationshipIndex, ReplicationMode, ReplicationState
from standby.domain.errors import StandbyError
from standby.engine.cycle import CycleRunner, PeerFactory
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.store.port import Store

log = logging.getLogger(__name__)
MIN_INTERVAL = 1.0
#: (kind name, unit id): a task of the scheduler.
Key = tuple[str, str]
#: QEMU exits after which the persistent bitmaps are trustworthy (a crash sends the VM to state 9 instead).
CLEAN_STOPS = frozenset({VmEventKind.STOPPED, VmEventKind.GUEST_SHUTDOWN})
RELATIONSHIP = "relationship"


@dataclass(frozen=True, slots=True)
class Plan:
    """A unit's next turn."""

    #: Seconds from one cycle's start to the next (ReplicationInterval).
    interval: float
    #: Nothing can have changed (a VM that is off): the turn is skipped.
    idle: bool = False
    #: The VMs whose images the unit's cycle touches.
    vms: tuple[str, ...] = ()


class UnitKind(Protocol):
    """One kind of scheduled unit: what the scheduler's loop needs to know of it."""

    #: Names the kind in task names, keys and logs.
    name: str

    async def survey(self) -> Iterable[str]:
        """The units that want a cycle task now (and the kind's housekeeping, run every poll)."""
        ...

    def plan(self, unit: str) -> Plan | None:
        """The unit's next turn, read from the store; None ends its task (it no longer replicates)."""
        ...

    async def run(self, unit: str) -> None:
        """One cycle; it records its own outcome (a ``StandbyError`` raised is logged, nothing more)."""
        ...

    def record_miss(self, unit: str, count: int) -> None:
        """``count`` cycles were missed: the last one overran its interval."""
        ...

    def claims(self, vm_id: str) -> bool:
        """Whether this kind's units cut that VM, so that it is not a unit of its own."""
        ...


class Resyncer(Protocol):
    """Starts an automatic resynchronization job (``PrimaryReplication.submit_auto_resync``)."""

    def submit_auto_resync(self, vm_id: str, index: RelationshipIndex) -> Any:
        """Submit the job."""
        ...


class RelationshipUnits:
    """The primary relationships of this host's VMs as units (unit id: the VM's id)."""

    name = RELATIONSHIP

    def __init__(self, db: Store, runner: CycleRunner, vm_state: Callable[[str], EnabledState],
                 clock: Callable[[], datetime], *, claimed: Callable[[str], bool],
                 peers: PeerFactory | None = None, resyncer: Resyncer | None = None,
                 local_time: Callable[[], time] | None = None) -> None:
        self._db = db
        self._runner = runner
        self._vm_state = vm_state
        self._clock = clock
        self._claimed = claimed
        self._peers = peers
        self._resyncer = resyncer
        self._local_time = local_time or (lambda: datetime.now().time())

    async def survey(self) -> list[str]:
        """Replicating primaries; auto-resync of those waiting for it; imports of exported replicas."""
        wanted: list[str] = []
        # One query for every VM's mode, not one per relationship: this runs every ``poll`` second.
        modes = {vm.vm_id: vm.replication_mode for vm in self._db.vms.list()}
        for rel in self._db.relationships.list():
            if not self.is_primary(rel, modes.get(rel.vm_id)):
                continue
            if rel.state is ReplicationState.REPLICATING:
                wanted.append(rel.vm_id)
            elif rel.state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION:
                self._maybe_auto_resync(rel)
            elif rel.state is ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION:
                await self._check_import(rel)
        return wanted

    def is_primary(self, rel: Relationship, mode: ReplicationMode | None = None) -> bool:
        """This host's VM is the primary of ``rel`` and no other kind of unit cuts it (``mode``: the VM's
        replication mode when the caller already read it; None reads it, or means there is no VM)."""
        if mode is None:
            vm = self._db.vms.find(rel.vm_id)
            mode = vm.replication_mode if vm is not None else None
        return mode is ReplicationMode.PRIMARY and rel.index is RelationshipIndex.PRIMARY \
            and not self._claimed(rel.vm_id)

    def plan(self, unit: str) -> Plan | None:
        """Every ReplicationInterval while replicating; idle while the VM is off (it writes nothing)."""
        rel = self._db.relationships.find(unit, int(RelationshipIndex.PRIMARY))
        if rel is None or rel.state is not ReplicationState.REPLICATING:
            return None
        return Plan(float(rel.settings.interval_seconds), self._vm_state(unit) is EnabledState.DISABLED,
                    (unit,))

    async def run(self, unit: str) -> None:
        """One cycle of the relationship (a heartbeat when nothing changed)."""
        await self._runner.run(unit, RelationshipIndex.PRIMARY)

    def record_miss(self, unit: str, count: int) -> None:
        """Missed cycles of the relationship."""
        self._runner.record_miss(unit, RelationshipIndex.PRIMARY, count)

    def claims(self, vm_id: str) -> bool:
        """A relationship takes no other unit's VMs."""
        return False

    def _maybe_auto_resync(self, rel: Relationship) -> None:
        settings = rel.settings
        if self._resyncer is None or not settings.auto_resynchronize_enabled:
            return
        if not auto_resync_allowed(settings.auto_resynchronize_start, settings.auto_resynchronize_end,
                                   self._local_time()):
            return
        if self._db.jobs.active_on(rel.vm_id) is not None:
            return
        try:
            self._resyncer.submit_auto_resync(rel.vm_id, rel.index)
        except StandbyError as exc:
            log.info("automatic resynchronization of %s not started: %s", rel.vm_id, exc)

    async def _check_import(self, rel: Relationship) -> None:
        """An exported initial replica waits for ImportInitialReplica on the replica; then replicate."""
        pending = parse_intent(rel.intent)
        if self._peers is None or pending is None or pending[0] is not IntentKind.EXPORT:
            return
        try:
            status = await self._peers(rel.settings).replica_status(rel.vm_id)
        except StandbyError as exc:
            log.debug("replica of %s not reachable: %s", rel.vm_id, exc)
            return
        head = (status.get("head_sequence") if isinstance(status, dict)
                else getattr(status, "head_sequence", 0))
        if int(head or 0) >= pending[1]:
            self._runner.update(rel.vm_id, rel.index, state=ReplicationState.REPLICATING, intent=None,
                                last_replication_time=self._clock())


class Scheduler:
    """Cycle tasks for every unit of every kind, plus a reconcile loop (see the module docstring)."""

    def __init__(self, db: Store, runner: CycleRunner, vm_state: Callable[[str], EnabledState],
                 clock: Callable[[], datetime], *, peers: PeerFactory | None = None,
                 resyncer: Resyncer | None = None, poll: float = 1.0,
                 monotonic: Callable[[], float] = _time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 local_time: Callable[[], time] | None = None) -> None:
        self._db = db
        self._runner = runner
        self._vm_state = vm_state
        self._poll = poll
        self._monotonic = monotonic
        self._sleep = sleep
        self.relationships = RelationshipUnits(db, runner, vm_state, clock, claimed=self.claimed, peers=peers,
                                               resyncer=resyncer, local_time=local_time)
        self._kinds: list[UnitKind] = [self.relationships]
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        #: Units with a cycle in flight: the VMs it touches, and an event set when it ends.
        self._inflight: dict[Key, tuple[tuple[str, ...], asyncio.Event]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._finals: dict[str, asyncio.Task[None]] = {}

    def add_kind(self, kind: UnitKind) -> None:
        """Schedule that kind's units too (from the next reconcile on)."""
        if any(known.name == kind.name for known in self._kinds):
            raise ValueError(f"a kind of unit named {kind.name!r} is scheduled already")
        self._kinds.append(kind)

    def claimed(self, vm_id: str) -> bool:
        """Whether some kind's units cut this VM (then it is not a unit of its own)."""
        return any(kind.claims(vm_id) for kind in self._kinds)

    @property
    def running(self) -> list[Key]:
        """The units with a cycle task."""
        return [key for key, task in self._tasks.items() if not task.done()]

    def start(self) -> None:
        """Start the reconcile loop (on the running event loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._reconcile_forever(), name="replication-scheduler")

    async def stop(self) -> None:
        """Cancel every task and wait for them (a cycle cut short aborts its cut)."""
        tasks = [t for t in [self._loop_task, *self._tasks.values(), *self._finals.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._finals.clear()
        self._loop_task = None

    # -- the loop ---------------------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # one bad unit must not stop replication of the others
                log.exception("replication scheduler: reconcile failed")
            await self._sleep(self._poll)

    async def reconcile(self) -> None:
        """Start, keep or end cycle tasks to match the store (and each kind's housekeeping)."""
        for kind in list(self._kinds):
            try:
                wanted = {(kind.name, unit) for unit in await kind.survey()}
            except Exception:  # a kind that cannot read its units leaves its running tasks alone
                log.exception("replication scheduler: surveying the %s units failed", kind.name)
                continue
            for key in wanted:
                task = self._tasks.get(key)
                if task is None or task.done():
                    if task is not None:
                        _log_ended(key, task)
                    self._tasks[key] = asyncio.create_task(self._cycle_loop(kind, key[1]),
                                                           name=f"cycles-{kind.name}-{key[1]}")
            for key in [k for k in self._tasks if k[0] == kind.name and k not in wanted]:
                self._tasks.pop(key).cancel()

    async def _cycle_loop(self, kind: UnitKind, unit: str) -> None:
        key = (kind.name, unit)
        while True:
            plan = kind.plan(unit)
            if plan is None:
                return
            interval = max(MIN_INTERVAL, plan.interval)
            if plan.idle:
                await self._sleep(interval)
                continue
            started = self._monotonic()
            await self._turn(kind, key, plan)
            finished = self._monotonic()
            misses = interval_misses(started, finished, interval)
            if misses:
                try:
                    kind.record_miss(unit, misses)
                except StandbyError as exc:
                    log.error("recording %s missed cycles of %s %s failed: %s", misses, kind.name, unit, exc)
            # The next start is the next interval boundary after the cycle ended.
            await self._sleep(interval - (finished - started) % interval)

    async def _turn(self, kind: UnitKind, key: Key, plan: Plan) -> None:
        ended = asyncio.Event()
        self._inflight[key] = (plan.vms, ended)
        try:
            await kind.run(key[1])
        except StandbyError as exc:  # recorded by the kind; keep the schedule
            log.info("cycle of %s %s: %s", kind.name, key[1], exc)
        except Exception:  # a bug in one cycle: keep the schedule rather than restart the task at once
            log.exception("cycle of %s %s failed", kind.name, key[1])
        finally:
            self._inflight.pop(key, None)
            ended.set()
            for vm_id in plan.vms:
                self._restamp(vm_id)

    # -- the last cycle at a clean stop, starts that wait --------------------------------------------------

    def on_vm_event(self, event: VmEvent) -> None:
        """Hypervisor subscriber: a replicating primary VM that stopped cleanly gets its last cycle now."""
        if self._loop_task is None or event.kind not in CLEAN_STOPS:
            return  # not started, or stopping (the daemon powering its VMs off at exit)
        rel = self._db.relationships.find(event.vm_id, int(RelationshipIndex.PRIMARY))
        if rel is None or rel.state is not ReplicationState.REPLICATING \
                or not self.relationships.is_primary(rel):
            return
        running = self._finals.get(event.vm_id)
        if running is not None and not running.done():
            return
        self._finals[event.vm_id] = asyncio.create_task(self.final_cycle(event.vm_id),
                                                        name=f"final-cycle-{event.vm_id}")

    async def before_start(self, vm: VirtualMachine) -> None:
        """Hypervisor pre-start hook: a VM started while a cycle touching it runs (its last cycle, or a
        collection's cycle cutting it while off) waits for that cycle.

        That cycle holds the images (qemu-nbd reads them, its bitmaps are rewritten offline): QEMU would
        fail to lock them, or the tracking guard would take the cycle's own bitmap changes for a disk
        changed while off and ask for a resync. Nothing is cancelled: the cycle ships what it read.
        """
        waits: list[Awaitable[Any]] = []
        final = self._finals.get(vm.vm_id)
        if final is not None and not final.done():
            waits.append(asyncio.shield(final))
        waits.extend(ended.wait() for vms, ended in list(self._inflight.values()) if vm.vm_id in vms)
        if not waits:
            return
        log.info("start of %s waits for a cycle that holds its images", vm.vm_id)
        for wait in waits:
            with contextlib.suppress(Exception):  # its outcome is the cycle's to record, not the start's
                await wait

    async def final_cycle(self, vm_id: str) -> None:
        """One DELTA cycle of a VM that is off (after any cycle in flight), then stamp its images again."""
        index = RelationshipIndex.PRIMARY
        rel = self._db.relationships.find(vm_id, int(index))
        if rel is None or rel.state is not ReplicationState.REPLICATING:
            return
        try:
            result = await self._runner.run(vm_id, index)
            log.info("last cycle of %s at its clean stop: %s, sequence %s, %s bytes", vm_id, result.outcome,
                     result.sequence, result.dirty_bytes)
        except StandbyError as exc:  # recorded by the runner; the next start or prepare sends the rest
            log.info("last cycle of %s at its clean stop: %s", vm_id, exc)
        # Even a failed cut settled its bitmaps in the images: this daemon changed them, not someone else.
        self._restamp(vm_id)

    def _restamp(self, vm_id: str) -> None:
        # An off-VM cut rewrote the images' bitmaps; stamps of the clean stop (if still there, i.e. the VM
        # did not start meanwhile) must describe the images as the cut left them.
        vm = self._db.vms.find(vm_id)
        if vm is None or not self._db.disk_stamps.get(vm_id) \
                or self._vm_state(vm_id) is not EnabledState.DISABLED:
            return
        stamps = []
        for disk in vm.disks:
            try:
                info = os.stat(disk.path)
            except OSError:
                stamps.append((disk.disk_id, -1, -1))
                continue
            stamps.append((disk.disk_id, info.st_size, info.st_mtime_ns))
        self._db.disk_stamps.put(vm_id, stamps)


def _log_ended(key: Key, task: asyncio.Task[None]) -> None:
    """A cycle task that ended by itself is replaced; say why if it died."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("cycle task of %s %s ended: %r; starting it again", key[0], key[1], exc)
