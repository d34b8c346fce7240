"""What the failover use cases share: compare-and-swap writes with retries, the files of a failover (disks
over a recovery point, the cloud-init seed), and the event log.

Files live in the replica's folder (docs/replication.md): ``failover/<disk>.qcow2`` and ``seed/`` for a
failover, ``test/<disk>.qcow2`` (and its seed) for a test VM. Every disk made here is an overlay: nothing is
copied, whatever the disk size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from standby.domain.clock import Clock
from standby.domain.entities import Disk, RecoveryPoint, Relationship, VirtualMachine
from standby.domain.enums import RelationshipIndex
from standby.domain.errors import FileNotFound, InUse, NotFound, StandbyError
from standby.domain.failover import SEED_DISK_ID, replica_dir_of
from standby.storage import failover_images, seed
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger("standby.failover")

#: A per-VM lock (the replica applier's ``chain_guard``): held while a point is chosen and recorded as in
#: use, so that retention cannot merge it away in between.
ChainGuard = Callable[[str], asyncio.Lock]
_RETRIES = 8
SEED_ISO = "cidata.iso"
SEED_OVERLAY = "cidata.qcow2"


def own_locks() -> ChainGuard:
    """Per-VM locks of our own, for a host that applies no logs (nothing merges there)."""
    locks: dict[str, asyncio.Lock] = {}
    return lambda vm_id: locks.setdefault(vm_id, asyncio.Lock())


class FailoverStore:
    """Store writes of the failover use cases: re-read and re-apply when another writer got there first."""

    def __init__(self, db: Store, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def update_vm(self, vm_id: str, change: Callable[[VirtualMachine], VirtualMachine]) -> VirtualMachine:
        """Apply ``change`` to the stored VM with compare-and-swap (VM events write it too)."""
        for _ in range(_RETRIES):
            vm = self.db.vms.get(vm_id)
            try:
                return self.db.vms.update(change(vm))
            except StaleWrite:
                continue
        raise InUse(f"VM {vm_id} keeps changing", message_id="StaleWrite", kind="VM", key=vm_id)

    def relationship(self, vm_id: str) -> Relationship:
        """The VM's primary relationship (the one failover acts on)."""
        found = self.db.relationships.find(vm_id, int(RelationshipIndex.PRIMARY))
        if found is None:
            raise NotFound(f"virtual machine {vm_id} has no replication relationship",
                           message_id="ObjectNotFound", kind="Relationship", key=f"{vm_id}/0")
        return found

    def update_relationship(self, vm_id: str, change: Callable[[Relationship], Relationship]) -> Relationship:
        """Apply ``change`` to the primary relationship with compare-and-swap."""
        for _ in range(_RETRIES):
            current = self.relationship(vm_id)
            try:
                return self.db.relationships.update(change(current))
            except StaleWrite:
                continue
        raise InUse(f"the relationship of VM {vm_id} keeps changing", message_id="StaleWrite",
                    kind="Relationship", key=f"{vm_id}/0")

    def point(self, vm_id: str, point_id: str | None) -> RecoveryPoint:
        """The named point of the VM, or its latest one (the guard already checked it exists)."""
        point = self.db.recovery_points.latest(vm_id) if point_id is None else \
            self.db.recovery_points.find(point_id)
        if point is None or point.vm_id != vm_id:
            raise NotFound(f"virtual machine {vm_id} has no recovery point {point_id or '(latest)'}",
                           message_id="ObjectNotFound", kind="RecoveryPoint", key=point_id or vm_id)
        return point

    def event(self, vm_id: str, kind: str, message_id: str, **args: object) -> None:
        """Record an event of the VM (a failure to record is logged, never fatal)."""
        try:
            self.db.events.record(self.clock(), kind, message_id, element_id=vm_id, args=args)
        except StandbyError:
            log.exception("could not record event %s of VM %s", kind, vm_id)


def replica_dir(point: RecoveryPoint) -> Path | None:
    """The replica folder a point's images live in (``…/<VMName>_<VMGUID>``); None for a point of a diskless
    VM, which has no images and needs no files."""
    if not point.images:
        return None
    return Path(replica_dir_of(point.images[0][1]))


def overlay_disks(vm: VirtualMachine, point: RecoveryPoint, folder: Path) -> list[Disk]:
    """One overlay per VM disk in ``folder`` over that disk's image in ``point`` (seed disks skipped)."""
    images = dict(point.images)
    made: list[Disk] = []
    try:
        for disk in vm.disks:
            if disk.disk_id == SEED_DISK_ID:
                continue
            image = images.get(disk.disk_id)
            if image is None:
                raise FileNotFound(f"recovery point {point.point_id} has no image of disk {disk.disk_id}",
                                   message_id="PointImageMissing", point=point.point_id, disk=disk.disk_id)
            path = failover_images.failover_overlay(folder / f"{disk.disk_id}.qcow2", Path(image))
            made.append(replace(disk, path=str(path)))
    except BaseException:
        failover_images.remove([Path(d.path) for d in made])
        raise
    return made


def head_disks(vm: VirtualMachine, head: RecoveryPoint) -> tuple[Disk, ...]:
    """The VM's disks pointed back at the head point's images (seed disks dropped)."""
    images = dict(head.images)
    disks = []
    for disk in vm.disks:
        if disk.disk_id == SEED_DISK_ID:
            continue
        image = images.get(disk.disk_id)
        if image is None:
            raise FileNotFound(f"recovery point {head.point_id} has no image of disk {disk.disk_id}",
                               message_id="PointImageMissing", point=head.point_id, disk=disk.disk_id)
        disks.append(replace(disk, path=image))
    return tuple(disks)


def seed_disk(store: FailoverStore, vm: VirtualMachine, folder: Path, instance_id: str) -> Disk | None:
    """The cloud-init seed disk with the VM's failover IP settings (None when it has none)."""
    settings = store.db.failover_network.list(vm_id=vm.vm_id)
    if not settings:
        return None
    content = seed.seed_content(instance_id, vm.name, vm.nics, settings)
    iso = seed.build_seed_iso(content, folder / SEED_ISO)
    overlay = failover_images.failover_overlay(folder / SEED_OVERLAY, iso, backing_format="raw")
    return Disk(SEED_DISK_ID, str(overlay), iso.stat().st_size)


def remove_folder_files(folder: Path, names: list[str] | None = None) -> None:
    """Delete the files failover made in ``folder`` (all regular files when ``names`` is None)."""
    if not folder.is_dir():
        return
    if names is not None:
        targets = [folder / n for n in names]
    else:
        targets = [p for p in folder.iterdir() if p.is_file()]
    failover_images.remove(targets)
