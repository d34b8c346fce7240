"""ReverseReplicationRelationship (hyperv-api §3.2, §9.5, §9.6, JobType 104): the failed-over replica B
becomes the primary and the old primary A becomes its replica, without copying the disks again.

B (``ReverseReplication``, on the failed-over replica in state 5 or 6):
1. asks A to become its replica (``POST /peer/v1/vms/{vm_id}/become-replica``, ``ReverseTarget`` below);
2. becomes the primary: mode 1, the relationship points at A with the new settings, the recovery points go
   (their files stay where they are the backing chain of the failover disk), the replica record goes;
3. runs the first cycle as a RESYNC log whose parent is A's base point, so a failure or a crash leaves
   state 9 (resynchronization required) and never a delta with a hole:
   - after a PLANNED failover A's disk equals the planned point, so it becomes the base of A's new chain
     as it is, and the changed ranges are exactly the clusters allocated in B's failover overlay (B's
     writes since the point; read after the cut, so the fresh bitmap of the cut records everything later).
     Chosen over a bitmap started at failover time because it needs nothing of InitiateFailover, is exact
     whether or not the VM ran before the reverse, and survives a daemon restart (it is qcow2 metadata).
   - after an UNPLANNED failover A may hold writes B never got: the log carries the blocks whose hashes
     differ between B's cut and A's disk (``PeerClient.hashes`` + the capture's hashing), nothing else.
Reverse completes a planned failover: no CommitFailover is needed (hyperv-api §9.5).

A (``ReverseTarget.become_replica``): the caller must be authorized by an entry; the VM must be a primary,
off and idle; after a planned failover its relationship must be prepared (state 4) at exactly the planned
point. Its disks move into the entry's replica folder as ``disks/<disk>/rp-<base>.qcow2`` (a rename; change
tracking bitmaps are dropped), recorded as the one recovery point of a replica relationship in state 3.
Repeating the call after it succeeded answers the same head.

Sequences keep growing across every reversal: A's base is the planned point's sequence, or after an
unplanned failover the highest of A's own sequence, B's known sequences and any point file in the folder,
so a new point file never overwrites one a chain still uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from standby.domain.clock import Clock
from standby.domain.cycles import BITMAP_PREFIX, CycleKind
from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    Job,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    EnabledState,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
    VirtualSystemType,
)
from standby.domain.errors import InUse, InvalidParameter, InvalidState, Unavailable
from standby.domain.failover import SEED_DISK_ID
from standby.domain.peer_access import PeerRoute
from standby.domain.preconditions import Operation
from standby.domain.replica import (
    ReplicaSite,
    parse_point_file,
    point_file_name,
    replica_folder_name,
)
from standby.domain.settings import validate_replication_settings
from standby.engine.capture import Cut
from standby.engine.cycle import CycleRunner, PeerFactory
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.peer_access import Caller, PeerAccess
from standby.engine.replica import resolve_replica_root, safe_folder
from standby.engine.replication import ReplicationUseCases
from standby.storage import chain, qemu_img
from standby.store import codec
from standby.store.port import Store

log = logging.getLogger("standby.reverse")

Ranges = dict[str, list[tuple[int, int]]]
_S = ReplicationState
_PRIMARY = RelationshipIndex.PRIMARY
INCOMING = "incoming"


class ReversePeer(Protocol):
    """The peer call reverse replication adds (``peer.client.PeerClient.become_replica``)."""

    async def become_replica(self, vm_id: str, body: dict[str, object]) -> dict[str, Any]:
        """Ask the old primary to become the replica; ``{vm_id, state, head_sequence}``."""
        ...


@dataclass(frozen=True, slots=True)
class BecomeReplica:
    """What B sends A: the new relationship's settings, the disks, the planned point (None: unplanned) and
    the highest sequence B knows (A's base goes above it after an unplanned failover)."""

    settings: ReplicationSettings
    disks: tuple[tuple[str, int], ...]
    planned_sequence: int | None = None
    at_least: int = 0

    def to_json(self) -> dict[str, object]:
        """The request body."""
        return {"settings": json.loads(codec.settings_out(self.settings)),
                "disks": [{"disk_id": d, "size": s} for d, s in self.disks],
                "planned_sequence": self.planned_sequence, "at_least": self.at_least}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BecomeReplica:
        """Parse a request body; malformed → ``InvalidParameter``."""
        try:
            settings = codec.settings_in(json.dumps(body.get("settings") or {}))
            disks = tuple((str(d["disk_id"]), int(d["size"])) for d in body.get("disks") or [])
            planned = body.get("planned_sequence")
            at_least = int(body.get("at_least", 0))
            request = cls(settings, disks, None if planned is None else int(planned), at_least)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidParameter(f"the reverse request is malformed: {exc}",
                                   message_id="InvalidReplicationSettings") from None
        validate_replication_settings(request.settings)
        return request


def replicated_disks(vm: VirtualMachine) -> tuple[Disk, ...]:
    """The VM's disks that replicate (a failover's cloud-init seed disk never does)."""
    return tuple(disk for disk in vm.disks if disk.disk_id != SEED_DISK_ID)


class SendingUseCase:
    """What a use case needs that makes this host send a relationship's logs to a peer as jobs (reverse
    replication on the failed-over replica, extended replication on the replica). ``jobs``, ``runner`` and
    ``peers`` are None on a host without a hypervisor: the use case then answers 32777."""

    def __init__(self, guards: ReplicationUseCases, jobs: JobManager | None, runner: CycleRunner | None,
                 peers: PeerFactory | None, *, db: Store, clock: Clock, host_name: str = "") -> None:
        self._guards = guards
        self._jobs = jobs
        self._runner = runner
        self._peers = peers
        self._db = db
        self._clock = clock
        self._host = host_name


# -- B: the failed-over replica becomes the primary ----------------------------------------------------------


class ReverseReplication(SendingUseCase):
    """ReverseReplicationRelationship on the failed-over replica (see the module docstring)."""

    def submit(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """Check the preconditions and settings at once, then run ``reverse`` as a JobType 104 job."""
        target = self._guards.guard(Operation.REVERSE_REPLICATION, vm_id)
        settings = self.settings_for(target.vm, settings)
        if self._jobs is None or self._runner is None or self._peers is None:
            raise Unavailable("reverse replication needs the primary side of replication (a hypervisor)",
                              message_id="PrimaryUnavailable")
        vm = target.vm

        async def work(handle: JobHandle) -> dict[str, str]:
            handle.progress(5)
            return await self.reverse(vm.vm_id, settings, handle.progress)

        return self._jobs.submit(JobType.REVERSE_REPLICATION, element_id=vm.vm_id, description="", work=work,
                                 message_id="ReverseReplicationJob", args={"vm": vm.name})

    def settings_for(self, vm: VirtualMachine, settings: ReplicationSettings) -> ReplicationSettings:
        """The new relationship's settings: this host as the primary, the seed disk left out; validated."""
        if self._host:
            settings = dataclasses.replace(settings, primary_connection_point=self._host)
        if not settings.included_disks:
            settings = dataclasses.replace(settings, included_disks=tuple(
                d.disk_id for d in replicated_disks(vm)) if len(replicated_disks(vm)) < len(vm.disks) else ())
        validate_replication_settings(settings)
        return settings

    async def reverse(self, vm_id: str, settings: ReplicationSettings,
                      progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        """Steps 1-3 of the module docstring; the figures of the first cycle."""
        assert self._runner is not None and self._peers is not None
        vm = self._db.vms.get(vm_id)
        rel = self._db.relationships.get(vm_id, int(_PRIMARY))
        point = failover_point(self._db, vm_id)
        planned = rel.failed_over_type is ReplicationType.PLANNED and \
            point.kind is VirtualSystemType.REPLICA_PLANNED_FAILOVER
        known = [p.sequence for p in self._db.recovery_points.list(vm_id=vm_id)]
        request = BecomeReplica(settings, tuple((d.disk_id, d.size_bytes) for d in replicated_disks(vm)),
                                point.sequence if planned else None, max([rel.sequence, *known]))
        peer: Any = self._peers(settings)
        answer = await peer.become_replica(vm_id, request.to_json())
        base = int(answer["head_sequence"])
        progress(30)
        differing = await asyncio.to_thread(overlay_source, vm, point) if planned else None
        await asyncio.to_thread(self._become_primary, vm, rel, settings, base)
        progress(40)
        result = await self._runner.run(vm_id, _PRIMARY, CycleKind.RESYNC, differing=differing,
                                        progress=lambda p: progress(40 + p * 59 // 100))
        self._db.events.record(self._clock(), "replication.reversed", "ReplicationReversed", element_id=vm_id,
                               args={"vm": vm.name, "host": settings.recovery_connection_point,
                                     "planned": planned, "bytes": result.wire_bytes})
        return {"ReplicationState": str(int(_S.REPLICATING)), "Planned": str(planned).lower(),
                "BaseSequence": str(base), "Sequence": str(result.sequence),
                "DirtyBytes": str(result.dirty_bytes), "WireBytes": str(result.wire_bytes)}

    def _become_primary(self, vm: VirtualMachine, rel: Relationship, settings: ReplicationSettings,
                        base: int) -> None:
        points = self._db.recovery_points.list(vm_id=vm.vm_id)
        site = self._db.replicas.find(vm.vm_id)
        with self._db.transaction():
            current = self._db.vms.get(vm.vm_id)
            self._db.vms.update(dataclasses.replace(current, replication_mode=ReplicationMode.PRIMARY,
                                                    locked_from_start=False))
            # State 10 until the first log is acknowledged: the scheduler leaves it alone, and a crash
            # or a failure ends in 9 (resynchronization), never in a delta that misses B's writes.
            self._db.relationships.update(dataclasses.replace(
                self._db.relationships.get(vm.vm_id, int(_PRIMARY)), state=_S.RESYNCHRONIZING,
                health=ReplicationHealth.WARNING, settings=settings, failed_over_type=ReplicationType.NONE,
                last_replication_type=ReplicationType.NONE, last_replication_time=None, last_apply_time=None,
                last_app_consistent_time=None, state_before_failover=None, intent=None, sequence=base))
            for point in points:
                self._db.recovery_points.delete(point.point_id)
            self._db.point_holds.release(vm.vm_id)
            if site is not None:
                self._db.replicas.delete(vm.vm_id)
            self._db.disk_stamps.clear(vm.vm_id)
            self._db.cycles.forget(vm.vm_id, int(_PRIMARY))
        orphan_files(vm, points, Path(site.storage_root) if site else None)


def failover_point(db: Store, vm_id: str) -> RecoveryPoint:
    """The point the VM is failed over to (F's hold, reason ``failover`` or ``committed``)."""
    holds = [h for h in db.point_holds.list(holder_id=vm_id) if h.reason in ("failover", "committed")]
    point = db.recovery_points.find(holds[0].point_id) if holds else None
    if point is None:
        raise InvalidState(f"virtual machine {vm_id} is not failed over to a recovery point",
                           message_id="FailoverPointUnknown", vm=vm_id)
    return point


def overlay_source(vm: VirtualMachine, point: RecoveryPoint) -> Callable[[Cut], Awaitable[Ranges]] | None:
    """The ranges B wrote since ``point``: the clusters allocated in each failover overlay. None (compare
    hashes instead) when a disk is not an overlay directly over the point's image."""
    images = {disk_id: Path(path).resolve() for disk_id, path in point.images}
    disks = replicated_disks(vm)
    for disk in disks:
        backing = chain.backing_file(Path(disk.path))
        if backing is None or disk.disk_id not in images or backing.resolve() != images[disk.disk_id]:
            log.info("disk %s of %s is not an overlay of the failover point: comparing hashes",
                     disk.disk_id, vm.vm_id)
            return None

    async def ranges(cut: Cut) -> Ranges:
        # Read after the cut: a superset of what the cut holds; the cut's fresh bitmap has the rest.
        return {disk.disk_id: await asyncio.to_thread(allocated_ranges, Path(disk.path)) for disk in disks}

    return ranges


def allocated_ranges(image: Path) -> list[tuple[int, int]]:
    """The byte ranges allocated in ``image`` itself (data or zero clusters), not in its backing files."""
    ranges: list[tuple[int, int]] = []
    for entry in qemu_img.image_map(image, shared=True):
        if int(str(entry.get("depth", 1))) != 0 or not entry.get("present", True):
            continue
        start, length = int(str(entry["start"])), int(str(entry["length"]))
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    return ranges


def orphan_files(vm: VirtualMachine, points: Sequence[RecoveryPoint], root: Path | None) -> None:
    """Delete point files no disk's backing chain uses any more, and logs kept aside while failed over."""
    keep: set[Path] = set()
    for disk in vm.disks:
        if Path(disk.path).is_file():
            keep.update(p.resolve() for p in chain.chain_of(Path(disk.path)))
    for point in points:
        for _, image in point.images:
            if Path(image).resolve() not in keep:
                chain.remove_quietly(Path(image))
    incoming = root / INCOMING if root is not None else None
    for path in incoming.iterdir() if incoming is not None and incoming.is_dir() else []:
        chain.remove_quietly(path)


# -- A: the old primary becomes the replica ------------------------------------------------------------------


class _Moved(NamedTuple):
    """Where the disks went: the replica folder, the base sequence, the disks with their new paths."""

    root: Path
    base: int
    disks: tuple[Disk, ...]


@dataclass
class ReverseTarget:
    """``become_replica`` behind the peer route (see the module docstring)."""

    db: Store
    clock: Clock
    lock: Callable[[str], asyncio.Lock] = field(default=lambda _: asyncio.Lock())

    async def become_replica(self, caller: Caller, vm_id: str, request: BecomeReplica) -> tuple[int, int]:
        """Make this host's primary VM the replica of ``caller``, its recorded replica host;
        ``(state, head_sequence)``. Asked again by the host it already became the replica of, it answers
        the same (the caller's first answer may have been lost)."""
        vm = self.db.vms.get(vm_id.strip().upper())
        access = PeerAccess(self.db)
        async with self.lock(vm.vm_id):
            if vm.replication_mode is ReplicationMode.REPLICA and self.db.replicas.find(vm.vm_id) is not None:
                host = access.admit(PeerRoute.REPLICA_STATUS, caller, vm.vm_id).host
                done = self._already(vm, host)
                if done is not None:
                    return done
            admission = access.admit(PeerRoute.BECOME_REPLICA, caller, vm.vm_id)
            entry, host = admission.entry, admission.host
            assert entry is not None  # BECOME_REPLICA admits only an owner an entry admits
            rel = self._check(vm, request)
            root = resolve_replica_root(entry.storage_location, replica_folder_name(vm.name, vm.vm_id))
            base = self._base(root, rel, request)
            moved = await asyncio.to_thread(move_disks, replicated_disks(vm), root, base)
            self._record(vm, rel, (host, entry), _Moved(root, base, moved), request)
        return int(_S.REPLICATING), base

    def update_settings(self, caller: Caller, vm_id: str,
                        settings: ReplicationSettings) -> tuple[str, ReplicationSettings]:
        """ModifyReplicationSettings reached the replica from ``caller`` (its primary, or a host of its trust
        group): store the primary's new settings, the recorded primary kept; ``(vm_id, stored settings)``."""
        site = PeerAccess(self.db).admit(PeerRoute.REPLICA_SETTINGS, caller, vm_id).site
        assert site is not None  # a replica route's admission carries its record
        vm_id = site.vm_id
        for _ in range(8):
            rel = self.db.relationships.get(vm_id, int(_PRIMARY))
            kept = dataclasses.replace(settings,
                                       primary_connection_point=rel.settings.primary_connection_point)
            try:
                return vm_id, self.db.relationships.update(dataclasses.replace(rel, settings=kept)).settings
            except InUse:  # another writer won: re-read
                continue
        raise InUse(f"the relationship of {vm_id} keeps changing", message_id="StaleWrite",
                    kind="Relationship", key=vm_id)

    def _already(self, vm: VirtualMachine, caller: str) -> tuple[int, int] | None:
        site = self.db.replicas.find(vm.vm_id)
        head = self.db.recovery_points.latest(vm.vm_id)
        if vm.replication_mode is not ReplicationMode.REPLICA or site is None or head is None:
            return None
        if site.primary_host.strip().lower() != caller.strip().lower():
            return None
        rel = self.db.relationships.get(vm.vm_id, int(_PRIMARY))
        return int(rel.state), head.sequence

    def _check(self, vm: VirtualMachine, request: BecomeReplica) -> Relationship:
        rel = self.db.relationships.find(vm.vm_id, int(_PRIMARY))
        if vm.replication_mode is not ReplicationMode.PRIMARY or rel is None:
            raise InvalidState(f"virtual machine {vm.name} is not a primary here; it cannot become the "
                               "replica", message_id="ReverseTargetNotPrimary", vm=vm.name)
        if vm.enabled_state is not EnabledState.DISABLED:
            raise InvalidState(f"virtual machine {vm.name} is running: stop it first", message_id="VmRunning",
                               vm=vm.name)
        if rel.intent:
            raise InUse(f"a replication cycle of {vm.name} is still under way",
                        message_id="ReverseTargetBusy", vm=vm.name)
        planned = request.planned_sequence
        prepared = rel.state is _S.SYNCED_REPLICATION_COMPLETE and rel.sequence == planned
        if planned is not None and not prepared:
            raise InvalidState(f"virtual machine {vm.name} is not prepared for a planned failover at point "
                               f"{planned} (state {int(rel.state)}, point {rel.sequence})",
                               message_id="ReversePlannedMismatch", vm=vm.name, sequence=planned)
        ours = sorted((d.disk_id, d.size_bytes) for d in replicated_disks(vm))
        if ours != sorted(request.disks):
            raise InvalidParameter(f"the disks of {vm.name} here ({ours}) differ from the new primary's",
                                   message_id="ReverseDisksMismatch", vm=vm.name)
        return rel

    @staticmethod
    def _base(root: Path, rel: Relationship, request: BecomeReplica) -> int:
        highest = highest_point_file(root)
        if request.planned_sequence is None:
            return max(rel.sequence, request.at_least, highest)
        # Equal is fine: an interrupted earlier call moved the disks there (``move_disks`` adopts them).
        if highest > request.planned_sequence:
            raise InvalidState(f"{root} already holds point files up to {highest}",
                               message_id="ReverseFolderInUse", path=str(root))
        return request.planned_sequence

    def _record(self, vm: VirtualMachine, rel: Relationship, who: tuple[str, AuthorizationEntry],
                moved_to: _Moved, request: BecomeReplica) -> None:
        caller, entry = who
        root, base, moved = moved_to
        now = self.clock()
        planned = request.planned_sequence is not None
        point = RecoveryPoint(str(uuid.uuid4()).upper(), vm.vm_id, base, now,
                              VirtualSystemType.REPLICA_PLANNED_FAILOVER if planned
                              else VirtualSystemType.REPLICA_STANDARD,
                              images=tuple((d.disk_id, d.path) for d in moved))
        with self.db.transaction():
            self.db.vms.update(dataclasses.replace(self.db.vms.get(vm.vm_id), disks=moved,
                                                   replication_mode=ReplicationMode.REPLICA,
                                                   locked_from_start=False))
            self.db.relationships.update(dataclasses.replace(
                rel, state=_S.REPLICATING, health=ReplicationHealth.OK,
                settings=dataclasses.replace(request.settings, primary_connection_point=caller),
                failed_over_type=ReplicationType.NONE, state_before_failover=None, intent=None, sequence=base,
                last_replication_type=ReplicationType.PLANNED if planned else ReplicationType.REGULAR,
                last_replication_time=now, last_apply_time=now))
            for old in self.db.recovery_points.list(vm_id=vm.vm_id):
                self.db.recovery_points.delete(old.point_id)
            self.db.point_holds.release(vm.vm_id)
            self.db.recovery_points.insert(point)
            if self.db.replicas.find(vm.vm_id) is not None:
                self.db.replicas.delete(vm.vm_id)
            self.db.replicas.insert(ReplicaSite(vm.vm_id, caller, entry.trust_group, str(root), now, base))
            self.db.disk_stamps.clear(vm.vm_id)
            self.db.cycles.forget(vm.vm_id, int(_PRIMARY))
            self.db.events.record(now, "replication.reversed", "BecameReplica", element_id=vm.vm_id,
                                  args={"vm": vm.name, "primary": caller, "sequence": base})


def highest_point_file(root: Path) -> int:
    """The highest sequence of any ``rp-*`` file under ``root/disks`` (0 when none)."""
    found = [parse_point_file(p.name) for p in (root / "disks").glob("*/rp-*")] if root.is_dir() else []
    return max((parsed[0] for parsed in found if parsed is not None), default=0)


def move_disks(disks: Sequence[Disk], root: Path, base: int) -> tuple[Disk, ...]:
    """Rename each disk to ``root/disks/<disk>/rp-<base>.qcow2`` (bitmaps dropped, backing made absolute);
    a disk already moved by an interrupted earlier call is taken as it is."""
    moved = []
    for disk in disks:
        target = safe_folder(root, "disks", disk.disk_id) / point_file_name(base)
        source = Path(disk.path)
        if source.resolve() != target.resolve():
            if target.exists() and source.exists():
                raise InvalidState(f"{target} already exists", message_id="ReverseFolderInUse",
                                   path=str(target))
            if source.exists():
                _prepare_image(source)
                _rename(source, target)
        if not target.is_file():
            raise InvalidState(f"disk {disk.disk_id} ({source}) is missing", message_id="DiskFileMissing",
                               path=str(source))
        moved.append(dataclasses.replace(disk, path=str(target)))
    return tuple(moved)


def _prepare_image(image: Path) -> None:
    """Drop the primary's change tracking and make a relative backing name absolute (the file moves)."""
    for bitmap in qemu_img.bitmaps(image):
        if bitmap.name.startswith(BITMAP_PREFIX):
            qemu_img.bitmap_remove(image, bitmap.name)
    name = qemu_img.info(image).backing_file
    if name and not Path(name).is_absolute():
        qemu_img.rebase_unsafe(image, (image.parent / name).resolve())


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(str(source), str(target))  # another file system: copy, then delete
    chain.fsync_dir(target.parent)
