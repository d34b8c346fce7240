"""Shared set-up for the failover tests: a replica with a real qcow2 recovery-point chain.

Not a test module itself. The chain is built the way the replica applier lays it out (docs/replication.md):
``<root>/<name>_<GUID>/disks/d0/rp-<seq>.qcow2``, each point an overlay on the previous one, written with
``qemu-io`` so every point holds different bytes. The store gets the replica VM (mode 2, pointing at the
head), its relationship (Replicating, a replication received) and one RecoveryPoint per image.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from standby.domain.entities import (
    Disk,
    Nic,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.store.sqlite import Database

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
VM_ID = "6F1E0B2A-2222-4C3B-9D51-0000000000F1"
#: What each point writes on top of its parent: (qemu-io pattern byte, offset, length).
WRITES = ((0x11, 0, 2 << 20), (0x22, 1 << 20, 2 << 20), (0x33, 512 << 10, 256 << 10))


def clock() -> datetime:
    """The fixed time of the failover tests."""
    return NOW


def qemu_io(image: Path, command: str) -> None:
    """Run one qemu-io command on an image (as the applier would write a log into it)."""
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)], check=True, capture_output=True)


def images_identical(a: Path, b: Path) -> bool:
    """``qemu-img compare``: the guest-visible content of two images is the same."""
    proc = subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], capture_output=True, check=False)
    if proc.returncode not in (0, 1):
        raise AssertionError(f"qemu-img compare failed: {proc.stderr!r}")
    return proc.returncode == 0


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (the image file itself, not its guest view)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backing_of(image: Path) -> str | None:
    """The backing file an image names."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], check=True,
                         capture_output=True, text=True).stdout
    import json

    value = json.loads(out).get("backing-filename")
    return str(value) if value else None


@dataclass
class Replica:
    """A replica VM with its chain, as stored."""

    db: Database
    vm: VirtualMachine
    folder: Path
    points: list[RecoveryPoint]

    def image(self, index: int) -> Path:
        """The top image of point ``index`` (0 = the oldest)."""
        return Path(self.points[index].images[0][1])


def make_replica(root: Path, db: Database, *, size: str = "16M", vm_id: str = VM_ID, name: str = "web01",
                 primary: str = "primary.example.com", kernel: str | None = None,
                 initrd: str | None = None, append: str | None = None,
                 writes: tuple[tuple[int, int, int], ...] = WRITES) -> Replica:
    """Build the chain and store the replica (mode 2, Replicating, a point per write)."""
    folder = root / f"{name}_{vm_id}"
    chain = folder / "disks" / "d0"
    chain.mkdir(parents=True)
    points: list[RecoveryPoint] = []
    previous: Path | None = None
    for seq, (pattern, offset, length) in enumerate(writes, start=1):
        image = chain / f"rp-{seq:010d}.qcow2"
        if previous is None:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), size], check=True)
        else:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(previous), "-F", "qcow2",
                            str(image)], check=True)
        qemu_io(image, f"write -P {pattern:#x} {offset} {length}")
        points.append(RecoveryPoint(f"{vm_id}-RP{seq}", vm_id, seq, NOW - timedelta(minutes=10 - seq),
                                    VirtualSystemType.REPLICA_STANDARD, images=(("d0", str(image)),),
                                    parent_id=points[-1].point_id if points else None))
        previous = image
    size_bytes = int(size.rstrip("M")) << 20
    vm = VirtualMachine(vm_id, name, 192, 1, disks=(Disk("d0", str(previous), size_bytes),),
                        nics=(Nic("n0", "52:54:00:12:34:56"),), kernel=kernel, initrd=initrd, append=append,
                        replication_mode=ReplicationMode.REPLICA, created_at=NOW)
    vm = db.vms.insert(vm)
    db.relationships.insert(Relationship(
        vm_id, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING, health=ReplicationHealth.OK,
        settings=ReplicationSettings(primary_connection_point=primary, interval_seconds=300),
        last_replication_time=NOW - timedelta(minutes=1), sequence=len(points)))
    for point in points:
        db.recovery_points.insert(point)
    return Replica(db, db.vms.get(vm_id), folder, points)
