"""Capture on the primary: consistent cuts of a VM's disks and reading what changed (DESIGN §4, §7).

A cut N of a running VM is one step of the hypervisor over every included disk (``BlockOps.cut``, one QMP
``transaction``): add the persistent bitmap ``rep-N`` (it records the writes after the cut), stop the
previous one ``rep-P``, and start a copy-before-write job into a fleecing node ``fleece-N-<disk>`` over a
scratch image, backed by the disk. The fleecing nodes are exported read-only over the hypervisor's NBD server
(``<run>/nbd.sock``) with ``rep-P``, so the reader sees the disks exactly as they were at the cut while the
guest keeps writing.

``commit`` drops ``rep-P`` (the replica has the data); ``abort`` merges ``rep-P`` into ``rep-N`` so the next
cycle ships those blocks again — nothing is lost. Both tear the cut down in DESIGN §7's order and both are
idempotent: after a daemon restart they settle whatever a half-done cycle left in QEMU.

A VM that is off is cut with ``qemu-img bitmap`` on its images and read through ``qemu-nbd -B rep-P``.

``CutReader.blocks`` reads in a thread of its own a few blocks ahead of its caller (the log encoder), so
the NBD reads overlap the encoding; ``stream_in_thread`` runs that producer off the event loop.

A group cut (engine/group_cycle.py) takes a cut in steps, so that its members are paused around the
transactions only: ``prepare_cut`` (fleecing nodes, and ``rep-N`` added already — a few writes before the cut
are then recorded twice, never missed), ``transact_cut`` (paused: stop ``rep-P`` + the copy-before-write
jobs), ``export_cut``.

``dirty_bytes`` reads how much the recording bitmap of a running VM has marked since the last cut (a query
of the hypervisor, no cut): the cycle sends a heartbeat instead of a log when it is zero (engine/cycle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from standby.domain.cycles import bitmap_name, bitmap_sequence
from standby.domain.entities import Disk, VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import InvalidParameter, InvalidState, StandbyError
from standby.hypervisor.port import BlockOps, CutDisk, FrozenGuest
from standby.hypervisor.qemu import offline
from standby.storage import blockhash
from standby.storage.logformat import MAX_FRAME, is_zero
from standby.storage.nbd import STATE_DIRTY, STATE_ZERO, NbdClient, dirty_ranges

log = logging.getLogger(__name__)

#: Dirty-bitmap granularity (QEMU's default; DESIGN §7).
GRANULARITY = 64 * 1024
#: Reads are split at this size (one log frame each).
READ_CHUNK = MAX_FRAME
#: Default block size of the resync hash compare.
HASH_BLOCK = 256 * 1024
#: NBD requests kept in flight while reading.
READ_DEPTH = 16
#: Blocks (of up to READ_CHUNK) read ahead of the log encoder.
PREFETCH = 4
ZERO_HASH = bytes(16)
#: One item of what a cut reads: (disk index, offset, data or None for zeros, length).
Block = tuple[int, int, bytes | None, int]


class TrackingLost(InvalidState):
    """The dirty bitmaps cannot be trusted (QEMU was killed, a bitmap is missing): resync required."""


class ReadMode(StrEnum):
    """What a reader reads of a cut."""

    DELTA = "delta"  # the extents dirty in the previous bitmap
    FULL = "full"  # every allocated, non-zero extent (initial replication, thin-aware)
    RANGES = "ranges"  # given ranges (resync: the blocks whose hashes differ)


class CaptureHypervisor(Protocol):
    """What capture needs of the hypervisor port (``hypervisor.port.Hypervisor``)."""

    def state(self, vm_id: str) -> EnabledState:
        """The VM's current state."""
        ...

    def block(self, vm_id: str) -> BlockOps:
        """The disk operations of a running VM."""
        ...

    async def freeze_filesystems(self, vm_id: str, *, agent_timeout: float = 2.0,
                                 freeze_timeout: float = 10.0) -> FrozenGuest:
        """Freeze the guest's file systems through its agent."""
        ...


@dataclass(frozen=True, slots=True)
class Cut:
    """One consistent cut: ``sequence`` is N; ``previous`` is P, the bitmap a DELTA read uses."""

    vm_id: str
    sequence: int
    previous: int | None
    disks: tuple[Disk, ...]
    at: datetime
    online: bool
    run_dir: Path
    app_consistent: bool = False
    app_consistent_failed: bool = False

    @property
    def socket(self) -> Path:
        """QEMU's NBD server socket of the VM."""
        return self.run_dir / "nbd.sock"

    def node(self, disk_id: str) -> str:
        """The fleecing node (and export) of a disk in this cut."""
        return f"fleece-{self.sequence}-{disk_id}"

    def job(self, disk_id: str) -> str:
        """The copy-before-write job of a disk in this cut."""
        return f"cbw-{self.sequence}-{disk_id}"

    def scratch(self, disk_id: str) -> Path:
        """The scratch image behind the fleecing node of a disk."""
        return self.run_dir / f"fleece-{self.sequence}-{disk_id}.qcow2"

    def offline_socket(self, disk_id: str) -> Path:
        """The qemu-nbd socket of a disk of an off VM."""
        return self.run_dir / f"off-{self.sequence}-{disk_id}.sock"

    def fleecing(self, disk: Disk) -> CutDisk:
        """What the hypervisor needs to know of a disk's part in this cut."""
        disk_id = disk.disk_id
        return CutDisk(disk_id, self.node(disk_id), self.job(disk_id), self.scratch(disk_id))

    def fleeced(self) -> tuple[CutDisk, ...]:
        """``fleecing`` of every disk of the cut."""
        return tuple(self.fleecing(disk) for disk in self.disks)

    @property
    def previous_bitmap(self) -> str | None:
        """``rep-P``: the bitmap a DELTA read uses (None for a fresh start)."""
        return bitmap_name(self.previous) if self.previous is not None else None


def included_disks(vm: VirtualMachine, wanted: Sequence[str]) -> tuple[Disk, ...]:
    """The VM's disks that replicate (all when ``wanted`` is empty); an unknown disk id is refused."""
    if not wanted:
        return vm.disks
    known = {disk.disk_id: disk for disk in vm.disks}
    missing = [disk_id for disk_id in wanted if disk_id not in known]
    if missing:
        raise InvalidParameter(f"virtual machine {vm.name} has no disk {missing[0]!r}",
                               message_id="DiskNotOfVm", vm=vm.name, disk=missing[0])
    return tuple(disk for disk in vm.disks if disk.disk_id in wanted)


class Capture:
    """Cuts, reads, commits and aborts over one hypervisor; per-VM files live in ``run_root/<vm_id>``."""

    def __init__(self, hypervisor: CaptureHypervisor, run_root: Path) -> None:
        self._hv = hypervisor
        self._run_root = run_root

    def running(self, vm_id: str) -> bool:
        """Whether the VM's QEMU runs (then cuts go through QMP)."""
        return self._hv.state(vm_id) is not EnabledState.DISABLED

    # -- cut ---------------------------------------------------------------------------------------

    async def cut(self, vm_id: str, disks: Sequence[Disk], sequence: int, *, previous: int | None,
                  now: datetime, app_consistent: bool = False) -> Cut:
        """Cut N=``sequence``: ``previous`` None starts tracking afresh (initial replication, resync)."""
        if not disks:
            raise InvalidParameter("a cut needs at least one disk", message_id="NoDiskToReplicate")
        run_dir = self._run_root / vm_id
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.running(vm_id):
            cut = Cut(vm_id, sequence, previous, tuple(disks), now, True, run_dir)
            return await self._cut_online(cut, app_consistent)
        cut = Cut(vm_id, sequence, previous, tuple(disks), now, False, run_dir)
        await asyncio.to_thread(self._cut_offline, cut)
        return cut

    async def _cut_online(self, cut: Cut, app_consistent: bool) -> Cut:
        ops = self._hv.block(cut.vm_id)
        for disk in cut.disks:
            await self._check_bitmaps(ops, disk, cut)
        try:
            for disk in cut.disks:
                await ops.add_fleecing(cut.fleecing(disk), disk.size_bytes or None)
            frozen, failed = await self._transaction(ops, cut, app_consistent)
            await self._export(ops, cut)
        except BaseException:
            with contextlib.suppress(StandbyError):
                await self._teardown_online(cut)
            raise
        return Cut(cut.vm_id, cut.sequence, cut.previous, cut.disks, cut.at, True, cut.run_dir,
                   frozen, failed)

    async def _check_bitmaps(self, ops: BlockOps, disk: Disk, cut: Cut) -> None:
        listed = await ops.bitmaps(disk.disk_id)
        # A copy-before-write job adds an anonymous bitmap of its own: only our named ones count.
        names = [b.name for b in listed if bitmap_sequence(b.name) is not None]
        _check_names(disk, cut, names, [b.name for b in listed if b.inconsistent])
        if cut.previous is None and names:
            # Left over from an earlier relationship: meaningless for a fresh start.
            await ops.drop_bitmaps({disk.disk_id: names})

    async def tracking(self, vm_id: str, disks: Sequence[Disk]) -> int | None:
        """The sequence of the bitmap recording writes now (an unfinished cut is aborted first), None when
        nothing tracks; ``TrackingLost`` when a bitmap is inconsistent or the disks disagree."""
        found = await self._bitmap_sets(vm_id, disks)
        newest = max((max(seqs) for seqs in found.values() if seqs), default=None)
        if newest is not None and any(len(seqs) > 1 for seqs in found.values()):
            await self.abort(vm_id, disks, newest)
            found = await self._bitmap_sets(vm_id, disks)
        sets = {frozenset(seqs) for seqs in found.values()}
        if len(sets) > 1 or any(len(s) > 1 for s in sets):
            raise TrackingLost(f"the disks of {vm_id} track changes differently; a resynchronization is "
                               "required", message_id="TrackingLost", disk=",".join(found))
        only = next(iter(sets), frozenset())
        return next(iter(only), None)

    async def dirty_bytes(self, vm_id: str, disks: Sequence[Disk], sequence: int) -> int | None:
        """Bytes the bitmap ``rep-<sequence>`` has marked dirty over ``disks`` (one QMP query per disk), or
        None when that cannot be told cheaply: the VM is off (its bitmaps sit in the images; counting them
        needs a process) or a disk lacks that bitmap. Zero means no write since cut ``sequence``."""
        if not self.running(vm_id):
            return None
        ops = self._hv.block(vm_id)
        name = bitmap_name(sequence)
        total = 0
        for disk in disks:
            found = [b for b in await ops.bitmaps(disk.disk_id) if b.name == name and b.counts_writes]
            if not found:
                return None
            total += found[0].dirty_bytes
        return total

    async def drop_tracking(self, vm_id: str, disks: Sequence[Disk]) -> None:
        """Settle any cut and remove every replication bitmap (the relationship was removed)."""
        inconsistent = await self._any_inconsistent(vm_id, disks)
        found = {} if inconsistent else await self._bitmap_sets(vm_id, disks)
        newest = max((max(seqs) for seqs in found.values() if seqs), default=None)
        if newest is not None:
            await self.commit(vm_id, disks, newest)  # drops the older ones
        for disk in disks:
            names = await self._names(vm_id, disk)
            if self.running(vm_id):
                if names:
                    await self._hv.block(vm_id).drop_bitmaps({disk.disk_id: names})
                continue
            for name in names:
                await asyncio.to_thread(offline.bitmap_remove, Path(disk.path), name)

    async def _names(self, vm_id: str, disk: Disk) -> list[str]:
        if self.running(vm_id):
            listed = [b.name for b in await self._hv.block(vm_id).bitmaps(disk.disk_id)]
        else:
            listed = [b.name for b in await asyncio.to_thread(offline.image_bitmaps, Path(disk.path))]
        return [name for name in listed if bitmap_sequence(name) is not None]

    async def _any_inconsistent(self, vm_id: str, disks: Sequence[Disk]) -> bool:
        try:
            await self._bitmap_sets(vm_id, disks)
        except TrackingLost:
            return True
        return False

    async def _bitmap_sets(self, vm_id: str, disks: Sequence[Disk]) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for disk in disks:
            if self.running(vm_id):
                listed = [(b.name, b.inconsistent) for b in await self._hv.block(vm_id).bitmaps(disk.disk_id)]
            else:
                listed = [(b.name, b.inconsistent)
                          for b in await asyncio.to_thread(offline.image_bitmaps, Path(disk.path))]
            if any(bad for name, bad in listed if bitmap_sequence(name) is not None):
                raise TrackingLost(f"the change tracking of disk {disk.disk_id} is inconsistent (QEMU "
                                   "stopped uncleanly); a resynchronization is required",
                                   message_id="TrackingLost", disk=disk.disk_id)
            found[disk.disk_id] = sorted(s for s in (bitmap_sequence(n) for n, _ in listed) if s is not None)
        return found

    async def _transaction(self, ops: BlockOps, cut: Cut, app_consistent: bool, *,
                           add: bool = True) -> tuple[bool, bool]:
        """The cut itself; ``add=False`` when ``rep-N`` was added already (a group cut's ``prepare_cut``)."""
        frozen = await self._freeze(cut.vm_id) if app_consistent else None
        try:
            await ops.cut(cut.fleeced(), new_bitmap=bitmap_name(cut.sequence) if add else None,
                          old_bitmap=cut.previous_bitmap, granularity=GRANULARITY)
        finally:
            if frozen is not None:
                await _thaw(frozen, cut.vm_id)
        return frozen is not None, app_consistent and frozen is None

    async def _freeze(self, vm_id: str) -> FrozenGuest | None:
        """Freeze the guest's file systems; None (crash-consistent cut) when the agent does not answer or
        the freeze fails."""
        try:
            return await self._hv.freeze_filesystems(vm_id, agent_timeout=2.0, freeze_timeout=10.0)
        except StandbyError as exc:
            log.info("no app-consistent cut of %s, the guest did not freeze: %s", vm_id, exc)
            return None

    async def _export(self, ops: BlockOps, cut: Cut) -> None:
        await ops.export_cut(cut.socket, cut.fleeced(), bitmap=cut.previous_bitmap)

    def _cut_offline(self, cut: Cut) -> None:
        for disk in cut.disks:
            path = Path(disk.path)
            listed = offline.image_bitmaps(path)
            names = [b.name for b in listed if bitmap_sequence(b.name) is not None]
            _check_names(disk, cut, names, [b.name for b in listed if b.inconsistent])
            if cut.previous is None:
                for name in names:
                    offline.bitmap_remove(path, name)
            offline.bitmap_add(path, bitmap_name(cut.sequence), GRANULARITY)
            if cut.previous is not None:
                offline.bitmap_disable(path, bitmap_name(cut.previous))

    # -- group cuts (engine/group_cycle.py): the steps of ``cut`` one by one, so that every member of a
    # collection is paused once, around the transactions only -------------------------------------------

    async def prepare_cut(self, vm_id: str, disks: Sequence[Disk], sequence: int, *, previous: int | None,
                          now: datetime) -> Cut:
        """Group cut, step 1: check the bitmaps, add the fleecing nodes, and add ``rep-N`` already (it records
        from now on, while ``rep-P`` records until the cut). A VM that is off is cut whole here (it writes
        nothing, so it needs no pause).

        ``rep-N`` is added before the pause because QEMU reads QMP input one byte per main-loop turn (~5 µs of
        its CPU a byte here): the add action is a third of the paused transaction's bytes. The writes between
        now and the cut are then in both bitmaps — shipped by this cut and again by the next, a superset,
        never a loss; an ``abort`` (the cut failing anywhere) merges ``rep-P`` into ``rep-N`` as usual."""
        if not disks:
            raise InvalidParameter("a cut needs at least one disk", message_id="NoDiskToReplicate")
        run_dir = self._run_root / vm_id
        run_dir.mkdir(parents=True, exist_ok=True)
        cut = Cut(vm_id, sequence, previous, tuple(disks), now, self.running(vm_id), run_dir)
        if not cut.online:
            await asyncio.to_thread(self._cut_offline, cut)
            return cut
        ops = self._hv.block(vm_id)
        try:
            for disk in cut.disks:
                await self._check_bitmaps(ops, disk, cut)
                await ops.add_fleecing(cut.fleecing(disk), disk.size_bytes or None)
            # Last, so that the writes recorded twice are as few as possible.
            await ops.add_bitmaps([disk.disk_id for disk in cut.disks], bitmap_name(cut.sequence),
                                  granularity=GRANULARITY)
        except BaseException:
            with contextlib.suppress(StandbyError):
                await self._teardown_online(cut)
            raise
        return cut

    async def transact_cut(self, cut: Cut) -> None:
        """Group cut, step 2 (members paused): stop ``rep-P`` + start the copy-before-write jobs."""
        if cut.online:
            await self._transaction(self._hv.block(cut.vm_id), cut, False, add=False)

    async def export_cut(self, cut: Cut) -> None:
        """Group cut, step 3 (members running again): export the fleecing nodes over NBD."""
        if cut.online:
            await self._export(self._hv.block(cut.vm_id), cut)

    async def freeze(self, vm_id: str) -> FrozenGuest | None:
        """Freeze the guest's file systems through its agent; None when it cannot (crash-consistent)."""
        return await self._freeze(vm_id)

    async def thaw(self, frozen: FrozenGuest, vm_id: str) -> None:
        """Thaw what ``freeze`` froze (and disconnect the agent)."""
        await _thaw(frozen, vm_id)

    # -- commit / abort ----------------------------------------------------------------------------

    async def commit(self, vm_id: str, disks: Sequence[Disk], sequence: int) -> None:
        """The replica holds cut N: tear it down and drop every older bitmap. Idempotent."""
        await self._settle(vm_id, tuple(disks), sequence, merge=False)

    async def abort(self, vm_id: str, disks: Sequence[Disk], sequence: int) -> None:
        """Cut N failed: tear it down and merge every older bitmap into ``rep-N``. Idempotent."""
        await self._settle(vm_id, tuple(disks), sequence, merge=True)

    async def _settle(self, vm_id: str, disks: tuple[Disk, ...], sequence: int, *, merge: bool) -> None:
        cut = Cut(vm_id, sequence, None, disks, datetime.min, self.running(vm_id), self._run_root / vm_id)
        if cut.online:
            await self._teardown_online(cut)
            await self._settle_bitmaps_online(cut, merge)
        else:
            await asyncio.to_thread(_settle_offline, cut, merge)
        for disk in disks:
            cut.scratch(disk.disk_id).unlink(missing_ok=True)

    async def _teardown_online(self, cut: Cut) -> None:
        """Export, job, node — in DESIGN §7's order (``BlockOps.release_cut``); whatever is not there is
        skipped."""
        await self._hv.block(cut.vm_id).release_cut(cut.fleeced())

    async def _settle_bitmaps_online(self, cut: Cut, merge: bool) -> None:
        ops = self._hv.block(cut.vm_id)
        older: dict[str, list[str]] = {}
        current = bitmap_name(cut.sequence)
        for disk in cut.disks:
            names = [b.name for b in await ops.bitmaps(disk.disk_id)]
            if current not in names:
                # The cut never happened: the older bitmap still records; leave it as it is.
                continue
            older[disk.disk_id] = [n for n in names if (bitmap_sequence(n) or cut.sequence) < cut.sequence]
        # One request for every disk, as the cut was.
        if merge:
            await ops.merge_back(older, current)
        else:
            await ops.drop_bitmaps(older)

    # -- reading -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def reader(self, cut: Cut) -> AsyncIterator[CutReader]:
        """A blocking reader of the cut (use it from a worker thread); serves an off VM's images meanwhile."""
        if cut.online:
            yield CutReader(cut, {d.disk_id: (cut.socket, cut.node(d.disk_id)) for d in cut.disks})
            return
        async with contextlib.AsyncExitStack() as stack:
            where: dict[str, tuple[Path, str]] = {}
            for disk in cut.disks:
                bitmap = bitmap_name(cut.previous) if cut.previous is not None else None
                export = offline.QemuNbdExport(Path(disk.path), cut.offline_socket(disk.disk_id),
                                               disk.disk_id, bitmap=bitmap)
                await stack.enter_async_context(export)
                where[disk.disk_id] = (export.socket_path, export.export)
            yield CutReader(cut, where)


@dataclass
class CutReader:
    """Blocking NBD reads of one cut: ``blocks`` for a log, ``hashes`` for a resync compare."""

    cut: Cut
    where: dict[str, tuple[Path, str]]
    depth: int = READ_DEPTH
    bytes_read: int = field(default=0)

    def _connect(self, disk: Disk, context: str) -> NbdClient:
        sock, export = self.where[disk.disk_id]
        return NbdClient.connect_unix(str(sock), export, meta_contexts=[context])

    def blocks(self, mode: ReadMode = ReadMode.DELTA,
               ranges: dict[str, list[tuple[int, int]]] | None = None) -> Iterator[Block]:
        """Every block the mode selects, disk after disk, in offset order.

        The NBD reads run in a thread of their own, up to ``PREFETCH`` blocks ahead, so they overlap the
        caller's work on the earlier blocks (the log encoder's zstd and xxh3) instead of alternating with it.
        """
        return _prefetched(self._all_blocks(mode, ranges), PREFETCH)

    def _all_blocks(self, mode: ReadMode,
                    ranges: dict[str, list[tuple[int, int]]] | None) -> Generator[Block, None, None]:
        for index, disk in enumerate(self.cut.disks):
            yield from self._disk_blocks(index, disk, mode, (ranges or {}).get(disk.disk_id, []))

    def _disk_blocks(self, index: int, disk: Disk, mode: ReadMode,
                     wanted: list[tuple[int, int]]) -> Iterator[Block]:
        if mode is ReadMode.DELTA:
            if self.cut.previous is None:
                raise InvalidState("a delta read needs a previous cut", message_id="NoPreviousCut")
            context = f"qemu:dirty-bitmap:{bitmap_name(self.cut.previous)}"
        else:
            context = "base:allocation"
        with self._connect(disk, context) as client:
            if mode is ReadMode.DELTA:
                todo = dirty_ranges(client.block_status(context), STATE_DIRTY, READ_CHUNK)
            elif mode is ReadMode.FULL:
                extents = client.block_status(context)
                todo = _split([(e.offset, e.length) for e in extents if not e.flags & STATE_ZERO], READ_CHUNK)
            else:
                todo = _split(wanted, READ_CHUNK)
            for offset, data in client.read_many(todo, self.depth):
                self.bytes_read += len(data)
                if mode is ReadMode.FULL and is_zero(data):
                    continue  # the replica's first image is empty: zeros need not travel at all
                yield index, offset, data, len(data)

    def hashes(self, disk: Disk, block_size: int = HASH_BLOCK) -> bytes:
        """xxh3-128 of every ``block_size`` block of the disk at the cut; all-zero blocks hash as zeros."""
        if block_size <= 0 or block_size % 512:
            raise InvalidParameter(f"block size {block_size} must be a positive multiple of 512")
        with self._connect(disk, "base:allocation") as client:
            # The replica hashes its head with the same function (blockhash.image_block_hashes): one rule.
            digests, read = blockhash.nbd_hashes(client, block_size)
        self.bytes_read += read
        return digests


def _prefetched(items: Generator[Block, None, None], depth: int) -> Iterator[Block]:
    """Run ``items`` in a thread, at most ``depth`` items ahead of the consumer; errors are raised here.

    Closing the result early stops the thread and waits for it: it closes ``items`` (and so its NBD
    connection) before this returns, as the cut's export must not outlive a reader.
    """
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            items.close()  # a generator stopped early closes its NBD connection in this thread

    thread = threading.Thread(target=produce, name="capture-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def differing_ranges(ours: bytes, theirs: bytes, block_size: int, size: int) -> list[tuple[int, int]]:
    """The byte ranges whose block hashes differ (a shorter list on either side differs past its end)."""
    count = -(-size // block_size)
    ranges: list[tuple[int, int]] = []
    for i in range(count):
        mine, other = ours[i * 16:(i + 1) * 16], theirs[i * 16:(i + 1) * 16]
        if mine != other or len(other) < 16:
            start = i * block_size
            length = min(block_size, size - start)
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
            else:
                ranges.append((start, length))
    return ranges


def _check_names(disk: Disk, cut: Cut, names: list[str], inconsistent: list[str]) -> None:
    """A delta cut needs exactly the previous bitmap, consistent; a fresh cut tolerates anything."""
    if cut.previous is None:
        return
    if inconsistent or names != [bitmap_name(cut.previous)]:
        raise TrackingLost(f"disk {disk.disk_id} does not track changes since cut {cut.previous} (found "
                           f"{names or 'none'}{', inconsistent' if inconsistent else ''}); a "
                           "resynchronization is required", message_id="TrackingLost", disk=disk.disk_id)


def _split(ranges: list[tuple[int, int]], chunk: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        position, end = offset, offset + length
        while position < end:
            step = min(chunk, end - position)
            out.append((position, step))
            position += step
    return out


async def _thaw(frozen: FrozenGuest, vm_id: str) -> None:
    try:
        await frozen.thaw(timeout=10.0)
    except StandbyError as exc:  # the guest stays frozen only as long as the agent is stuck
        log.warning("thawing the file systems of %s failed: %s", vm_id, exc)


def _settle_offline(cut: Cut, merge: bool) -> None:
    current = bitmap_name(cut.sequence)
    for disk in cut.disks:
        path = Path(disk.path)
        names = [b.name for b in offline.image_bitmaps(path)]
        if current not in names:
            continue
        older = [n for n in names if (bitmap_sequence(n) or cut.sequence) < cut.sequence]
        for name in older:
            if merge:
                offline.bitmap_merge(path, name, current)
            offline.bitmap_remove(path, name)
    for disk in cut.disks:
        cut.offline_socket(disk.disk_id).unlink(missing_ok=True)


def stream_in_thread(factory: Callable[[], Iterator[bytes]], *, batch: int = 1 << 20,
                     depth: int = 8) -> AsyncIterator[bytes]:
    """Run a blocking byte producer in a worker thread; yield its output joined into ~``batch`` chunks.

    A bounded queue keeps the producer at most ``depth`` batches ahead (back-pressure from the network);
    closing the iterator early stops the producer.
    """
    return _ThreadStream(factory, batch, depth).__aiter__()


class _ThreadStream:
    _DONE = object()

    def __init__(self, factory: Callable[[], Iterator[bytes]], batch: int, depth: int) -> None:
        import queue
        import threading
        self._factory = factory
        self._batch = batch
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="capture-read", daemon=True)

    def _put(self, item: object) -> bool:
        import queue
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        pending: list[bytes] = []
        size = 0
        try:
            for piece in self._factory():
                pending.append(piece)
                size += len(piece)
                if size >= self._batch:
                    if not self._put(b"".join(pending)):
                        return
                    pending, size = [], 0
            if pending:
                self._put(b"".join(pending))
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._thread.start()
        try:
            while True:
                item = await asyncio.to_thread(self._queue.get)
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            self._stop.set()
            # The producer holds an NBD connection: it must be gone before the export can be deleted.
            await asyncio.to_thread(self._thread.join, 60.0)
            # A getter cancelled while it waited (the cycle was cancelled) still blocks a worker thread in
            # ``get``; give it something to return, or the event loop's executor never shuts down.
            self._release_getter()

    def _release_getter(self) -> None:
        import queue
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(self._DONE)
