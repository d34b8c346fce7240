"""A real ``standby serve`` for the interop tests, with a store seeded the way replication leaves it.

The data directory's SQLite store gets, before the daemon starts:
- a primary VM ``web`` (mode 1, state 3) — the failover methods refuse it (32775);
- the replica VM ``web-replica`` (mode 2, state 3, off) of a primary host that cannot be reached
  (``hosta.invalid``) with a REAL qcow2 chain: two recovery points, each an overlay holding different bytes;
- the replica VM ``db-replica`` (same primary host) with one real point;
- the collection ``group-1`` of both replicas with one complete collection recovery point (their latest
  points);
- the replica VM ``lost-replica`` (primary ``hostb.invalid``) whose point image is gone: its failover job
  fails.
The redundancy sets are derived by the daemon (``VM-<GUID>``, ``HOSTS-<host>``). Standard clients then talk to
the daemon over loopback HTTP (and HTTPS in one test). Every test leaves the seeded state as it found it: an
autouse fixture reverts the collection and every replica that a test failed over.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standby.daemon.testing import DaemonProcess
from standby.domain.entities import (
    Collection,
    CollectionRecoveryPoint,
    Disk,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    EnabledState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.store.sqlite import Database

USER, PASSWORD = "admin", "s3cret-pw"
VIRT = "root/virtualization/v2"
CLUSTER = "root/HyperVCluster/v2"
PRIMARY_HOST, LOST_HOST = "hosta.invalid", "hostb.invalid"
PRIMARY_VM = "11111111-1111-4111-8111-111111111111"
REPLICA_VM = "22222222-2222-4222-8222-222222222222"
POINT_ID = "33333333-3333-4333-8333-333333333333"  # web-replica's older point
LATEST_POINT_ID = "33333333-3333-4333-8333-333333333334"  # web-replica's latest point
COLLECTION_ID = "44444444-4444-4444-8444-444444444444"
COLLECTION_POINT_ID = "44444444-4444-4444-8444-444444444445"
SECOND_VM = "66666666-6666-4666-8666-666666666666"
SECOND_POINT_ID = "66666666-6666-4666-8666-666666666667"
LOST_VM = "77777777-7777-4777-8777-777777777777"
LOST_POINT_ID = "77777777-7777-4777-8777-777777777778"
REPLICAS = (REPLICA_VM, SECOND_VM, LOST_VM)
#: The redundancy set the daemon derives for web-replica, and the primary's copy as its member.
REDUNDANCY_SET_ID = f"VM-{REPLICA_VM}"
PEER_VM = f"{REPLICA_VM}@{PRIMARY_HOST}"
#: (qemu-io pattern byte, offset, length) each point of web-replica writes over its parent.
WRITES = ((0x11, 0, 1 << 20), (0x22, 512 << 10, 1 << 20))
SIZE = 8 << 20


@dataclass(frozen=True)
class Seeded:
    """Where the seeded replicas' images are: ``images[vm_id]`` lists the point images, oldest first."""

    root: Path
    images: dict[str, list[Path]]

    def folder(self, vm_id: str) -> Path:
        """The replica folder ``<name>_<GUID>`` (failover overlays go to its ``failover/``)."""
        return self.images[vm_id][0].parent.parent.parent


def _chain(folder: Path, writes: tuple[tuple[int, int, int], ...]) -> list[Path]:
    """Real point images laid out as the replica applier does (``disks/d0/rp-<seq>.qcow2``), overlays."""
    chain = folder / "disks" / "d0"
    chain.mkdir(parents=True)
    images: list[Path] = []
    for seq, (pattern, offset, length) in enumerate(writes, start=1):
        image = chain / f"rp-{seq:010d}.qcow2"
        backing = ["-b", str(images[-1]), "-F", "qcow2"] if images else []
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(image), str(SIZE)],
                       check=True)
        write = f"write -P {pattern:#x} {offset} {length}"
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", write, str(image)], check=True, capture_output=True)
        images.append(image)
    return images


def _replica(db: Database, vm_id: str, name: str, *, primary: str, points: list[tuple[str, Path]],
             now: datetime) -> None:
    """A replica VM (off, state 3) whose disk is its latest point image, and its points."""
    db.vms.insert(VirtualMachine(vm_id, name, 256, 1, disks=(Disk("d0", str(points[-1][1]), SIZE),),
                                 enabled_state=EnabledState.DISABLED,
                                 replication_mode=ReplicationMode.REPLICA, created_at=now))
    db.relationships.insert(Relationship(
        vm_id, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING, ReplicationHealth.OK,
        ReplicationSettings(primary_connection_point=primary),
        last_replication_time=now - timedelta(minutes=1), sequence=len(points)))
    parent: str | None = None
    for seq, (point_id, image) in enumerate(points, start=1):
        db.recovery_points.insert(RecoveryPoint(
            point_id, vm_id, seq, now - timedelta(minutes=10 - seq), VirtualSystemType.REPLICA_STANDARD,
            images=(("d0", str(image)),), parent_id=parent))
        parent = point_id


def seed(db: Database, root: Path) -> Seeded:
    """Build the images under ``root`` and store the objects the tests drive (see the module docstring)."""
    now = datetime.now(UTC).replace(microsecond=0)
    db.vms.insert(VirtualMachine(PRIMARY_VM, "web", 256, 1, enabled_state=EnabledState.DISABLED,
                                 replication_mode=ReplicationMode.PRIMARY, created_at=now))
    db.relationships.insert(Relationship(PRIMARY_VM, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING,
                                         last_replication_time=now - timedelta(minutes=5)))
    web = _chain(root / f"web-replica_{REPLICA_VM}", WRITES)
    second = _chain(root / f"db-replica_{SECOND_VM}", ((0x44, 0, 1 << 20),))
    lost = root / f"lost-replica_{LOST_VM}" / "disks" / "d0" / "rp-0000000001.qcow2"  # never made
    _replica(db, REPLICA_VM, "web-replica", primary=PRIMARY_HOST,
             points=[(POINT_ID, web[0]), (LATEST_POINT_ID, web[1])], now=now)
    _replica(db, SECOND_VM, "db-replica", primary=PRIMARY_HOST, points=[(SECOND_POINT_ID, second[0])],
             now=now)
    _replica(db, LOST_VM, "lost-replica", primary=LOST_HOST, points=[(LOST_POINT_ID, lost)], now=now)
    db.collections.insert(Collection(COLLECTION_ID, "group-1", (REPLICA_VM, SECOND_VM),
                                     ReplicationMode.REPLICA, CollectionReplicationState.REPLICATING))
    db.collection_points.insert(CollectionRecoveryPoint(
        COLLECTION_POINT_ID, COLLECTION_ID, now - timedelta(minutes=1),
        ConsistencyLevel.GROUP_CRASH_CONSISTENT,
        ((REPLICA_VM, LATEST_POINT_ID), (SECOND_VM, SECOND_POINT_ID)), 1.5))
    return Seeded(root, {REPLICA_VM: web, SECOND_VM: second, LOST_VM: [lost]})


@pytest.fixture(scope="session")
def seeded_daemon() -> Iterator[tuple[DaemonProcess, Seeded]]:
    """One seeded daemon for the whole interop session, and its images."""
    folder = Path(tempfile.mkdtemp(prefix="sbiop-", dir="/tmp"))
    process = DaemonProcess.prepare(folder / "data", users={USER: PASSWORD})
    db = Database.open(process.data_dir / "standby.db")
    try:
        seeded = seed(db, folder / "replicas")
    finally:
        db.close()
    process.launch()
    try:
        if "CIM-XML mounted" not in process.log():
            pytest.fail(f"the daemon did not mount /cimom:\n{process.log()[-3000:]}")
        yield process, seeded
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon(seeded_daemon: tuple[DaemonProcess, Seeded]) -> DaemonProcess:
    """The seeded daemon process."""
    return seeded_daemon[0]


@pytest.fixture(scope="session")
def seeded(seeded_daemon: tuple[DaemonProcess, Seeded]) -> Seeded:
    """The seeded replicas' images."""
    return seeded_daemon[1]


@pytest.fixture(scope="session")
def url(daemon: DaemonProcess) -> str:
    """The loopback HTTP CIM-XML listener."""
    return f"http://127.0.0.1:{daemon.http_port}"


@pytest.fixture(autouse=True)
def _replicas_left_replicating(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that failed the collection or a replica over leaves them reverted (state 3 again)."""
    yield
    if "url" in request.fixturenames:
        revert_all(request.getfixturevalue("url"))


def revert_all(url: str, timeout: float = 60.0) -> None:
    """RevertFailover on the collection, then on every seeded replica, until each answers 32775."""
    import pywbem

    conn = pywbem.WBEMConnection(url, (USER, PASSWORD), default_namespace=VIRT, timeout=60)
    (collections,) = conn.EnumerateInstanceNames("Msvm_CollectionReplicationService", namespace=CLUSTER)
    group = pywbem.CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": COLLECTION_ID},
                                   namespace=CLUSTER)
    _revert(conn, collections, {"Collection": group}, timeout)
    (service,) = conn.EnumerateInstanceNames("Msvm_ReplicationService")
    for vm_id in REPLICAS:
        vm = pywbem.CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem",
                                                            "Name": vm_id}, namespace=VIRT)
        _revert(conn, service, {"ComputerSystem": vm}, timeout)


def _revert(conn: object, service: object, params: dict[str, object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rv, out = conn.InvokeMethod("RevertFailover", service, **params)  # type: ignore[attr-defined]
        if int(rv) == 32775:
            return
        if int(rv) == 4096:
            while int(conn.GetInstance(out["Job"])["JobState"]) not in (7, 8, 9, 10, 32768):  # type: ignore[attr-defined]
                time.sleep(0.05)
        else:  # 32774: a failover job still runs
            time.sleep(0.05)
    raise AssertionError(f"{params} could not be reverted within {timeout} s")
