"""Extended replication (hyperv-api §9.8): a replica B replicates on to a third host C — relationship
``…\\HVR\\1`` on B, a replica VM in mode 4 (Extended Replica) on C.

- ``CreateReplicationRelationship`` on a replica VM (JobType 91): C creates the replica (mode 4, same GUID),
  B records the extended relationship in state 1. Interval: Hyper-V allows 300 or 900 s only; standby allows
  every interval it allows a primary (1-29 s as its extension, 30, 300, 900) as long as it is not shorter
  than the primary relationship's; no application-consistent points.
- ``StartReplication`` on the replica VM (JobType 94, network only): B's head point goes to C whole (its
  allocated, non-zero extents) as an INITIAL log carrying the head's sequence.
- Forwarding: B has no running VM, so a "cycle" reads the replica images. C holds B's point P (the
  extended relationship's ``sequence``); B holds P too (a point hold, so retention keeps it and the layers
  above it). The next log carries the clusters allocated in the top images of B's points after P up to the
  head H — what changed from P to H, since every point's top image holds its own log's writes (a merge
  adds the older layer to the newer file, so a lost hold, e.g. released by a failover, only makes the log
  bigger, never wrong) — read from H's image, as sequence H with parent P. A recorded point triggers it
  once the extended interval has passed since the last forward (a point that comes earlier is forwarded
  when the interval ends, so the last point before the primary stops reaches C too).
- Heartbeats: an idle primary sends B heartbeats instead of logs (no new point on B). B hears of each
  recorded one (``ReplicaUseCases.heartbeat_listeners``) and schedules the same step as a point does, at
  the extended interval; when the step finds C already holding B's head it sends C a heartbeat for that
  sequence (C checks it is its head, else 409 → state 9 as for a log), and LastReplicationTime moves on
  on C and on B's extended relationship; no point anywhere. When B's head is newer it forwards as usual.
- ``Resynchronize`` on the replica VM (JobType 121): C's block hashes against B's head, the differing blocks.
- ``ChangeReplicationModeToPrimary`` (JobType 123) after a committed failover on B: the extended
  relationship becomes B's primary one (mode 1, B→C keeps going), the recovery points of A's relationship go,
  and the first cycle is a RESYNC against C's head: when B failed over to the very point C holds, only the
  failover overlay's clusters travel (as in reverse replication), otherwise the block hashes decide.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from standby.domain.clock import Clock
from standby.domain.cycles import CycleKind
from standby.domain.entities import Job, RecoveryPoint, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    InitialReplicationType,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.domain.errors import InvalidParameter, NotSupported, StandbyError, Unavailable
from standby.domain.preconditions import Operation
from standby.domain.replica import check_log_answer
from standby.domain.settings import validate_replication_settings
from standby.engine.capture import HASH_BLOCK, differing_ranges, stream_in_thread
from standby.engine.cycle import CycleRunner, PeerFactory
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.replication import ReplicationUseCases
from standby.engine.reverse import Ranges, SendingUseCase, allocated_ranges, overlay_source, replicated_disks
from standby.storage import blockhash, chain, qemu_img
from standby.storage.logformat import MAX_FRAME, DiskInfo, LogEncoder, LogHeader, LogKind, is_zero
from standby.storage.nbd import STATE_ZERO
from standby.store.port import PointHold, Store

log = logging.getLogger("standby.extended")

_S = ReplicationState
_EXT = RelationshipIndex.EXTENDED
_PRIMARY = RelationshipIndex.PRIMARY
HOLD_REASON = "extended"
READ_DEPTH = 16


def validate_extended(settings: ReplicationSettings, primary_interval: int) -> None:
    """Extended settings: as a primary's, not faster than the primary relationship, no app-consistent
    points."""
    validate_replication_settings(settings)
    if settings.interval_seconds < primary_interval:
        raise InvalidParameter(
            f"the extended interval {settings.interval_seconds} s is shorter than the primary relationship's "
            f"{primary_interval} s", message_id="InvalidSettingValue", property="interval_seconds",
            label="extended replication interval", value=settings.interval_seconds,
            allowed=f"at least the primary's {primary_interval} seconds")
    if settings.app_consistent_interval_hours:
        raise InvalidParameter("extended replication takes no application-consistent points",
                               message_id="InvalidSettingValue", property="app_consistent_interval_hours",
                               label="application-consistent snapshot interval",
                               value=settings.app_consistent_interval_hours, allowed="0")


class ExtendedReplication(SendingUseCase):
    """Extended CreateReplicationRelationship, forwarding of the points, ChangeReplicationModeToPrimary."""

    def __init__(self, guards: ReplicationUseCases, jobs: JobManager | None, runner: CycleRunner | None,
                 peers: PeerFactory | None, *, db: Store, clock: Clock, host_name: str = "") -> None:
        super().__init__(guards, jobs, runner, peers, db=db, clock=clock, host_name=host_name)
        self._locks: dict[str, asyncio.Lock] = {}
        #: The apply lock of the replica side (``ReplicaApplier.lock``): forwarding reads the chain.
        self.chain_lock: Callable[[str], asyncio.Lock] = lambda vm_id: self._lock(f"chain:{vm_id}")
        self._tasks: set[asyncio.Task[object]] = set()
        self._pending: set[str] = set()

    # -- create / start -----------------------------------------------------------------------------------

    def submit_create(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """CreateReplicationRelationship on a replica VM → the extended relationship (JobType 91)."""
        vm, settings = self.check_create(vm_id, settings)

        async def work(handle: JobHandle) -> dict[str, str]:
            return await self.create(vm, settings)

        return self._submit(JobType.CREATE_REPLICATION_RELATIONSHIP, vm, "ExtendedCreateJob", work)

    def check_create(self, vm_id: str, settings: ReplicationSettings) -> tuple[VirtualMachine,
                                                                               ReplicationSettings]:
        """The precondition table and the extended settings rules; the VM and the settings to store."""
        target = self._guards.guard(Operation.CREATE_EXTENDED_RELATIONSHIP, vm_id)
        primary = self._db.relationships.get(vm_id, int(_PRIMARY))
        if self._host:
            settings = dataclasses.replace(settings, primary_connection_point=self._host)
        validate_extended(settings, primary.settings.interval_seconds)
        return target.vm, settings

    async def create(self, vm: VirtualMachine, settings: ReplicationSettings) -> dict[str, str]:
        """The extended replica on C (mode 4), then the relationship ``…\\HVR\\1`` here in state 1."""
        disks = [(d.disk_id, d.size_bytes) for d in replicated_disks(vm)]
        answer = await self._peer(settings).create_replica(
            vm, settings, primary_host=self._host or settings.primary_connection_point, disks=disks,
            extended=True)
        self._db.relationships.insert(Relationship(vm.vm_id, _EXT, _S.READY_FOR_REPLICATION,
                                                   ReplicationHealth.WARNING, settings))
        return {"ReplicaState": str(int(getattr(answer, "state", 0)))}

    def submit_start(self, vm_id: str, initial_type: int) -> Job:
        """StartReplication on a replica VM: the extended relationship's initial replication (JobType 94)."""
        target = self._guards.guard(Operation.START_REPLICATION, vm_id, index=_EXT)
        if initial_type != InitialReplicationType.NETWORK:
            raise NotSupported("extended replication starts over the network only (type 1)",
                               message_id="ExtendedStartUnsupported", type=initial_type)

        async def work(handle: JobHandle) -> dict[str, str]:
            self._update(vm_id, state=_S.WAITING_TO_COMPLETE_INITIAL_REPLICATION)
            return await self.forward(vm_id, LogKind.INITIAL)

        return self._submit(JobType.START_INBAND_INITIAL_REPLICATION, target.vm, "ExtendedStartJob", work)

    def submit_resynchronize(self, vm_id: str) -> Job:
        """Resynchronize on a replica VM: C's block hashes against B's head (JobType 121)."""
        target = self._guards.guard(Operation.RESYNCHRONIZE, vm_id, index=_EXT)

        async def work(handle: JobHandle) -> dict[str, str]:
            self._update(vm_id, state=_S.RESYNCHRONIZING)
            return await self.forward(vm_id, LogKind.RESYNC)

        return self._submit(JobType.RESYNCHRONIZING_EXTENDED_REPLICATION, target.vm, "ExtendedResyncJob",
                            work)

    def submit_modify(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """ModifyReplicationSettings on a replica VM: the extended relationship's settings (JobType 92); the
        included disks cannot change (hyperv-api §9.8)."""
        target = self._guards.guard(Operation.MODIFY_REPLICATION_SETTINGS, vm_id, index=_EXT)
        current = self._db.relationships.get(vm_id, int(_EXT))
        primary = self._db.relationships.get(vm_id, int(_PRIMARY))
        here = current.settings.primary_connection_point
        settings = dataclasses.replace(settings, primary_connection_point=here)
        validate_extended(settings, primary.settings.interval_seconds)
        if set(settings.included_disks) != set(current.settings.included_disks):
            raise InvalidParameter("the disks of an extended relationship cannot change",
                                   message_id="InvalidSettingValue", property="included_disks",
                                   label="included disks", value=settings.included_disks,
                                   allowed="the current disks")

        async def work(handle: JobHandle) -> dict[str, str]:
            self._update(vm_id, settings=settings)
            return {"ReplicationInterval": str(settings.interval_seconds)}

        return self._submit(JobType.MODIFY_REPLICATION_RELATIONSHIP_SETTINGS, target.vm, "ExtendedModifyJob",
                            work)

    def submit_remove(self, vm_id: str) -> Job:
        """RemoveReplicationRelationshipEx of the extended relationship (JobType 93): C's side is removed
        when it can be reached (each side is removed on its own), then B's."""
        target = self._guards.guard(Operation.REMOVE_RELATIONSHIP, vm_id, index=_EXT)
        rel = self._db.relationships.get(vm_id, int(_EXT))

        async def work(handle: JobHandle) -> dict[str, str]:
            try:
                await self._peer(rel.settings).remove_replica(vm_id)
            except StandbyError as exc:
                log.warning("the extended replica of %s was not removed: %s", vm_id, exc)
            with self._db.transaction():
                self._db.relationships.delete(vm_id, int(_EXT))
                self._db.point_holds.release(vm_id, HOLD_REASON)
            return {"ReplicationState": str(int(_S.DISABLED))}

        return self._submit(JobType.REMOVE_REPLICATION_RELATIONSHIP, target.vm, "ExtendedRemoveJob", work)

    # -- forwarding ---------------------------------------------------------------------------------------

    def on_point(self, point: RecoveryPoint, header: object) -> None:
        """Replica applier listener: forward when the extended interval has passed since the last one."""
        try:
            self._schedule(point.vm_id)
        except Exception:  # the applied point stands whatever happens here
            log.exception("scheduling the forward of %s failed", point.vm_id)

    def on_heartbeat(self, vm_id: str) -> None:
        """Replica heartbeat listener: B's head is current as of now; C hears so at the extended interval
        (a heartbeat, or a forward when C lags behind B's head)."""
        try:
            self._schedule(vm_id)
        except Exception:  # the recorded heartbeat stands whatever happens here
            log.exception("scheduling the extended heartbeat of %s failed", vm_id)

    def _schedule(self, vm_id: str) -> None:
        rel = self._db.relationships.find(vm_id, int(_EXT))
        if rel is None or rel.state is not _S.REPLICATING or self._peers is None:  # forwarding needs only C
            return
        if vm_id in self._pending:
            return  # a step is already waiting for the interval; it takes the newest head
        last = rel.last_replication_time
        wait = 0.0
        if last is not None:
            wait = (timedelta(seconds=rel.settings.interval_seconds) - (self._clock() - last)).total_seconds()
        # Too early: forward when the interval ends rather than at the next point - after the primary's last
        # cycle (a clean stop) there is no next point, and the head would never reach C.
        self._pending.add(vm_id)
        loop = asyncio.get_running_loop()
        task: asyncio.Task[object] = loop.create_task(self._forward_quietly(vm_id, max(0.0, wait)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_quietly(self, vm_id: str, delay: float = 0.0) -> object:
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self._pending.discard(vm_id)
        try:
            return await self.heartbeat(vm_id) or await self.forward(vm_id, LogKind.DELTA)
        except StandbyError as exc:  # the next point tries again; a refusal set state 9
            log.warning("forwarding %s to its extended replica failed: %s", vm_id, exc)
            return None

    async def heartbeat(self, vm_id: str) -> dict[str, str] | None:
        """When C already holds B's head: tell C it is current (no log, no point) and move the extended
        relationship's LastReplicationTime on. None when there is something to forward (or nothing to do:
        not replicating) - the caller forwards then."""
        async with self._lock(vm_id):
            rel = self._db.relationships.find(vm_id, int(_EXT))
            head = self._db.recovery_points.latest(vm_id)
            current = head is not None and rel is not None and head.sequence == rel.sequence
            if rel is None or rel.state is not _S.REPLICATING or not current:
                return None
            try:
                await self._peer(rel.settings).heartbeat(vm_id, rel.sequence)
            except StandbyError as exc:
                if getattr(exc, "message_id", "") == "LogOutOfSequence":  # C lost the point: resync
                    self._update(vm_id, state=_S.WAITING_TO_START_RESYNCHRONIZATION,
                                 health=ReplicationHealth.CRITICAL)
                raise
            self._update(vm_id, health=ReplicationHealth.OK, last_replication_time=self._clock())
        return {"Sequence": str(rel.sequence), "WireBytes": "0", "Heartbeat": "1"}

    async def forward(self, vm_id: str, kind: LogKind) -> dict[str, str]:
        """Ship B's head to C: whole (INITIAL), the changes since C's point (DELTA), or what differs
        (RESYNC)."""
        async with self._lock(vm_id), self.chain_lock(vm_id):
            rel = self._db.relationships.get(vm_id, int(_EXT))
            head = self._db.recovery_points.latest(vm_id)
            if head is None:
                raise Unavailable(f"replica {vm_id} has no recovery point to forward yet",
                                  message_id="ExtendedNothingToForward", vm=vm_id)
            if kind is LogKind.DELTA and head.sequence <= rel.sequence:
                return {"Sequence": str(rel.sequence), "WireBytes": "0"}
            try:
                parent, ranges = await self._plan(vm_id, rel, head, kind)
                wire = await self._ship(vm_id, rel, head, (kind, parent), ranges)
            except StandbyError as exc:
                if kind is not LogKind.DELTA or getattr(exc, "message_id", "") == "LogOutOfSequence":
                    self._update(vm_id, state=_S.WAITING_TO_START_RESYNCHRONIZATION,
                                 health=ReplicationHealth.CRITICAL)
                raise
            self._forwarded(vm_id, head)
        return {"Sequence": str(head.sequence), "Parent": str(parent), "WireBytes": str(wire)}

    async def _plan(self, vm_id: str, rel: Relationship, head: RecoveryPoint,
                    kind: LogKind) -> tuple[int, Ranges | None]:
        images = {disk_id: Path(path) for disk_id, path in head.images}
        if kind is LogKind.INITIAL:
            return 0, None
        peer = self._peer(rel.settings)
        if kind is LogKind.RESYNC:
            status = await peer.replica_status(vm_id)
            out: Ranges = {}
            for disk_id, image in images.items():
                theirs = await peer.hashes(vm_id, disk_id, HASH_BLOCK)
                ours = await asyncio.to_thread(blockhash.image_block_hashes, image, HASH_BLOCK)
                size = await asyncio.to_thread(qemu_img.virtual_size, image)
                out[disk_id] = differing_ranges(ours, theirs, HASH_BLOCK, size)
            return int(status.head_sequence), out
        newer = [p for p in self._db.recovery_points.list(vm_id=vm_id) if rel.sequence < p.sequence]
        tops = [(disk_id, Path(path)) for point in newer for disk_id, path in point.images]
        return rel.sequence, await asyncio.to_thread(_union_of_allocations, tops)

    async def _ship(self, vm_id: str, rel: Relationship, head: RecoveryPoint, what: tuple[LogKind, int],
                    ranges: Ranges | None) -> int:
        kind, parent = what
        vm = self._db.vms.get(vm_id)
        disks = replicated_disks(vm)
        images = dict(head.images)
        header = LogHeader(vm_id, int(_PRIMARY), head.sequence, parent, kind, head.created_at.isoformat(),
                           tuple(DiskInfo(d.disk_id, d.size_bytes) for d in disks),
                           compression=rel.settings.compression_enabled)
        encoder = LogEncoder(header)
        plan = [(index, Path(images[d.disk_id]), None if ranges is None else ranges.get(d.disk_id, []))
                for index, d in enumerate(disks)]
        chunks = stream_in_thread(lambda: _encode(encoder, plan))
        answer = await self._peer(rel.settings).put_log(vm_id, head.sequence, _aiter(chunks))
        check_log_answer(head.sequence, answer)
        return encoder.wire_bytes

    def _forwarded(self, vm_id: str, head: RecoveryPoint) -> None:
        now = self._clock()
        with self._db.transaction():
            self._db.point_holds.release(vm_id, HOLD_REASON)
            self._db.point_holds.hold(PointHold(head.point_id, vm_id, HOLD_REASON, now))
            self._update(vm_id, state=_S.REPLICATING, health=ReplicationHealth.OK, sequence=head.sequence,
                         last_replication_time=now, last_replication_type=ReplicationType.REGULAR)

    # -- ChangeReplicationModeToPrimary ---------------------------------------------------------------------

    def submit_change_mode_to_primary(self, vm_id: str, index: RelationshipIndex = _EXT) -> Job:
        """After a committed failover: B→C becomes B's primary relationship (JobType 123)."""
        target = self._guards.guard(Operation.CHANGE_MODE_TO_PRIMARY, vm_id, index=index)
        if index is not _EXT:
            raise InvalidParameter("ChangeReplicationModeToPrimary takes the extended relationship",
                                   message_id="RelationshipNotOfVm", relationship=str(int(index)), vm=vm_id)
        if self._runner is None:
            raise Unavailable("this needs the primary side of replication (a hypervisor)",
                              message_id="PrimaryUnavailable")

        async def work(handle: JobHandle) -> dict[str, str]:
            return await self.change_mode_to_primary(vm_id)

        return self._submit(JobType.CHANGE_REPLICATION_MODE_TO_PRIMARY, target.vm, "ContinueExtendedJob",
                            work)

    async def change_mode_to_primary(self, vm_id: str) -> dict[str, str]:
        """Steps of the module docstring; the figures of the first cycle."""
        assert self._runner is not None
        from standby.engine.reverse import failover_point, orphan_files

        vm = self._db.vms.get(vm_id)
        ext = self._db.relationships.get(vm_id, int(_EXT))
        point = failover_point(self._db, vm_id)
        differing = await asyncio.to_thread(overlay_source, vm, point) if point.sequence == ext.sequence \
            else None
        points = self._db.recovery_points.list(vm_id=vm_id)
        site = self._db.replicas.find(vm_id)
        with self._db.transaction():
            self._db.relationships.delete(vm_id, int(_EXT))
            primary = self._db.relationships.get(vm_id, int(_PRIMARY))
            self._db.relationships.update(dataclasses.replace(
                primary, state=_S.RESYNCHRONIZING, health=ReplicationHealth.WARNING, settings=ext.settings,
                failed_over_type=ReplicationType.NONE, state_before_failover=None, intent=None,
                sequence=ext.sequence, last_replication_time=ext.last_replication_time))
            self._db.vms.update(dataclasses.replace(self._db.vms.get(vm_id),
                                                    replication_mode=ReplicationMode.PRIMARY))
            for old in points:
                self._db.recovery_points.delete(old.point_id)
            self._db.point_holds.release(vm_id)
            if site is not None:
                self._db.replicas.delete(vm_id)
            self._db.cycles.forget(vm_id, int(_PRIMARY))
        await asyncio.to_thread(orphan_files, vm, points, Path(site.storage_root) if site else None)
        result = await self._runner.run(vm_id, _PRIMARY, CycleKind.RESYNC, differing=differing)
        return {"ReplicationState": str(int(_S.REPLICATING)), "Sequence": str(result.sequence),
                "WireBytes": str(result.wire_bytes)}

    # -- helpers --------------------------------------------------------------------------------------------

    def _peer(self, settings: ReplicationSettings) -> Any:
        if self._peers is None:
            raise Unavailable("this host has no peer client", message_id="PrimaryUnavailable")
        return self._peers(settings)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _update(self, vm_id: str, **changes: Any) -> Relationship:
        for _ in range(8):
            rel = self._db.relationships.get(vm_id, int(_EXT))
            try:
                return self._db.relationships.update(dataclasses.replace(rel, **changes))
            except StandbyError:
                continue
        raise Unavailable(f"the extended relationship of {vm_id} keeps changing", message_id="StaleWrite",
                          kind="Relationship", key=vm_id)

    def _submit(self, job_type: JobType, vm: VirtualMachine, message_id: str,
                work: Callable[[JobHandle], Any]) -> Job:
        if self._jobs is None:
            raise Unavailable("this needs the daemon's job manager", message_id="JobManagerStopped")
        return self._jobs.submit(job_type, element_id=vm.vm_id, description="", work=work,
                                 message_id=message_id, args={"vm": vm.name})


def _union_of_allocations(tops: list[tuple[str, Path]]) -> Ranges:
    """Per disk, the union of the ranges allocated in these top images (sorted, merged)."""
    found: Ranges = {}
    for disk_id, image in tops:
        found.setdefault(disk_id, []).extend(allocated_ranges(image))
    return {disk_id: _merge(ranges) for disk_id, ranges in found.items()}


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            end = max(merged[-1][0] + merged[-1][1], start + length)
            merged[-1] = (merged[-1][0], end - merged[-1][0])
        else:
            merged.append((start, length))
    return merged


def _split(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for offset, length in ranges:
        for position in range(offset, offset + length, MAX_FRAME):
            out.append((position, min(MAX_FRAME, offset + length - position)))
    return out


def _encode(encoder: LogEncoder,
            plan: list[tuple[int, Path, list[tuple[int, int]] | None]]) -> Iterator[bytes]:
    """The log: each disk's ranges (None: every allocated non-zero extent) read from the head image."""
    yield encoder.header_bytes()
    for index, image, ranges in plan:
        with chain.NbdServer(image, writable=False) as server, \
                server.connect([chain.BASE_ALLOCATION]) as client:
            if ranges is None:
                extents = client.block_status(chain.BASE_ALLOCATION)
                todo = _split([(e.offset, e.length) for e in extents if not e.flags & STATE_ZERO])
            else:
                todo = _split(ranges)
            for offset, data in client.read_many(todo, READ_DEPTH):
                if not is_zero(data):
                    yield encoder.frame(index, offset, data)
                elif ranges is not None:  # a zeroed range must reach C as zeros
                    yield encoder.zero(index, offset, len(data))
    yield encoder.end()


async def _aiter(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk
