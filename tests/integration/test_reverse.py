"""The file side of reverse replication with real qemu-img / qemu-nbd: what a failover overlay holds, and the
old primary's disks becoming the base of a replica chain (moved, tracking dropped, backing kept)."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import RelationshipIndex, ReplicationMode, ReplicationState, VirtualSystemType
from standby.domain.errors import InvalidState
from standby.engine.reverse import BecomeReplica, ReverseTarget, allocated_ranges, move_disks
from standby.hypervisor.qemu import offline
from standby.storage import chain, qemu_img
from standby.store.sqlite import Database

MiB = 1024 * 1024
VM_ID = "9D0E1F2A-0000-4000-8000-0000000000F1"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _io(path: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def _same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0


def test_allocated_ranges_are_the_overlays_own_clusters(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, 16 * MiB)
    _io(base, "write -P 1 0 4M")
    overlay = tmp_path / "over.qcow2"
    qemu_img.create_overlay(overlay, base)
    assert allocated_ranges(overlay) == []  # nothing written since the point
    _io(overlay, "write -P 2 1M 64k", "write -P 3 1088k 64k", "write -z 8M 128k")
    assert allocated_ranges(overlay) == [(1 * MiB, 128 * 1024), (8 * MiB, 128 * 1024)]


def test_moved_disks_keep_their_content_and_backing_and_lose_their_bitmaps(tmp_path: Path) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    base = folder / "base.qcow2"
    qemu_img.create(base, 16 * MiB)
    _io(base, "write -P 7 0 1M")
    disk = folder / "disk.qcow2"
    qemu_img.create_overlay(disk, base)  # a relative backing name: it must survive the move
    _io(disk, "write -P 8 2M 64k")
    offline.bitmap_add(disk, "rep-12", 65536)
    reference = tmp_path / "reference.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(reference)], check=True)
    root = tmp_path / "replicas" / "web_X"
    root.mkdir(parents=True)

    (moved,) = move_disks([Disk("d0", str(disk), 16 * MiB)], root, 12)
    target = Path(moved.path)
    assert target == root / "disks" / "d0" / "rp-0000000012.qcow2" and not disk.exists()
    assert chain.backing_file(target) == base.resolve() and _same(target, reference)
    assert offline.image_bitmaps(target) == []
    # Repeating the move after an interruption adopts the moved file.
    assert move_disks([Disk("d0", str(disk), 16 * MiB)], root, 12) == (moved,)
    other = folder / "other.qcow2"
    qemu_img.create(other, 16 * MiB)
    with pytest.raises(InvalidState):  # never over another file
        move_disks([Disk("d0", str(other), 16 * MiB)], root, 12)


def test_the_old_primary_becomes_a_replica_at_the_planned_point(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "a.db")
    location = tmp_path / "replicas"
    location.mkdir()
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry("hvb.lab", "lab", str(location)))
    image = tmp_path / "vms" / "d0.qcow2"
    image.parent.mkdir()
    qemu_img.create(image, 16 * MiB)
    _io(image, "write -P 5 0 1M")
    db.vms.insert(VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", str(image), 16 * MiB),),
                                 replication_mode=ReplicationMode.PRIMARY, locked_from_start=True))
    db.relationships.insert(replace(Relationship(VM_ID, RelationshipIndex.PRIMARY,
                                                 ReplicationState.SYNCED_REPLICATION_COMPLETE), sequence=41,
                                    settings=ReplicationSettings(recovery_connection_point="hvb.lab")))
    db.disk_stamps.put(VM_ID, [("d0", 1, 1)])
    settings = ReplicationSettings(recovery_connection_point="hva.lab", recovery_port=8443,
                                   primary_connection_point="hvb.lab")
    target = ReverseTarget(db, lambda: NOW)
    request = BecomeReplica(settings, (("d0", 16 * MiB),), planned_sequence=41, at_least=41)

    assert asyncio.run(target.become_replica("hvb.lab", VM_ID, request)) == (3, 41)
    vm = db.vms.get(VM_ID)
    assert vm.replication_mode is ReplicationMode.REPLICA and not vm.locked_from_start
    head = db.recovery_points.latest(VM_ID)
    assert head is not None and head.sequence == 41
    assert head.kind is VirtualSystemType.REPLICA_PLANNED_FAILOVER
    assert dict(head.images)["d0"] == vm.disks[0].path and Path(vm.disks[0].path).is_file()
    assert Path(vm.disks[0].path).is_relative_to(location)
    rel = db.relationships.get(VM_ID, 0)
    assert rel.state is ReplicationState.REPLICATING and rel.settings.primary_connection_point == "hvb.lab"
    site = db.replicas.get(VM_ID)
    assert (site.primary_host, site.base_sequence) == ("hvb.lab", 41)
    assert db.disk_stamps.get(VM_ID) == []  # the next start as a primary must not look like a resync
    # Asked again (B retrying its job): the same answer, nothing moves.
    assert asyncio.run(target.become_replica("hvb.lab", VM_ID, request)) == (3, 41)
    db.close()
