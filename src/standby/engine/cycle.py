"""One replication cycle of one relationship on the primary (DESIGN §4, docs/replication.md).

cut → encode (``LogEncoder``, in a worker thread) → ``PeerClient.put_log`` (streamed, throttled) → commit on
the acknowledgement, abort on any failure. The relationship's ``intent`` (``cycle:N``, ``initial:N``,
``resync:N``) is written before the cut, so a daemon that dies mid-cycle finds it at start-up and aborts the
cut (``recover``): the old bitmap is merged back and the next cycle ships those blocks again.

An idle VM is not cut: before a delta cycle of a running VM the runner reads the dirty count of the bitmap
recording since the last acknowledged cut (``Capture.dirty_bytes``); when it is zero, no app-consistent cut is
due and nothing is pending, it sends a heartbeat (``PeerPort.heartbeat``) instead of a log. The replica
checks that the sequence is its head and records LastReplicationTime; no new recovery point. The cycle
counts as a success of 0 bytes (``CycleRecord.detail`` "heartbeat"), LastReplicationTime moves on.

Outcomes: success → ``sequence`` = N, LastReplicationTime; the replica refusing the log (or heartbeat) as out
of sequence (409 → ``InvalidState``) or lost change tracking → state 9 (resynchronization required, health
Critical); an unreachable replica → a network failure (counted; retried next interval); anything else → a
failure. Every attempt is recorded in ``db.cycles`` for the statistics and health.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time as _time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

from standby.domain.clock import Clock
from standby.domain.cycles import (
    HEARTBEAT_DETAIL,
    CycleKind,
    CycleOutcome,
    CycleRecord,
    IntentKind,
    TokenBucket,
    bandwidth_limit,
    bitmap_name,
    intent,
    next_sequence,
    parse_intent,
)
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReplicationState, ReplicationType
from standby.domain.errors import InvalidState, NotSupported, StandbyError, Unavailable
from standby.domain.replica import LogAnswer, check_log_answer
from standby.engine.capture import (
    HASH_BLOCK,
    Capture,
    Cut,
    CutReader,
    ReadMode,
    TrackingLost,
    differing_ranges,
    included_disks,
    stream_in_thread,
)
from standby.engine.statistics import refresh_health, success_keeps_health
from standby.storage.logformat import DiskInfo, LogEncoder, LogHeader, LogKind
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger(__name__)

_LOG_KIND = {CycleKind.DELTA: LogKind.DELTA, CycleKind.INITIAL: LogKind.INITIAL,
             CycleKind.RESYNC: LogKind.RESYNC, CycleKind.PLANNED: LogKind.PLANNED}
_INTENT_KIND = {CycleKind.DELTA: IntentKind.CYCLE, CycleKind.INITIAL: IntentKind.INITIAL,
                CycleKind.RESYNC: IntentKind.RESYNC, CycleKind.PLANNED: IntentKind.CYCLE}
#: States an initial replication or a resync leaves for Replicating when its log is acknowledged.
_FINISHING = frozenset({ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
                        ReplicationState.RESYNCHRONIZING})
#: ``CycleRecord.detail`` of a successful cycle that sent a heartbeat instead of a log (nothing changed).
HEARTBEAT = HEARTBEAT_DETAIL
#: Name of the exported initial replica inside ``<folder>/<VMName>_<VMGUID>/`` (read by ImportInitialReplica).
EXPORT_LOG = "initial.sblog"
EXPORT_MANIFEST = "manifest.json"


class PeerPort(Protocol):
    """The peer calls the primary makes (``peer.client.PeerClient``)."""

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> LogAnswer:
        """Ship one log; the replica's head afterwards and whether it applied it. 409 → ``InvalidState``."""
        ...

    async def heartbeat(self, vm_id: str, sequence: int) -> int:
        """Nothing changed since cut ``sequence`` (the replica's head): no log; the head sequence.
        409 → ``InvalidState`` (``LogOutOfSequence``) as for a log."""
        ...

    async def hashes(self, vm_id: str, disk_id: str, block_size: int) -> bytes:
        """16-byte xxh3-128 per block of the replica's head."""
        ...

    async def create_replica(self, vm: VirtualMachine, settings: ReplicationSettings, *, primary_host: str,
                             disks: Sequence[tuple[str, int]] | None = None) -> Any:
        """``POST /replicas``: the replica VM and its relationship (idempotent for the same primary)."""
        ...

    async def replica_status(self, vm_id: str) -> Any:
        """``GET /replicas/{vm_id}``: state, head_sequence, points."""
        ...

    async def set_state(self, vm_id: str, requested_state: int) -> Any:
        """``POST /replicas/{vm_id}/state``: mirror suspend/resume/cancel."""
        ...

    async def remove_replica(self, vm_id: str) -> None:
        """``DELETE /replicas/{vm_id}``."""
        ...

    async def set_settings(self, vm_id: str, settings: ReplicationSettings) -> None:
        """``POST /replicas/{vm_id}/settings``: the replica keeps the primary's new settings."""
        ...


PeerFactory = Callable[[ReplicationSettings], PeerPort]


@dataclass(frozen=True, slots=True)
class _HeadOnly:
    """A heartbeat's answer read as a log's: the head it reports, no new point."""

    head_sequence: int
    applied: bool = False
    kept_aside: bool = False


@dataclass(frozen=True, slots=True)
class _Request:
    """What one ``run`` call asked for."""

    vm: VirtualMachine
    rel: Relationship
    kind: CycleKind
    progress: Callable[[int], None] | None
    export_dir: Path | None
    #: Carried in the log header's ``extra`` (a group cut names its collection cut there).
    extra: Mapping[str, object] | None = None
    #: A RESYNC that already knows what differs (reverse after a planned failover): no hash compare.
    differing: Callable[[Cut], Awaitable[dict[str, list[tuple[int, int]]]]] | None = None


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one cycle did."""

    sequence: int
    outcome: CycleOutcome
    dirty_bytes: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OpenCut:
    """A delta cycle of one VM whose cut a group cut takes (``CycleRunner.open_cut``)."""

    vm: VirtualMachine
    rel: Relationship
    disks: tuple[Disk, ...]
    sequence: int
    previous: int
    started: datetime
    t0: float


class CycleRunner:
    """Runs cycles; the clocks and ``sleep`` are injected so throttling and timing are testable."""

    def __init__(self, db: Store, capture: Capture, peers: PeerFactory, clock: Clock, *,
                 monotonic: Callable[[], float] = _time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 local_time: Callable[[], time] | None = None) -> None:
        self._db = db
        self._capture = capture
        self._peers = peers
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._local_time = local_time or (lambda: datetime.now().time())
        self._buckets: dict[tuple[str, int], TokenBucket] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Dirty bytes the last attempt of each VM described (a failed one's stay pending).
        self._described: dict[str, int] = {}

    def lock(self, vm_id: str) -> asyncio.Lock:
        """One cycle (or resync, or recovery) at a time per VM."""
        return self._locks.setdefault(vm_id, asyncio.Lock())

    # -- the cycle -----------------------------------------------------------------------------------------

    async def run(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY,
                  kind: CycleKind = CycleKind.DELTA, *, progress: Callable[[int], None] | None = None,
                  export_dir: Path | None = None,
                  differing: Callable[[Cut], Awaitable[dict[str, list[tuple[int, int]]]]] | None = None,
                  ) -> CycleResult:
        """One cycle of ``kind``; records it and returns its result (errors are recorded, then raised for
        the initial and resync kinds, which run as jobs; a delta cycle's failure is only recorded).
        ``differing`` gives a RESYNC its ranges instead of the block-hash compare."""
        async with self.lock(vm_id):
            rel = self._db.relationships.get(vm_id, int(index))
            vm = self._db.vms.get(vm_id)
            started, t0 = self._clock(), self._monotonic()
            try:
                request = _Request(vm, rel, kind, progress, export_dir, differing=differing)
                result = await self._attempt(request, t0)
            except BaseException as exc:
                result = self._failed(rel, kind, exc, t0)
                cancelled = isinstance(exc, asyncio.CancelledError)
                if not cancelled:  # a daemon stopping is not a replication failure
                    self._record(rel, kind, result, started, app=(False, False))
                if kind is not CycleKind.DELTA or cancelled:
                    raise
                return result
            return result

    async def _attempt(self, request: _Request, t0: float) -> CycleResult:
        vm, rel, kind = request.vm, request.rel, request.kind
        disks = included_disks(vm, rel.settings.included_disks)
        fresh = kind in (CycleKind.INITIAL, CycleKind.RESYNC)
        try:
            tracked = await self._capture.tracking(vm.vm_id, disks)
        except TrackingLost:
            if not fresh:
                raise
            tracked = None  # a fresh cut removes what cannot be trusted
        if not fresh and tracked is None:
            raise TrackingLost(f"virtual machine {vm.name} does not track changes; a resynchronization is "
                               "required", message_id="TrackingLost", disk="")
        pending = parse_intent(rel.intent)
        started = self._clock()
        app_consistent = self._app_consistent_due(rel, started)
        if await self._idle(request, disks, tracked, app_consistent):
            try:
                return await self._heartbeat(request, started, t0)
            except NotSupported:  # a replica without the route (an older standby): a cut tells it too
                log.info("the replica of %s takes no heartbeats; cutting instead", vm.name)
        sequence = next_sequence(rel.sequence, [bitmap_name(tracked)] if tracked else [],
                                 pending[1] if pending else None)
        parent = rel.sequence
        if kind is CycleKind.RESYNC and request.differing is None and request.export_dir is None:
            # A resync is compared against the replica's head, wherever that is: behind (points lost)
            # or ahead (a point this primary never sent); it applies only on top of that head.
            parent = int((await self._peers(rel.settings).replica_status(vm.vm_id)).head_sequence)
            sequence = max(sequence, parent + 1)
        rel = self._set(rel, intent=intent(_INTENT_KIND[kind], sequence))
        started = self._clock()
        cut = await self._capture.cut(vm.vm_id, disks, sequence, previous=None if fresh else tracked,
                                      now=started, app_consistent=app_consistent)
        try:
            dirty, wire = await self._ship(replace(request, rel=replace(rel, sequence=parent)), cut)
        except BaseException:
            await self._settle(vm.vm_id, disks, sequence, commit=False)
            raise
        await self._capture.commit(vm.vm_id, disks, sequence)
        result = CycleResult(sequence, CycleOutcome.SUCCESS, dirty, wire, self._monotonic() - t0)
        self._succeeded(rel, kind, cut, request.export_dir is not None)
        self._record(rel, kind, result, started, app=(cut.app_consistent, cut.app_consistent_failed))
        return result

    async def _idle(self, request: _Request, disks: tuple[Disk, ...], tracked: int | None,
                    app_consistent_due: bool) -> bool:
        """Whether this cycle may send a heartbeat instead of cutting: ``heartbeat_possible`` and the bitmap
        recording since the acknowledged cut is clean on every disk."""
        rel = request.rel
        if not heartbeat_possible(request.kind, state=rel.state, tracked=tracked, acknowledged=rel.sequence,
                                  pending=rel.intent, app_consistent_due=app_consistent_due,
                                  special=request.export_dir is not None or request.differing is not None
                                  or bool(request.extra)):
            return False
        # A write that lands after this read is recorded in the same bitmap, which stays the recording
        # one, so the next cycle ships it: a heartbeat never hides a write. None (off VM, bitmap not found)
        # means "cannot tell": cut as usual.
        return await self._capture.dirty_bytes(rel.vm_id, disks, rel.sequence) == 0

    async def _heartbeat(self, request: _Request, started: datetime, t0: float) -> CycleResult:
        """Tell the replica its head is still current (no cut, no log); record a 0-byte success."""
        rel = request.rel
        self._described[rel.vm_id] = 0
        head = await self._peers(rel.settings).heartbeat(rel.vm_id, rel.sequence)
        check_log_answer(rel.sequence, _HeadOnly(head))
        result = CycleResult(rel.sequence, CycleOutcome.SUCCESS, 0, 0, self._monotonic() - t0,
                             detail=HEARTBEAT)
        # LastReplicationTime: the replica holds everything written before the count was read.
        self._set(self._db.relationships.get(rel.vm_id, int(rel.index)), last_replication_time=started)
        self._record(rel, CycleKind.DELTA, result, started, app=(False, False))
        return result

    async def _ship(self, request: _Request, cut: Cut) -> tuple[int, int]:
        vm, rel, kind = request.vm, request.rel, request.kind
        header = LogHeader(vm.vm_id, int(rel.index), cut.sequence, rel.sequence, _LOG_KIND[kind],
                           cut.at.isoformat(), tuple(DiskInfo(d.disk_id, d.size_bytes) for d in cut.disks),
                           application_consistent=cut.app_consistent,
                           compression=rel.settings.compression_enabled,
                           extra=dict(request.extra or {}))
        encoder = LogEncoder(header)
        self._described[vm.vm_id] = 0
        try:
            await self._read_and_send(request, cut, header, encoder)
        finally:
            self._described[vm.vm_id] = encoder.data_bytes
        return encoder.data_bytes, encoder.wire_bytes

    async def _read_and_send(self, request: _Request, cut: Cut, header: LogHeader,
                             encoder: LogEncoder) -> None:
        vm, rel, kind, export_dir = request.vm, request.rel, request.kind, request.export_dir
        async with self._capture.reader(cut) as reader:
            mode, ranges = ReadMode.DELTA, None
            if kind is CycleKind.INITIAL:
                mode = ReadMode.FULL
            elif kind is CycleKind.RESYNC:
                mode, ranges = ReadMode.RANGES, await (request.differing(cut) if request.differing else
                                                       self._differing(vm, rel, reader, cut.disks))
            chunks = stream_in_thread(lambda: _encode(encoder, reader, mode, ranges))
            throttled = self._throttle(rel, _counting(chunks, request.progress, _expected(cut.disks, kind)))
            if export_dir is not None:
                await _export(export_dir, vm, header, throttled)
            else:
                answer = await self._peers(rel.settings).put_log(vm.vm_id, cut.sequence, throttled)
                check_log_answer(cut.sequence, answer)

    async def _differing(self, vm: VirtualMachine, rel: Relationship, reader: CutReader,
                         disks: tuple[Disk, ...]) -> dict[str, list[tuple[int, int]]]:
        """Resync / seeded IR: compare block hashes with the replica's head; the ranges that differ."""
        peer = self._peers(rel.settings)
        out: dict[str, list[tuple[int, int]]] = {}
        for disk in disks:
            # Both sides read their whole disk: at the same time, not one after the other (bench P8).
            # Both finish before an error is raised: the reader's thread must not outlive the cut's export.
            theirs, ours = await asyncio.gather(peer.hashes(vm.vm_id, disk.disk_id, HASH_BLOCK),
                                                asyncio.to_thread(reader.hashes, disk, HASH_BLOCK),
                                                return_exceptions=True)
            if isinstance(theirs, BaseException):
                raise theirs
            if isinstance(ours, BaseException):
                raise ours
            out[disk.disk_id] = differing_ranges(ours, theirs, HASH_BLOCK, disk.size_bytes)
        return out

    async def _throttle(self, rel: Relationship, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The token bucket of the relationship's bandwidth schedule, checked per chunk."""
        bucket = self._buckets.setdefault((rel.vm_id, int(rel.index)), TokenBucket())
        schedule = rel.settings.bandwidth_schedule
        async for chunk in chunks:
            rate = bandwidth_limit(schedule, self._local_time()) if schedule else None
            delay = bucket.delay(len(chunk), self._monotonic(), rate)
            if delay > 0:
                await self._sleep(delay)
            yield chunk

    # -- group cuts (engine/group_cycle.py): the caller takes the cut, the runner does the rest -----------

    async def open_cut(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> OpenCut:
        """A delta cycle whose cut the caller takes: tracking checked, sequence chosen, intent written.
        The caller holds ``lock(vm_id)`` and ends it with ``close_cut`` or ``abandon_cut``."""
        rel = self._db.relationships.get(vm_id, int(index))
        vm = self._db.vms.get(vm_id)
        disks = included_disks(vm, rel.settings.included_disks)
        started, t0 = self._clock(), self._monotonic()
        try:
            tracked = await self._capture.tracking(vm.vm_id, disks)
            if tracked is None:
                raise TrackingLost(f"virtual machine {vm.name} does not track changes; a resynchronization "
                                   "is required", message_id="TrackingLost", disk="")
        except StandbyError as exc:
            self._record(rel, CycleKind.DELTA, self._failed(rel, CycleKind.DELTA, exc, t0), started,
                         app=(False, False))
            raise
        pending = parse_intent(rel.intent)
        sequence = next_sequence(rel.sequence, [bitmap_name(tracked)], pending[1] if pending else None)
        rel = self._set(rel, intent=intent(IntentKind.CYCLE, sequence))
        return OpenCut(vm, rel, disks, sequence, tracked, started, t0)

    async def close_cut(self, opened: OpenCut, cut: Cut, *,
                        extra: Mapping[str, object] | None = None) -> CycleResult:
        """Ship the cut ``open_cut`` began, commit it on the acknowledgement or abort it; the cycle is
        recorded either way and a failure comes back as a result (a cancellation is raised)."""
        request = _Request(opened.vm, opened.rel, CycleKind.DELTA, None, None, extra)
        try:
            dirty, wire = await self._ship(request, cut)
        except BaseException as exc:
            await self._settle(opened.vm.vm_id, opened.disks, opened.sequence, commit=False)
            result = self._failed(opened.rel, CycleKind.DELTA, exc, opened.t0)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._record(opened.rel, CycleKind.DELTA, result, opened.started, app=(False, False))
            return result
        await self._capture.commit(opened.vm.vm_id, opened.disks, opened.sequence)
        seconds = self._monotonic() - opened.t0
        result = CycleResult(opened.sequence, CycleOutcome.SUCCESS, dirty, wire, seconds)
        self._succeeded(opened.rel, CycleKind.DELTA, cut, False)
        self._record(opened.rel, CycleKind.DELTA, result, opened.started,
                     app=(cut.app_consistent, cut.app_consistent_failed))
        return result

    async def abandon_cut(self, opened: OpenCut, exc: BaseException) -> CycleResult:
        """The group cut failed before shipping: abort whatever was cut, clear the intent, record it."""
        await self._settle(opened.vm.vm_id, opened.disks, opened.sequence, commit=False)
        result = self._failed(opened.rel, CycleKind.DELTA, exc, opened.t0)
        if not isinstance(exc, asyncio.CancelledError):
            self._record(opened.rel, CycleKind.DELTA, result, opened.started, app=(False, False))
        return result

    # -- outcomes ------------------------------------------------------------------------------------------

    def _app_consistent_due(self, rel: Relationship, now: datetime) -> bool:
        hours = rel.settings.app_consistent_interval_hours
        if hours <= 0:
            return False
        last = rel.last_app_consistent_time
        return last is None or now - last >= timedelta(hours=hours)

    def _succeeded(self, rel: Relationship, kind: CycleKind, cut: Cut, exported: bool) -> None:
        fresh = self._db.relationships.get(rel.vm_id, int(rel.index))
        changes: dict[str, Any] = {"intent": None}
        if exported:
            # The replica imports the exported log later; until then deltas wait (state stays 2).
            changes["intent"] = intent(IntentKind.EXPORT, cut.sequence)
            changes["sequence"] = cut.sequence
        else:
            changes.update(sequence=cut.sequence, last_replication_time=cut.at,
                           last_replication_type=ReplicationType.APPLICATION_CONSISTENT if cut.app_consistent
                           else ReplicationType.REGULAR)
            if cut.app_consistent:
                changes["last_app_consistent_time"] = cut.at
            if kind in (CycleKind.INITIAL, CycleKind.RESYNC) and fresh.state in _FINISHING:
                changes["state"] = ReplicationState.REPLICATING
        self._set(fresh, **changes)

    def _failed(self, rel: Relationship, kind: CycleKind, exc: BaseException, t0: float) -> CycleResult:
        seconds = self._monotonic() - t0
        pending = parse_intent(self._db.relationships.get(rel.vm_id, int(rel.index)).intent)
        sequence = pending[1] if pending else rel.sequence
        outcome = CycleOutcome.NETWORK if isinstance(exc, Unavailable) else CycleOutcome.FAILURE
        changes: dict[str, Any] = {"intent": None}
        if isinstance(exc, TrackingLost) or (_out_of_sequence(exc) and kind is CycleKind.DELTA):
            # Lost tracking, or the replica refused the log as out of sequence (409): resync required.
            changes["state"] = ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
        elif kind is CycleKind.INITIAL:
            changes["state"] = ReplicationState.READY_FOR_REPLICATION
        elif kind is CycleKind.RESYNC:
            changes["state"] = ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
        self._set(self._db.relationships.get(rel.vm_id, int(rel.index)), **changes)
        if isinstance(exc, asyncio.CancelledError):  # a stopping daemon or scheduler: not a failure
            log.info("replication cycle of %s cancelled", rel.vm_id)
        else:  # with the type: some exceptions carry no message (a bare TimeoutError)
            log.warning("replication cycle of %s failed: %s: %s", rel.vm_id, type(exc).__name__, exc)
        return CycleResult(sequence, outcome, self._described.pop(rel.vm_id, 0), seconds=seconds,
                           detail=str(exc) or type(exc).__name__)

    async def _settle(self, vm_id: str, disks: tuple[Disk, ...], sequence: int, *, commit: bool) -> None:
        try:
            if commit:
                await self._capture.commit(vm_id, disks, sequence)
            else:
                await self._capture.abort(vm_id, disks, sequence)
        except StandbyError as exc:  # the intent stays set: start-up recovery retries
            log.error("settling cut %s of %s failed: %s", sequence, vm_id, exc)

    def _record(self, rel: Relationship, kind: CycleKind, result: CycleResult, started: datetime, *,
                app: tuple[bool, bool]) -> None:
        record = CycleRecord(rel.vm_id, int(rel.index), result.sequence, kind, result.outcome, started,
                             self._clock(), result.dirty_bytes, result.wire_bytes, int(result.seconds * 1000),
                             app[0], app[1], result.detail)
        try:
            self._db.cycles.record(record)
            stored = self._db.relationships.find(rel.vm_id, int(rel.index))
            if stored is not None and result.outcome is CycleOutcome.SUCCESS and success_keeps_health(
                    stored.health, record.latency_ms, stored.settings.interval_seconds):
                return  # nothing to recompute: refreshing reads the whole monitoring window
            refresh_health(self._db, rel.vm_id, rel.index, self._clock())
        except StandbyError as exc:
            log.error("recording the cycle of %s failed: %s", rel.vm_id, exc)

    def record_miss(self, vm_id: str, index: RelationshipIndex, count: int = 1) -> None:
        """The scheduler counts overruns as missed cycles."""
        now = self._clock()
        rel = self._db.relationships.find(vm_id, int(index))
        if rel is None:
            return
        for _ in range(count):
            self._db.cycles.record(CycleRecord(vm_id, int(index), rel.sequence, CycleKind.DELTA,
                                               CycleOutcome.MISS, now, now))
        refresh_health(self._db, vm_id, index, now)

    def update(self, vm_id: str, index: RelationshipIndex, **changes: Any) -> Relationship:
        """Change fields of a stored relationship (compare-and-swap, retried)."""
        return self._set(self._db.relationships.get(vm_id, int(index)), **changes)

    async def forget(self, vm: VirtualMachine, rel: Relationship) -> None:
        """The relationship goes away: settle any cut and drop the change tracking."""
        disks = included_disks(vm, rel.settings.included_disks)
        async with self.lock(vm.vm_id):
            try:
                await self._capture.drop_tracking(vm.vm_id, disks)
            except StandbyError as exc:  # a stale bitmap only costs a little space in the image
                log.warning("dropping the change tracking of %s failed: %s", vm.vm_id, exc)

    def _set(self, rel: Relationship, **changes: Any) -> Relationship:
        """Write ``changes`` onto the newest stored relationship (others may have written meanwhile)."""
        for _ in range(10):
            try:
                return self._db.relationships.update(replace(rel, **changes))
            except StaleWrite:
                rel = self._db.relationships.get(rel.vm_id, int(rel.index))
        raise StaleWrite("Relationship", rel.vm_id, rel.version)

    # -- start-up recovery ---------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Abort every cut a previous daemon left half done (its intent says which); the VM ids settled."""
        settled = []
        for rel in self._db.relationships.list():
            pending = parse_intent(rel.intent)
            if pending is None or pending[0] is IntentKind.EXPORT:
                continue
            vm = self._db.vms.get(rel.vm_id)
            disks = included_disks(vm, rel.settings.included_disks)
            async with self.lock(vm.vm_id):
                await self._capture.abort(vm.vm_id, disks, pending[1])
                state = rel.state
                if pending[0] is IntentKind.INITIAL:
                    state = ReplicationState.READY_FOR_REPLICATION
                elif pending[0] is IntentKind.RESYNC:
                    state = ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
                self._set(rel, intent=None, state=state)
            settled.append(vm.vm_id)
        return settled


def heartbeat_possible(kind: CycleKind, *, state: ReplicationState, tracked: int | None, acknowledged: int,
                       pending: str | None, app_consistent_due: bool, special: bool) -> bool:
    """Whether a cycle may be a heartbeat if its disks turn out clean: a plain delta cycle (not initial,
    resync, planned, exported or a group's) of a Replicating relationship, no app-consistent cut due, no
    cut pending, and the recording bitmap the acknowledged cut's own. After an aborted cut that bitmap is
    the aborted one (the older was merged into it): the cycle ships, whatever the count says, as the
    replica may or may not hold the aborted cut."""
    return (kind is CycleKind.DELTA and state is ReplicationState.REPLICATING and not special
            and not app_consistent_due and pending is None and acknowledged > 0 and tracked == acknowledged)


def _out_of_sequence(exc: BaseException) -> bool:
    """The replica refused the log's parent (409 with its head): only a resync mends that."""
    return isinstance(exc, InvalidState) and getattr(exc, "message_id", "") == "LogOutOfSequence"


def _encode(encoder: LogEncoder, reader: CutReader, mode: ReadMode,
            ranges: dict[str, list[tuple[int, int]]] | None) -> Iterator[bytes]:
    yield encoder.header_bytes()
    for index, offset, data, length in reader.blocks(mode, ranges):
        yield encoder.zero(index, offset, length) if data is None else encoder.frame(index, offset, data)
    yield encoder.end()


def _expected(disks: tuple[Disk, ...], kind: CycleKind) -> int:
    return sum(d.size_bytes for d in disks) if kind is CycleKind.INITIAL else 0


async def _counting(chunks: AsyncIterator[bytes], progress: Callable[[int], None] | None,
                    expected: int) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        if progress is not None and expected:
            progress(min(99, sent * 100 // expected))
        yield chunk


async def _export(folder: Path, vm: VirtualMachine, header: LogHeader, chunks: AsyncIterator[bytes]) -> None:
    """Write the initial log to ``<folder>/<VMName>_<VMGUID>/`` (hyperv-api §3.2 type 2) with a manifest."""
    target = export_folder(folder, vm)
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    partial = target / (EXPORT_LOG + ".partial")
    with partial.open("wb") as out:
        async for chunk in chunks:
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.flush)
    partial.replace(target / EXPORT_LOG)
    manifest: Mapping[str, object] = {
        "vm_id": vm.vm_id, "name": vm.name, "sequence": header.sequence,
        "parent_sequence": header.parent_sequence, "log": EXPORT_LOG,
        "disks": [{"disk_id": d.disk_id, "size": d.size} for d in header.disks]}
    (target / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def export_folder(folder: Path, vm: VirtualMachine) -> Path:
    """The per-VM subfolder an export writes (``<VMName>_<VMGUID>``, as Hyper-V names it)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in vm.name)
    return folder / f"{safe}_{vm.vm_id}"
