"""Apply replication logs on the replica: a new recovery point per log, whole or not at all (DESIGN §4).

``ReplicaApplier.apply(vm_id, sequence, chunks)`` decodes the log as it streams (``LogDecoder``), judges it
(``domain.replica.judge_log``: a repeat answers the head, out of sequence raises ``OutOfSequence``),
creates ``rp-N.qcow2.partial`` over the head's images (standalone images of the disks' sizes for an
initial log) and serves each through ``qemu-nbd``. The event loop keeps receiving while one writer thread
per apply (``_Writer``, fed through a queue of a few MiB) checks every frame's xxh3 and writes DATA frames,
and WRITE_ZEROES for ZERO frames, with NBD writes kept in flight across batches (``WriteWindow``). Then it
flushes, checks the full-image digests of ``header.extra["digests"]`` when the primary sent them (resync),
optionally re-reads every written range against the frame checksums (``verify_writes``, ``[replica]
verify_writes``: off by default, qemu-nbd already answers every write with its error), fsyncs and renames;
then one store transaction records the ``RecoveryPoint``, updates the relationship (LastReplicationTime,
LastApplyTime, state 3 after initial replication) and the VM's disks (they point at the head), and adds the
replica's cycle record (``db.cycles``: a success with the log's bytes as received, so the replica's
statistics count what it applied). Any failure before the rename discards the partial files: a log is
applied whole or not at all.

``apply`` answers once the point is durable and recorded. Retention (``domain.retention``) then runs in a
task that still holds the VM's lock (``settled`` waits for it): it merges points, journaled in the
relationship's ``intent`` (``merge:<older>:<newer>``) so start-up finishes a merge a crash interrupted.
A heartbeat (an idle primary's cycle, no new point) runs the same retention after its answer
(``retain_after``): points age out of RecoveryHistory whether or not new ones arrive.

While the replica is failed over (state 5/6/12) logs are kept aside in ``incoming/`` and applied later by
``apply_kept_logs``. One lock per VM serializes applies, merges and removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import xxhash

from standby.domain.clock import Clock
from standby.domain.cycles import CycleKind, CycleOutcome, CycleRecord
from standby.domain.entities import Disk, RecoveryPoint, Relationship
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationState,
    ReplicationType,
    VirtualSystemType,
)
from standby.domain.errors import InvalidParameter, NotFound, StandbyError, Unavailable
from standby.domain.intents import IntentKind, merge_intent, parse
from standby.domain.replica import (
    APPLYING_STATES,
    FAILED_OVER_STATES,
    LogVerdict,
    OutOfSequence,
    ReplicaSite,
    judge_log,
    parse_point_file,
    point_file_name,
)
from standby.domain.retention import PointInfo, plan_retention
from standby.storage import blockhash, chain, qemu_img
from standby.storage.logformat import LogCorrupt, LogDecoder, LogHeader, LogKind
from standby.storage.nbd import NbdClient, WriteWindow
from standby.store.port import Store

log = logging.getLogger("standby.apply")

#: Bytes gathered before they are handed to the apply's writer thread.
BATCH = 1024 * 1024
#: Batches received ahead of the writer (memory stays at about QUEUED × BATCH per apply).
QUEUED = 4
#: NBD writes in flight per disk, across batches.
WRITE_DEPTH = 8
INCOMING = "incoming"
LOG_SUFFIX = ".sbylog"
_PREFIX_SIZE = 12  # magic + header length (storage.logformat)
_PRIMARY = RelationshipIndex.PRIMARY


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The answer to one log: the replica's head afterwards and what happened."""

    head_sequence: int
    point_id: str | None
    applied: bool
    kept_aside: bool = False
    frames: int = 0
    data_bytes: int = 0
    #: A resync log: retention afterwards keeps no history before it.
    resync: bool = False


@dataclass
class _Received:
    """What one apply took in: when it began and how many bytes of the log arrived (its wire size)."""

    started: datetime
    wire_bytes: int = 0


@dataclass
class _Disk:
    """One disk of an apply in progress."""

    disk_id: str
    size: int
    partial: Path
    final: Path
    server: chain.NbdServer | None = None
    client: NbdClient | None = None
    window: WriteWindow | None = None
    #: (offset, length, checksum or None for zeros) of every write, kept only for the read-back verify.
    written: list[tuple[int, int, bytes | None]] = field(default_factory=list)


class ReplicaApplier:
    """Applies logs into recovery-point chains and keeps them retained (see the module docstring)."""

    def __init__(self, db: Store, clock: Clock, *, verify_writes: bool = False) -> None:
        self._db = db
        self._clock = clock
        #: Read every written range back against its checksum before the point counts (``[replica]
        #: verify_writes``): doubles the I/O; without it every frame is still checked before it is written.
        self.verify_writes = verify_writes
        self._locks: dict[str, asyncio.Lock] = {}
        #: Retention running after an apply answered, per VM (it holds the VM's lock until done).
        self._settling: dict[str, asyncio.Task[None]] = {}
        #: Called with every recorded point and its log header (group cuts assemble collection points).
        self.point_listeners: list[Callable[[RecoveryPoint, LogHeader], None]] = []

    def lock(self, vm_id: str) -> asyncio.Lock:
        """The per-VM lock every chain-changing operation holds."""
        return self._locks.setdefault(vm_id, asyncio.Lock())

    def chain_guard(self, vm_id: str) -> asyncio.Lock:
        """Held around each merge, and by whoever chooses a point to build on (failover, test failover)
        until that choice is recorded (state or hold): a chosen point is never merged away under it. Not
        the apply lock: a failover must not wait for a log being applied."""
        return self._locks.setdefault(f"chain:{vm_id}", asyncio.Lock())

    # -- apply --------------------------------------------------------------------------------------------

    async def apply(self, vm_id: str, sequence: int | None, chunks: AsyncIterator[bytes]) -> ApplyResult:
        """Apply one streamed log (``sequence`` None: take it from the header, as for imports).

        Returns once the new point is durable and recorded; retention then runs in the background, still
        holding the VM's lock (the next apply, a merge or a removal waits for it; ``settled`` too).
        """
        lock = self.lock(vm_id)
        await lock.acquire()
        try:
            result = await self._apply_locked(vm_id, sequence, chunks)
        except BaseException:
            lock.release()
            raise
        if result.applied and result.point_id is not None:
            self._retain_after(vm_id, lock, resync=result.resync)
        else:
            lock.release()
        return result

    async def settled(self, vm_id: str) -> None:
        """Wait until the retention that followed the VM's last apply has finished."""
        task = self._settling.get(vm_id)
        if task is not None:
            await asyncio.shield(task)

    def retain_after(self, vm_id: str, lock: asyncio.Lock) -> None:
        """Retention after an answer that added no point (a heartbeat: the points still age), as after an
        apply: in a task that owns ``lock`` (held by the caller) and releases it when done."""
        self._retain_after(vm_id, lock, resync=False)

    def _retain_after(self, vm_id: str, lock: asyncio.Lock, *, resync: bool) -> None:
        """Run retention in a task that owns ``lock`` (held by the caller) and releases it when done."""
        async def run() -> None:
            try:
                await self._retain(vm_id, resync=resync)
            except Exception:
                # The point is durable and recorded; a failed merge stays journaled for start-up recovery.
                log.exception("retention after an apply failed", extra={"fields": {"vm": vm_id}})
            finally:
                lock.release()
                if self._settling.get(vm_id) is task:
                    del self._settling[vm_id]

        task = asyncio.get_running_loop().create_task(run(), name=f"retention {vm_id}")
        self._settling[vm_id] = task

    async def _apply_locked(self, vm_id: str, sequence: int | None,
                            chunks: AsyncIterator[bytes]) -> ApplyResult:
        site = self._db.replicas.get(vm_id)
        relationship = self._db.relationships.get(vm_id, int(_PRIMARY))
        decoder = LogDecoder()
        received = _Received(self._clock())
        stream = _coalesce(_counted(chunks, received), BATCH)
        raw_header, first = await _read_header(decoder, stream)
        header = decoder.header
        assert header is not None
        _check_header(header, vm_id, sequence)
        if relationship.state in FAILED_OVER_STATES:
            return await self._keep_aside(site, header, raw_header + first, stream)
        head = self._db.recovery_points.latest(vm_id)
        if relationship.state not in APPLYING_STATES:
            await _drain(stream)
            raise Unavailable(f"replication of {vm_id} is suspended on the replica (state "
                              f"{int(relationship.state)})", message_id="ReplicaNotAccepting", vm=vm_id,
                              state=str(int(relationship.state)))
        judged = judge_log(head=head.sequence if head else None, base=site.base_sequence,
                           sequence=header.sequence, parent=header.parent_sequence,
                           initial=header.kind == LogKind.INITIAL, resync=header.kind == LogKind.RESYNC)
        if judged.verdict is not LogVerdict.APPLY:
            await _drain(stream)
            head_sequence = head.sequence if head else 0
            if judged.verdict is LogVerdict.REPEAT:
                return ApplyResult(head_sequence, head.point_id if head else None, applied=False)
            raise OutOfSequence(head_sequence, judged.reason)
        return await self._apply_new(site, relationship, head, header, decoder, first, stream, received)

    async def _apply_new(  # noqa: PLR0917 - the pieces of one apply, handed over once
        self, site: ReplicaSite, relationship: Relationship, head: RecoveryPoint | None, header: LogHeader,
        decoder: LogDecoder, first: bytes, stream: AsyncIterator[bytes], received: _Received,
    ) -> ApplyResult:
        disks = self._plan_disks(site, head, header)
        renamed = False
        writer: _Writer | None = None
        try:
            bases = {} if header.kind == LogKind.INITIAL else self._base_images(site.vm_id, head)
            await asyncio.to_thread(_open_disks, disks, bases)
            # The event loop keeps receiving while one thread decodes and writes (a bounded queue between).
            writer = _Writer(decoder, disks, verify=self.verify_writes)
            await writer.put(first)
            async for chunk in stream:
                await writer.put(chunk)
            await writer.close()
            summary = decoder.finish()
            await asyncio.to_thread(_finish_disks, disks, header, self.verify_writes)
            renamed = True
            point = self._record(site, relationship, head, header, disks, received=received,
                                 data_bytes=summary.data_bytes)
        except BaseException:
            try:
                if writer is not None:
                    await writer.abort()
            finally:  # also when a second cancellation lands while the writer stops
                await asyncio.to_thread(_discard, disks, renamed)
            raise
        self._tell_listeners(point, header)
        log.info("log applied", extra={"fields": {"vm": site.vm_id, "sequence": header.sequence,
                                                  "frames": summary.frames, "bytes": summary.data_bytes}})
        return ApplyResult(header.sequence, point.point_id, applied=True, frames=summary.frames,
                           data_bytes=summary.data_bytes, resync=header.kind == LogKind.RESYNC)

    def _plan_disks(self, site: ReplicaSite, head: RecoveryPoint | None, header: LogHeader) -> list[_Disk]:
        vm = self._db.vms.get(site.vm_id)
        sizes = {disk.disk_id: disk.size_bytes for disk in vm.disks}
        named = [disk.disk_id for disk in header.disks]
        if sorted(named) != sorted(sizes) or len(set(named)) != len(named):
            raise InvalidParameter(f"the log covers disks {named}, the replica has {sorted(sizes)}",
                                   message_id="LogDisksMismatch", vm=site.vm_id)
        planned = []
        for disk in header.disks:
            if disk.size != sizes[disk.disk_id]:
                raise InvalidParameter(f"disk {disk.disk_id} is {disk.size} bytes in the log, "
                                       f"{sizes[disk.disk_id]} on the replica", message_id="LogDisksMismatch",
                                       vm=site.vm_id)
            folder = disk_folder(site, disk.disk_id)
            partial = folder / point_file_name(header.sequence, partial=True)
            planned.append(_Disk(disk.disk_id, disk.size, partial, folder / point_file_name(header.sequence)))
        return planned

    def _base_images(self, vm_id: str, head: RecoveryPoint | None) -> dict[str, Path]:
        """What each new overlay stands on: the head's images, else (seeded) the VM's own disks."""
        if head is not None:
            return {disk_id: Path(path) for disk_id, path in head.images}
        vm = self._db.vms.get(vm_id)
        return {disk.disk_id: Path(disk.path) for disk in vm.disks if disk.path and Path(disk.path).is_file()}

    def _record(self, site: ReplicaSite, relationship: Relationship, head: RecoveryPoint | None,
                header: LogHeader, disks: list[_Disk], *, received: _Received,
                data_bytes: int) -> RecoveryPoint:
        now = self._clock()
        point = RecoveryPoint(
            point_id=str(uuid.uuid4()).upper(), vm_id=site.vm_id, sequence=header.sequence,
            created_at=_cut_time(header, now), kind=_point_kind(header),
            images=tuple((disk.disk_id, str(disk.final)) for disk in disks),
            parent_id=head.point_id if head is not None and header.kind != LogKind.INITIAL else None,
        )
        kind = _replication_type(header)
        # Reloaded: a mirrored state change may have been written while the log streamed in.
        relationship = self._db.relationships.get(relationship.vm_id, int(relationship.index))
        failed_over = relationship.state in _FAILOVER_OWNS_DISKS
        updated = replace(
            relationship, state=_state_after_apply(relationship.state),
            health=relationship.health if failed_over else ReplicationHealth.OK,
            last_replication_time=now, last_apply_time=now, last_replication_type=kind,
            last_app_consistent_time=now if header.application_consistent else
            relationship.last_app_consistent_time, sequence=header.sequence,
        )
        vm = self._db.vms.get(site.vm_id)
        paths = {disk.disk_id: str(disk.final) for disk in disks}
        new_disks = tuple(Disk(d.disk_id, paths.get(d.disk_id, d.path), d.size_bytes) for d in vm.disks)
        with self._db.transaction():
            self._db.recovery_points.insert(point)
            self._db.relationships.update(updated)
            # A failover that finished while this log streamed in (it takes no apply lock) owns the VM's
            # disks now, its overlays: pointing them at the new head would let the failed-over VM write
            # into a recovery point. RevertFailover points them at the head, this point.
            if not failed_over:
                self._db.vms.update(replace(vm, disks=new_disks))
            if header.kind in (LogKind.INITIAL, LogKind.RESYNC):
                self._db.replicas.update(replace(self._db.replicas.get(site.vm_id),
                                                 base_sequence=header.sequence))
            self._db.cycles.record(_applied_cycle(site.vm_id, header, received, data_bytes, now))
        return point

    def _tell_listeners(self, point: RecoveryPoint, header: LogHeader) -> None:
        for listener in self.point_listeners:
            try:
                listener(point, header)
            except StandbyError:  # the point stands; a listener's failure is its own
                log.exception("a recovery-point listener failed", extra={"fields": {"vm": point.vm_id}})

    # -- kept aside while failed over ---------------------------------------------------------------------

    async def _keep_aside(self, site: ReplicaSite, header: LogHeader, first: bytes,
                          stream: AsyncIterator[bytes]) -> ApplyResult:
        folder = Path(site.storage_root) / INCOMING
        final = folder / f"{header.sequence:010d}{LOG_SUFFIX}"
        partial = final.with_name(final.name + ".partial")
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        decoder = LogDecoder()
        try:
            with partial.open("wb") as handle:
                await asyncio.to_thread(_check_and_write, decoder, handle, first)
                async for chunk in stream:
                    await asyncio.to_thread(_check_and_write, decoder, handle, chunk)
                decoder.finish()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
            chain.fsync_dir(folder)
        except BaseException:
            chain.remove_quietly(partial)
            raise
        head = self._db.recovery_points.latest(site.vm_id)
        log.info("log kept aside while failed over", extra={"fields": {"vm": site.vm_id,
                                                                        "sequence": header.sequence}})
        return ApplyResult(head.sequence if head else 0, None, applied=False, kept_aside=True)

    async def apply_kept_logs(self, vm_id: str) -> list[ApplyResult]:
        """Apply the logs kept in ``incoming/`` in sequence order (after a failover is reverted).

        Returns after the retention that followed the last of them (a background job, not an answer).
        """
        site = self._db.replicas.get(vm_id)
        folder = Path(site.storage_root) / INCOMING
        results = []
        for path in sorted(folder.glob(f"*{LOG_SUFFIX}")) if folder.is_dir() else []:
            results.append(await self.apply(vm_id, None, read_file_chunks(path)))
            chain.remove_quietly(path)
        await self.settled(vm_id)
        return results

    # -- retention ----------------------------------------------------------------------------------------

    async def retain(self, vm_id: str) -> int:
        """Run retention for one replica now; how many points were merged away."""
        async with self.lock(vm_id):
            return await self._retain(vm_id, resync=False)

    async def _retain(self, vm_id: str, *, resync: bool) -> int:
        relationship = self._db.relationships.find(vm_id, int(_PRIMARY))
        if relationship is None or relationship.intent or relationship.state in FAILED_OVER_STATES:
            return 0  # another use case is mid-way (its intent), or a failover holds the chain
        points = self._db.recovery_points.list(vm_id=vm_id)
        held = self._highest_held_sequence(vm_id, points)
        settings = relationship.settings
        history = 0 if resync else settings.recovery_history
        infos = [PointInfo.of(point, in_use=held is not None and point.sequence <= held) for point in points]
        plan = plan_retention(infos, self._clock(), history, settings.app_consistent_interval_hours)
        merged = 0
        for merge in plan.drop:
            async with self.chain_guard(vm_id):
                # Reload both: an earlier merge of this plan may have changed the newer one's parent.
                older = self._db.recovery_points.get(merge.point_id)
                newer = self._db.recovery_points.get(merge.into_id)
                if not self._may_still_merge(vm_id, older):
                    break  # a failover or test failover chose a point meanwhile: the rest waits
                await self._merge(older, newer)
                merged += 1
        return merged

    def _may_still_merge(self, vm_id: str, older: RecoveryPoint) -> bool:
        relationship = self._db.relationships.find(vm_id, int(_PRIMARY))
        if relationship is None or relationship.intent or relationship.state in FAILED_OVER_STATES:
            return False
        held = self._highest_held_sequence(vm_id, self._db.recovery_points.list(vm_id=vm_id))
        return held is None or older.sequence > held

    def _highest_held_sequence(self, vm_id: str, points: Iterable[RecoveryPoint]) -> int | None:
        # A held point (failover or test disk on it) keeps its whole older chain: QEMU holds those files.
        holds = getattr(self._db, "point_holds", None)
        held_ids = {hold.point_id for hold in holds.list()} if holds is not None else set()
        sequences = [point.sequence for point in points if point.point_id in held_ids]
        return max(sequences) if sequences else None

    async def _merge(self, older: RecoveryPoint, newer: RecoveryPoint) -> None:
        relationship = self._db.relationships.get(older.vm_id, int(_PRIMARY))
        journaled = self._db.relationships.update(
            replace(relationship, intent=merge_intent(older.point_id, newer.point_id)))
        await asyncio.to_thread(_merge_images, older, newer)
        self._finish_merge(journaled, older, newer)

    def _finish_merge(self, relationship: Relationship, older: RecoveryPoint, newer: RecoveryPoint) -> None:
        with self._db.transaction():
            self._db.recovery_points.delete(older.point_id)
            self._db.recovery_points.update(replace(newer, parent_id=older.parent_id))
            self._db.relationships.update(replace(relationship, intent=None))
        log.info("recovery point merged", extra={"fields": {"vm": older.vm_id, "dropped": older.sequence,
                                                            "into": newer.sequence}})

    # -- start-up -----------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Start-up: finish journaled merges, delete partial images and logs, and orphaned point files."""
        for site in self._db.replicas.list():
            try:
                async with self.lock(site.vm_id):
                    await self._recover_merge(site.vm_id)
                    await asyncio.to_thread(self._sweep, site)
            except StandbyError:
                log.exception("replica start-up cleanup failed", extra={"fields": {"vm": site.vm_id}})

    async def _recover_merge(self, vm_id: str) -> None:
        relationship = self._db.relationships.find(vm_id, int(_PRIMARY))
        pending = parse(relationship.intent) if relationship is not None else None
        if relationship is None or pending is None or pending.kind is not IntentKind.MERGE:
            return
        older_id, newer_id = pending.points
        older, newer = self._db.recovery_points.find(older_id), self._db.recovery_points.find(newer_id)
        if older is None or newer is None:
            self._db.relationships.update(replace(relationship, intent=None))
            return
        await asyncio.to_thread(_merge_images, older, newer)
        self._finish_merge(relationship, older, newer)

    def _sweep(self, site: ReplicaSite) -> None:
        head = self._db.recovery_points.latest(site.vm_id)
        head_sequence = head.sequence if head else 0
        points = self._db.recovery_points.list(vm_id=site.vm_id)
        recorded = {path for point in points for _, path in point.images}
        disks_root = Path(site.storage_root) / "disks"
        for path in disks_root.glob("*/rp-*") if disks_root.is_dir() else []:
            parsed = parse_point_file(path.name)
            if parsed is None:
                continue
            sequence, partial = parsed
            if partial or (sequence > head_sequence and str(path) not in recorded):
                log.warning("removing an unfinished recovery point file",
                            extra={"fields": {"path": str(path)}})
                chain.remove_quietly(path)
        incoming = Path(site.storage_root) / INCOMING
        for path in incoming.glob("*.partial") if incoming.is_dir() else []:
            chain.remove_quietly(path)


# -- helpers (worker threads) -----------------------------------------------------------------------------


def disk_folder(site: ReplicaSite, disk_id: str) -> Path:
    """``<root>/disks/<disk_id>`` of a replica."""
    return Path(site.storage_root) / "disks" / disk_id


def _open_disks(disks: list[_Disk], bases: dict[str, Path]) -> None:
    for disk in disks:
        disk.partial.parent.mkdir(parents=True, exist_ok=True)
        chain.remove_quietly(disk.partial)  # a leftover of a crashed apply of the same sequence
        base = bases.get(disk.disk_id)
        if base is None:
            qemu_img.create(disk.partial, disk.size)
        else:
            qemu_img.create_overlay(disk.partial, base, size=disk.size)
        disk.server = chain.NbdServer(disk.partial, writable=True)
        disk.client = disk.server.connect([chain.BASE_ALLOCATION])
        disk.window = disk.client.write_window(WRITE_DEPTH)


class _Writer:
    """The thread of one apply that decodes the log's frames and writes them, fed through a bounded queue.

    The event loop ``put``s received batches and goes on receiving; the thread feeds them to the decoder
    (zstd, xxh3: every frame is checked before it is written) and sends each frame to its disk's
    ``WriteWindow``, so NBD writes stay in flight across batches. ``close`` waits until every write is
    answered and raises what failed in the thread (``LogCorrupt``, an NBD error); ``abort`` stops the thread
    without writing the rest. After a failure the thread only drains the queue, so ``put`` never blocks on
    a dead writer; ``put`` raises the failure at the next batch, which ends the apply early.
    """

    def __init__(self, decoder: LogDecoder, disks: list[_Disk], *, verify: bool) -> None:
        self._decoder = decoder
        self._disks = disks
        self._verify = verify
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(QUEUED)
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: no more bytes
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="standby-apply-writer", daemon=True)
        self._thread.start()

    async def put(self, chunk: bytes) -> None:
        """Queue received bytes (waits while ``QUEUED`` batches are ahead of the writer)."""
        if self._error is not None:
            raise self._error
        if chunk:
            await self._slots.acquire()
            self._queue.put(chunk)

    async def close(self) -> None:
        """No more bytes: wait until everything queued is written and answered; raise the writer's error."""
        self._queue.put(None)
        await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        """Stop the thread (what is queued is dropped) and wait for it, so the disks can be discarded."""
        self._aborted = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        ended = False  # the end marker was taken: nothing more will be queued
        try:
            while (chunk := self._queue.get()) is not None:
                self._release_slot()
                if self._error is None and not self._aborted:
                    self._write(chunk)
            ended = True
            if self._error is None and not self._aborted:
                for disk in self._disks:
                    assert disk.window is not None
                    disk.window.drain()
        except BaseException as exc:  # handed to the event loop, raised there
            self._error = exc
            if not ended:  # a failed drain comes after the end marker: waiting for another would hang
                self._drain_queue()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                self._loop.call_soon_threadsafe(_set_done, self._done)

    def _drain_queue(self) -> None:
        # Keep taking batches (freeing their slots) until the end marker, so ``put`` never blocks forever.
        while self._queue.get() is not None:
            self._release_slot()

    def _release_slot(self) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody puts any more
            self._loop.call_soon_threadsafe(self._slots.release)

    def _write(self, chunk: bytes) -> None:
        for frame in self._decoder.feed(chunk):
            disk = self._disks[frame.disk_index]
            assert disk.window is not None
            disk.window.write(frame.offset, frame.data, frame.length)
            if self._verify:
                digest = None if frame.data is None else frame.checksum
                disk.written.append((frame.offset, frame.length, digest))


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _finish_disks(disks: list[_Disk], header: LogHeader, verify: bool) -> None:
    """Flush, (verify,) close, fsync, rename every disk; raise ``LogCorrupt`` when a check fails."""
    digests = header.extra.get("digests")
    for disk in disks:
        assert disk.client is not None and disk.server is not None
        disk.client.flush()
        if verify:
            _verify_written(disk)
        if isinstance(digests, dict) and disk.disk_id in digests:
            got = blockhash.nbd_digest(disk.client)
            if got != str(digests[disk.disk_id]):
                raise LogCorrupt(f"disk {disk.disk_id} does not match the primary's digest after the apply",
                                 message_id="LogCorrupt")
        disk.client.close()
        disk.client = None
        disk.server.close()
        disk.server = None
        chain.fsync_file(disk.partial)
    for disk in disks:
        os.replace(disk.partial, disk.final)
    for folder in {disk.final.parent for disk in disks}:
        chain.fsync_dir(folder)


def _verify_written(disk: _Disk) -> None:
    assert disk.client is not None
    expected = {offset: digest for offset, _, digest in disk.written}
    ranges = [(offset, length) for offset, length, _ in disk.written]
    for offset, data in disk.client.read_many(ranges, depth=16):
        digest = expected[offset]
        ok = data.count(0) == len(data) if digest is None else xxhash.xxh3_128_digest(data) == digest
        if not ok:
            raise LogCorrupt(f"disk {disk.disk_id} reads back differently at offset {offset}",
                             message_id="LogCorrupt")


def _discard(disks: list[_Disk], renamed: bool) -> None:
    for disk in disks:
        with contextlib.suppress(Exception):
            if disk.client is not None:
                disk.client.close()
        with contextlib.suppress(Exception):
            if disk.server is not None:
                disk.server.close()
        chain.remove_quietly(disk.partial)
        if renamed:
            chain.remove_quietly(disk.final)


def _merge_images(older: RecoveryPoint, newer: RecoveryPoint) -> None:
    newer_images = dict(newer.images)
    for disk_id, path in older.images:
        if disk_id in newer_images:
            chain.merge(Path(path), Path(newer_images[disk_id]))


def _check_and_write(decoder: LogDecoder, handle: BinaryIO, data: bytes) -> None:
    decoder.feed(data)
    handle.write(data)


# -- helpers (pure) ---------------------------------------------------------------------------------------


def _check_header(header: LogHeader, vm_id: str, sequence: int | None) -> None:
    if header.vm_id.upper() != vm_id.upper():
        raise InvalidParameter(f"the log is for virtual machine {header.vm_id}, not {vm_id}",
                               message_id="LogForOtherVm", vm=vm_id)
    if sequence is not None and header.sequence != sequence:
        raise InvalidParameter(f"the log carries sequence {header.sequence}, the request names {sequence}",
                               message_id="LogSequenceMismatch", vm=vm_id)
    if header.relationship_index != int(_PRIMARY):
        raise InvalidParameter("only the primary relationship's logs are applied here",
                               message_id="LogRelationshipUnsupported", vm=vm_id)


def _point_kind(header: LogHeader) -> VirtualSystemType:
    if header.kind == LogKind.PLANNED:
        return VirtualSystemType.REPLICA_PLANNED_FAILOVER
    if header.application_consistent:
        return VirtualSystemType.REPLICA_APPLICATION_CONSISTENT
    return VirtualSystemType.REPLICA_STANDARD


def _replication_type(header: LogHeader) -> ReplicationType:
    if header.kind == LogKind.PLANNED:
        return ReplicationType.PLANNED
    if header.application_consistent:
        return ReplicationType.APPLICATION_CONSISTENT
    return ReplicationType.REGULAR


#: States in which the replica VM's disks are a failover's overlays, not the head's images.
_FAILOVER_OWNS_DISKS = frozenset({ReplicationState.RECOVERED, ReplicationState.COMMITTED})


def _state_after_apply(state: ReplicationState) -> ReplicationState:
    # Initial replication done, a resync finished, or an error cleared by a good log: replicating.
    return ReplicationState.REPLICATING if state in APPLYING_STATES else state


def _applied_cycle(vm_id: str, header: LogHeader, received: _Received, data_bytes: int,
                   now: datetime) -> CycleRecord:
    """The replica's record of an applied log: the same kind, sequence and sizes the primary records."""
    latency_ms = max(0, int((now - received.started).total_seconds() * 1000))
    return CycleRecord(vm_id, int(_PRIMARY), header.sequence, CycleKind(header.kind.value),
                       CycleOutcome.SUCCESS, received.started, now, dirty_bytes=data_bytes,
                       wire_bytes=received.wire_bytes, latency_ms=latency_ms,
                       app_consistent=header.application_consistent)


def _cut_time(header: LogHeader, fallback: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(header.cut_time)
    except ValueError:
        return fallback
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _counted(chunks: AsyncIterator[bytes], received: _Received) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        received.wire_bytes += len(chunk)
        yield chunk


async def _coalesce(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup a byte stream into pieces of at least ``size`` bytes (the last may be shorter)."""
    parts: list[bytes] = []
    gathered = 0
    async for chunk in chunks:
        parts.append(chunk)
        gathered += len(chunk)
        if gathered >= size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)  # one copy, on the event loop
            parts.clear()
            gathered = 0
    if parts:
        yield b"".join(parts)


async def _read_header(decoder: LogDecoder, stream: AsyncIterator[bytes]) -> tuple[bytes, bytes]:
    """Feed the decoder exactly the header; return its raw bytes and the bytes after it (first frames)."""
    pending = bytearray()
    need: int | None = None
    async for chunk in stream:
        pending += chunk
        if need is None and len(pending) >= _PREFIX_SIZE:
            decoder.feed(bytes(pending[:_PREFIX_SIZE]))  # checks the magic and the header's length
            need = _PREFIX_SIZE + int.from_bytes(pending[8:_PREFIX_SIZE], "big")
        if need is not None and len(pending) >= need:
            decoder.feed(bytes(pending[_PREFIX_SIZE:need]))
            return bytes(pending[:need]), bytes(pending[need:])
    if need is None and pending:
        decoder.feed(bytes(pending))  # a stream too short even for the prefix: report a bad magic if so
    raise LogCorrupt("the log ended before its header", message_id="LogCorrupt")


async def _drain(stream: AsyncIterator[bytes]) -> None:
    # Read the rest of a refused or repeated log so the HTTP exchange ends cleanly.
    async for _ in stream:
        pass


async def read_file_chunks(path: Path, size: int = 4 * 1024 * 1024) -> AsyncIterator[bytes]:
    """A file as an async byte stream (imports, kept-aside logs)."""
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", message_id="ObjectNotFound", kind="file",
                       key=str(path)) from None
    try:
        while chunk := await asyncio.to_thread(handle.read, size):
            yield chunk
    finally:
        handle.close()
