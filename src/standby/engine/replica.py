"""Replica-side use cases behind the peer routes (docs/replication.md): authorize the calling host, create
the replica VM and its relationship, report status, apply logs, take the heartbeats of idle cycles (the head
is current as of then; no new point; retention runs after them as after an apply, and listeners hear of
them), hash the head, mirror state changes, remove.

The replica keeps cycle records too (``db.cycles``, relationship 0): the applier adds one per applied log,
a heartbeat adds a 0-byte success as the primary counts it, so GetReplicationStatistics of a replica VM
counts the replications it received.

The caller is the identity in its TLS client certificate (the peer listener extracts it); ``PeerAccess``
checks it against the relationship each call touches (``domain.peer_access``). Files live
in ``<ReplicaStorageLocation>/<VMName>_<VMGUID>/``, resolved with symlinks: a location with ``..``, a VM
folder that is a symlink, or anything resolving outside the location is refused (32769).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from standby.domain.clock import Clock
from standby.domain.cycles import HEARTBEAT_DETAIL, CycleKind, CycleOutcome, CycleRecord
from standby.domain.entities import (
    Disk,
    Nic,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    EnabledState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import (
    AccessDenied,
    FileNotFound,
    InvalidParameter,
    InvalidState,
    NotFound,
    Unavailable,
)
from standby.domain.peer_access import PeerRoute
from standby.domain.replica import (
    APPLYING_STATES,
    FAILED_OVER_STATES,
    OutOfSequence,
    ReplicaSite,
    check_disk_id,
    mirrored_state,
    replica_folder_name,
)
from standby.engine.apply import ApplyResult, ReplicaApplier, read_file_chunks
from standby.engine.peer_access import Admission, Caller, PeerAccess, identity_of
from standby.storage import blockhash
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger("standby.replica")

_PRIMARY = RelationshipIndex.PRIMARY
#: Exported initial replication logs (``engine.cycle`` writes ``initial.sblog``).
EXPORT_SUFFIXES = (".sblog", ".sbylog")
_RUNNING = frozenset({EnabledState.ENABLED, EnabledState.STARTING, EnabledState.QUIESCE,
                      EnabledState.SHUTTING_DOWN})


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What ``POST /peer/v1/replicas`` carries: the primary VM's shape and the relationship's settings."""

    vm_id: str
    name: str
    memory_mib: int
    cpus: int
    disks: tuple[tuple[str, int], ...]
    nics: tuple[tuple[str, str], ...] = ()
    settings: ReplicationSettings = field(default_factory=ReplicationSettings)
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    #: An extended replica (mode 4): the primary is itself a replica (hyperv-api §9.8).
    extended: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """The answer of ``GET /peer/v1/replicas/{vm_id}``."""

    vm_id: str
    state: ReplicationState
    head_sequence: int
    points: tuple[RecoveryPoint, ...]


class ReplicaUseCases:
    """The replica side of every relationship this host receives."""

    def __init__(self, db: Store, clock: Clock, applier: ReplicaApplier) -> None:
        self._db = db
        self._clock = clock
        self.applier = applier
        self.access = PeerAccess(db)
        #: Called with the VM id after each recorded heartbeat (extended replication forwards it).
        self.heartbeat_listeners: list[Callable[[str], None]] = []

    # -- authorization ------------------------------------------------------------------------------------

    def authorize(self, caller: Caller, route: PeerRoute = PeerRoute.PING) -> Admission:
        """The admission of ``caller`` for a route that touches no relationship yet (32769 when no entry
        admits it, or inbound replication is off)."""
        return self.access.admit(route, caller)

    def _admitted_site(self, caller: Caller, vm_id: str, route: PeerRoute) -> ReplicaSite:
        """The replica record of ``vm_id`` when the table lets ``caller`` call ``route`` on it."""
        site = self.access.admit(route, caller, vm_id).site
        assert site is not None  # a replica route's admission carries its record
        return site

    # -- use cases ----------------------------------------------------------------------------------------

    def create_replica(self, caller: Caller, spec: ReplicaSpec) -> ReplicaStatus:
        """Create the replica VM (same GUID, mode 2, off, NICs disconnected) and its relationship (state 2).

        Idempotent for the same primary (or one of its trust group): the existing replica is reported.
        """
        vm_id = _check_spec(spec)
        admission = self.authorize(caller, PeerRoute.CREATE_REPLICA)
        entry, host = admission.entry, admission.host
        assert entry is not None  # CREATE_REPLICA admits only callers an entry admits
        if self._db.replicas.find(vm_id) is not None:
            return self.status(caller, vm_id)
        existing = self._db.vms.find(vm_id)
        if existing is not None and existing.replication_mode not in (ReplicationMode.REPLICA,
                                                                       ReplicationMode.EXTENDED_REPLICA):
            raise InvalidState(f"virtual machine {vm_id} already exists on this host and is not a replica",
                               message_id="ReplicaVmExists", vm=vm_id)
        root = resolve_replica_root(entry.storage_location, replica_folder_name(spec.name, vm_id))
        for disk_id, _ in spec.disks:
            safe_folder(root, "disks", disk_id)
        now = self._clock()
        site = ReplicaSite(vm_id, host, entry.trust_group, str(root), now)
        settings = replace(spec.settings, primary_connection_point=host)
        relationship = Relationship(vm_id, _PRIMARY, ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
                                    health=ReplicationHealth.WARNING, settings=settings)
        with self._db.transaction():
            if existing is None:
                self._db.vms.insert(_replica_vm(spec, vm_id, now))
            if self._db.relationships.find(vm_id, int(_PRIMARY)) is None:
                self._db.relationships.insert(relationship)
            self._db.replicas.insert(site)
            self._db.events.record(now, "replication", "ReplicaCreated", element_id=vm_id,
                                   args={"primary": host, "location": str(root)})
        return self.status(caller, vm_id)

    def status(self, caller: Caller, vm_id: str) -> ReplicaStatus:
        """State, head sequence and recovery points of a replica."""
        site = self._admitted_site(caller, vm_id, PeerRoute.REPLICA_STATUS)
        relationship = self._db.relationships.get(site.vm_id, int(_PRIMARY))
        points = tuple(self._db.recovery_points.list(vm_id=site.vm_id))
        return ReplicaStatus(site.vm_id, relationship.state, points[-1].sequence if points else 0, points)

    async def put_log(self, caller: Caller, vm_id: str, sequence: int,
                      chunks: AsyncIterator[bytes]) -> ApplyResult:
        """Apply one streamed log (``ReplicaApplier.apply``)."""
        site = self._admitted_site(caller, vm_id, PeerRoute.PUT_LOG)
        return await self.applier.apply(site.vm_id, sequence, chunks)

    async def heartbeat(self, caller: Caller, vm_id: str, sequence: int) -> int:
        """The primary's idle cycle: nothing changed since its cut ``sequence``, so no log and no new point.

        ``sequence`` must be the head (else ``OutOfSequence``, answered 409 as for a log: the primary
        resyncs); the head then is current as of now: LastReplicationTime and health OK, and a successful
        0-byte cycle record (``detail`` "heartbeat"), in one store transaction. A suspended replica refuses
        (503) as it refuses logs; a failed-over one only reports its head (logs are kept aside then, a
        heartbeat has nothing to keep). Returns the head sequence.

        After a recorded heartbeat, as after an apply: retention runs once the answer is out, still under
        the VM's lock (points older than RecoveryHistory are merged even while the VM stays idle), and the
        ``heartbeat_listeners`` hear of it (an extended relationship tells its replica in turn).
        """
        site = self._admitted_site(caller, vm_id, PeerRoute.HEARTBEAT)
        lock = self.applier.lock(site.vm_id)
        await lock.acquire()
        try:
            head_sequence, recorded = self._heartbeat_locked(site.vm_id, sequence)
        except BaseException:
            lock.release()
            raise
        if not recorded:
            lock.release()
            return head_sequence
        self.applier.retain_after(site.vm_id, lock)  # it releases the lock when done
        for listener in self.heartbeat_listeners:
            try:
                listener(site.vm_id)
            except Exception:  # the heartbeat stands; a listener's failure is its own
                log.exception("a heartbeat listener failed", extra={"fields": {"vm": site.vm_id}})
        return head_sequence

    def _heartbeat_locked(self, vm_id: str, sequence: int) -> tuple[int, bool]:
        """(the head sequence, whether the heartbeat was recorded) - under the VM's lock."""
        relationship = self._db.relationships.get(vm_id, int(_PRIMARY))
        head = self._db.recovery_points.latest(vm_id)
        head_sequence = head.sequence if head else 0
        if relationship.state in FAILED_OVER_STATES:
            return head_sequence, False
        if relationship.state not in APPLYING_STATES:
            raise Unavailable(f"replication of {vm_id} is suspended on the replica (state "
                              f"{int(relationship.state)})", message_id="ReplicaNotAccepting",
                              vm=vm_id, state=str(int(relationship.state)))
        if head is None or head.sequence != sequence:
            raise OutOfSequence(head_sequence, f"heartbeat for point {sequence}, head is "
                                               f"{head_sequence if head else 'none'}")
        for attempt in range(3):  # a mirrored state change (not under this lock) may write meanwhile
            now = self._clock()
            try:
                with self._db.transaction():
                    self._db.relationships.update(replace(relationship, last_replication_time=now,
                                                          health=ReplicationHealth.OK))
                    self._db.cycles.record(CycleRecord(vm_id, int(_PRIMARY), head_sequence, CycleKind.DELTA,
                                                       CycleOutcome.SUCCESS, now, now,
                                                       detail=HEARTBEAT_DETAIL))
                break
            except StaleWrite:
                if attempt == 2:
                    raise
                relationship = self._db.relationships.get(vm_id, int(_PRIMARY))
        return head_sequence, True

    async def hashes(self, caller: Caller, vm_id: str, disk_id: str, block_size: int) -> bytes:
        """16-byte xxh3-128 per block of the head's image of ``disk_id`` (the VM's own disk before IR)."""
        site = self._admitted_site(caller, vm_id, PeerRoute.HASHES)
        async with self.applier.lock(site.vm_id):
            image = self._head_image(site.vm_id, disk_id)
            return await asyncio.to_thread(blockhash.image_block_hashes, image, block_size)

    def set_state(self, caller: Caller, vm_id: str, requested: int) -> ReplicationState:
        """Mirror a primary-side state change (suspend, resume, cancel IR or resync) onto the replica."""
        site = self._admitted_site(caller, vm_id, PeerRoute.SET_STATE)
        relationship = self._db.relationships.get(site.vm_id, int(_PRIMARY))
        has_points = self._db.recovery_points.latest(site.vm_id) is not None
        state = mirrored_state(relationship.state, requested, has_points=has_points)
        health = ReplicationHealth.OK if state == ReplicationState.REPLICATING else ReplicationHealth.WARNING
        self._db.relationships.update(replace(relationship, state=state, health=health))
        return state

    async def remove(self, caller: Caller, vm_id: str) -> None:
        """Remove the replica-side relationship; the VM stays (mode None, its disks on the head's images)."""
        site = self._admitted_site(caller, vm_id, PeerRoute.REMOVE_REPLICA)
        async with self.applier.lock(site.vm_id):
            vm = self._db.vms.get(site.vm_id)
            with self._db.transaction():
                if self._db.relationships.find(site.vm_id, int(_PRIMARY)) is not None:
                    self._db.relationships.delete(site.vm_id, int(_PRIMARY))
                self._db.replicas.delete(site.vm_id)
                self._db.cycles.forget(site.vm_id, int(_PRIMARY))
                self._db.vms.update(replace(vm, replication_mode=ReplicationMode.NONE))
                self._db.events.record(self._clock(), "replication", "ReplicaRemoved", element_id=site.vm_id,
                                       args={"primary": identity_of(caller).name})

    def vm_running(self, caller: Caller, vm_id: str) -> tuple[bool, EnabledState]:
        """Whether a VM of this host runs (the split-brain guard of an unplanned failover on its replica).

        Only the VM's recorded replica host may ask (``domain.peer_access``).
        """
        self.access.admit(PeerRoute.VM_RUNNING, caller, vm_id)
        vm = self._db.vms.get(vm_id.upper())
        return vm.enabled_state in _RUNNING, vm.enabled_state

    async def import_initial_replica(self, vm_id: str, folder: Path) -> list[ApplyResult]:
        """ImportInitialReplica: apply the exported logs (``*.sblog``) of ``folder`` in sequence order.

        ``folder`` is the export location (its ``…_<VMGUID>`` subfolder is used) or that subfolder itself.
        """
        vm = self._db.vms.get(vm_id.upper())
        if self._db.replicas.find(vm.vm_id) is None:
            raise InvalidState(f"virtual machine {vm_id} is not a replica of this host",
                               message_id="NotAReplica", vm=vm_id)
        if not folder.is_dir():
            raise FileNotFound(f"{folder} is not a folder", message_id="ImportLocationMissing",
                               path=str(folder))
        subfolders = [p for p in folder.iterdir() if p.is_dir() and p.name.upper().endswith(f"_{vm.vm_id}")]
        chosen = subfolders[0] if subfolders else folder
        logs = sorted(p for p in chosen.iterdir() if p.suffix in EXPORT_SUFFIXES and p.is_file())
        if not logs:
            raise FileNotFound(f"{chosen} holds no exported replication log (*.sblog)",
                               message_id="ImportLogsMissing", path=str(chosen))
        return [await self.applier.apply(vm.vm_id, None, read_file_chunks(path)) for path in logs]

    def _head_image(self, vm_id: str, disk_id: str) -> Path:
        head = self._db.recovery_points.latest(vm_id)
        images = dict(head.images) if head else {
            disk.disk_id: disk.path for disk in self._db.vms.get(vm_id).disks if disk.path}
        if disk_id not in images or not Path(images[disk_id]).is_file():
            raise NotFound(f"replica {vm_id} has no image of disk {disk_id} yet", message_id="ObjectNotFound",
                           kind="Disk", key=f"{vm_id}/{disk_id}")
        return Path(images[disk_id])


# -- storage location ---------------------------------------------------------------------------------------


def resolve_replica_root(location: str, folder_name: str) -> Path:
    """``<location>/<folder_name>`` resolved; refuses ``..``, relative locations, symlinked VM folders and
    anything that resolves outside ``location``."""
    base = Path(location)
    if not base.is_absolute() or ".." in base.parts:
        raise AccessDenied(f"ReplicaStorageLocation {location!r} must be an absolute path without '..'",
                           message_id="StorageLocationEscape", path=location)
    real_base = base.resolve()
    return safe_folder(real_base, folder_name)


def safe_folder(root: Path, *parts: str) -> Path:
    """Create ``root/parts…`` step by step, refusing symlinks and anything that leaves ``root``."""
    current = root
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part:
            raise AccessDenied(f"{part!r} cannot name a folder inside {root}",
                               message_id="StorageLocationEscape", path=str(root / part))
        current = current / part
        if current.is_symlink():
            raise AccessDenied(f"{current} is a symbolic link; replica files must stay inside {root}",
                               message_id="StorageLocationEscape", path=str(current))
        current.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not current.resolve().is_relative_to(root.resolve()):
            raise AccessDenied(f"{current} resolves outside {root}", message_id="StorageLocationEscape",
                               path=str(current))
    return current


def _check_spec(spec: ReplicaSpec) -> str:
    vm_id = spec.vm_id.strip().upper()
    check_disk_id(vm_id)
    if spec.memory_mib <= 0 or spec.cpus <= 0:
        raise InvalidParameter("memory_mib and cpus must be positive", message_id="InvalidVmShape", vm=vm_id)
    if not spec.disks:
        raise InvalidParameter("a replica needs at least one disk", message_id="InvalidVmShape", vm=vm_id)
    ids = [check_disk_id(disk_id) for disk_id, _ in spec.disks]
    if len(set(ids)) != len(ids) or any(size <= 0 for _, size in spec.disks):
        raise InvalidParameter("disk ids must be unique and sizes positive", message_id="InvalidVmShape",
                               vm=vm_id)
    return vm_id


def _replica_vm(spec: ReplicaSpec, vm_id: str, now: datetime) -> VirtualMachine:
    # NICs start disconnected (hyperv-api §3.2); disk images appear with the first log.
    return VirtualMachine(
        vm_id=vm_id, name=spec.name, memory_mib=spec.memory_mib, cpus=spec.cpus,
        disks=tuple(Disk(disk_id, "", size) for disk_id, size in spec.disks),
        nics=tuple(Nic(nic_id, mac, "none") for nic_id, mac in spec.nics),
        kernel=spec.kernel, initrd=spec.initrd, append=spec.append,
        enabled_state=EnabledState.DISABLED, created_at=now,
        replication_mode=ReplicationMode.EXTENDED_REPLICA if spec.extended else ReplicationMode.REPLICA,
    )


def points_json(points: Sequence[RecoveryPoint]) -> list[dict[str, object]]:
    """The ``points`` list of the status answer."""
    return [{"point_id": p.point_id, "sequence": p.sequence, "created_at": p.created_at.isoformat(),
             "kind": p.kind.value} for p in points]
