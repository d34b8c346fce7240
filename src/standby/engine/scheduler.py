"""The replication scheduler of the primary: one asyncio task per replicating relationship.

Each task runs a cycle every ReplicationInterval (1 s at the least), skips while the VM is off, and counts a
cycle that overruns its interval as missed cycles (Hyper-V: "if a transfer overruns, the next is delayed").
A reconcile loop (every ``poll`` seconds) starts and stops those tasks as relationships change state, starts
an automatic resynchronization in its window (AutoResynchronize, spec §9.7), and notices when the replica
imported an exported initial replica (state 2 → 3). The daemon starts it after start-up recovery and stops
it before it exits.

A replicating primary VM that stops cleanly (``on_vm_event``: the guest powered off, or a stop we asked for)
gets one last cycle at once, cut from its persistent bitmaps with the VM off (the path a planned-failover
prepare takes), so the replica's head equals the disk without waiting an interval or a failover. That cut
touches the images, so the clean-stop stamps (``db.disk_stamps``, which detect a disk changed while off) are
taken again after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time as _time
from collections.abc import Awaitable, Callable
from datetime import datetime, time
from typing import Any, Protocol

from standby.domain.cycles import IntentKind, auto_resync_allowed, interval_misses, parse_intent
from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.enums import EnabledState, RelationshipIndex, ReplicationMode, ReplicationState
from standby.domain.errors import StandbyError
from standby.engine.cycle import CycleRunner, PeerFactory
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.store.sqlite import Database

log = logging.getLogger(__name__)
MIN_INTERVAL = 1.0
Key = tuple[str, int]
#: QEMU exits after which the persistent bitmaps are trustworthy (a crash sends the VM to state 9 instead).
CLEAN_STOPS = frozenset({VmEventKind.STOPPED, VmEventKind.GUEST_SHUTDOWN})


class Resyncer(Protocol):
    """Starts an automatic resynchronization job (``PrimaryReplication.submit_auto_resync``)."""

    def submit_auto_resync(self, vm_id: str, index: RelationshipIndex) -> Any:
        """Submit the job."""
        ...


class Scheduler:
    """Per-relationship cycle tasks plus a reconcile loop."""

    def __init__(self, db: Database, runner: CycleRunner, vm_state: Callable[[str], EnabledState],
                 clock: Callable[[], datetime], *, peers: PeerFactory | None = None,
                 resyncer: Resyncer | None = None, poll: float = 1.0,
                 monotonic: Callable[[], float] = _time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 local_time: Callable[[], time] | None = None,
                 grouped: Callable[[str], bool] | None = None) -> None:
        self._db = db
        self._runner = runner
        #: VMs whose cycles a collection's group scheduler runs instead (engine/group_cycle.py).
        self.grouped = grouped
        self._vm_state = vm_state
        self._clock = clock
        self._peers = peers
        self._resyncer = resyncer
        self._poll = poll
        self._monotonic = monotonic
        self._sleep = sleep
        self._local_time = local_time or (lambda: datetime.now().time())
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._finals: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> list[Key]:
        """The relationships with a cycle task."""
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

    # -- the last cycle at a clean stop -------------------------------------------------------------------

    def on_vm_event(self, event: VmEvent) -> None:
        """Hypervisor subscriber: a replicating primary VM that stopped cleanly gets its last cycle now."""
        if self._loop_task is None or event.kind not in CLEAN_STOPS:
            return  # not started, or stopping (the daemon powering its VMs off at exit)
        rel = self._db.relationships.find(event.vm_id, int(RelationshipIndex.PRIMARY))
        if rel is None or rel.state is not ReplicationState.REPLICATING or not self._is_primary(rel):
            return
        running = self._finals.get(event.vm_id)
        if running is not None and not running.done():
            return
        self._finals[event.vm_id] = asyncio.create_task(self.final_cycle(event.vm_id),
                                                        name=f"final-cycle-{event.vm_id}")

    async def before_start(self, vm: VirtualMachine) -> None:
        """Hypervisor pre-start hook: a VM started again while its last cycle still runs waits for it.

        That cycle holds the images (qemu-nbd reads them, its bitmaps are rewritten offline): QEMU would
        fail to lock them, or the tracking guard would take the cycle's own bitmap changes for a disk
        changed while off and ask for a resync. Nothing is cancelled: the cycle ships what it read.
        """
        running = self._finals.get(vm.vm_id)
        if running is None or running.done():
            return
        log.info("start of %s waits for its last cycle", vm.vm_id)
        with contextlib.suppress(Exception):  # its outcome is the runner's to record, not the start's
            await asyncio.shield(running)

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
        # The off-VM cut rewrote the images' bitmaps; stamps of the clean stop (if still there, i.e. the VM
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

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # one bad relationship must not stop replication of the others
                log.exception("replication scheduler: reconcile failed")
            await self._sleep(self._poll)

    async def reconcile(self) -> None:
        """Start, keep or end cycle tasks to match the store; auto-resync and export imports."""
        wanted: set[Key] = set()
        # One query for every VM's mode, not one per relationship: this runs every ``poll`` second.
        modes = {vm.vm_id: vm.replication_mode for vm in self._db.vms.list()}
        for rel in self._db.relationships.list():
            if not self._is_primary(rel, modes.get(rel.vm_id)):
                continue
            key = (rel.vm_id, int(rel.index))
            if rel.state is ReplicationState.REPLICATING:
                wanted.add(key)
                task = self._tasks.get(key)
                if task is None or task.done():
                    self._tasks[key] = asyncio.create_task(self._cycle_loop(key), name=f"cycles-{rel.vm_id}")
            elif rel.state is ReplicationState.WAITING_TO_START_RESYNCHRONIZATION:
                self._maybe_auto_resync(rel)
            elif rel.state is ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION:
                await self._check_import(rel)
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()

    def _is_primary(self, rel: Relationship, mode: ReplicationMode | None = None) -> bool:
        """This host's VM is the primary of ``rel`` and no collection schedules it (``mode``: the VM's
        replication mode when the caller already read it; None reads it, or means there is no VM)."""
        if mode is None:
            vm = self._db.vms.find(rel.vm_id)
            mode = vm.replication_mode if vm is not None else None
        return mode is ReplicationMode.PRIMARY and rel.index is RelationshipIndex.PRIMARY \
            and not (self.grouped is not None and self.grouped(rel.vm_id))

    async def _cycle_loop(self, key: Key) -> None:
        vm_id, index = key[0], RelationshipIndex(key[1])
        while True:
            rel = self._db.relationships.find(vm_id, int(index))
            if rel is None or rel.state is not ReplicationState.REPLICATING:
                return
            interval = max(MIN_INTERVAL, float(rel.settings.interval_seconds))
            if self._vm_state(vm_id) is EnabledState.DISABLED:
                await self._sleep(interval)  # an off VM writes nothing: skip
                continue
            started = self._monotonic()
            try:
                await self._runner.run(vm_id, index)
            except StandbyError as exc:  # recorded by the runner; keep the schedule
                log.info("cycle of %s: %s", vm_id, exc)
            finished = self._monotonic()
            misses = interval_misses(started, finished, interval)
            if misses:
                self._runner.record_miss(vm_id, index, misses)
            # The next start is the next interval boundary after the cycle ended.
            await self._sleep(interval - (finished - started) % interval)

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
