"""A real ``standby serve`` for the interop tests, with a store seeded the way replication leaves it.

The data directory's SQLite store gets, before the daemon starts: a primary VM replicating (mode 1, state 3),
a replica VM (mode 2, state 3, replicated once, off) with one recovery point, a VM group holding the replica
and a redundancy set — the objects the failover methods act on. Standard clients then talk to the daemon
over loopback HTTP (and HTTPS in one test).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standby.daemon.testing import DaemonProcess
from standby.domain.entities import Collection, RecoveryPoint, RedundancySet, Relationship, VirtualMachine
from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    RedundancyStatus,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    TypeOfSet,
    VirtualSystemType,
)
from standby.store.sqlite import Database

USER, PASSWORD = "admin", "s3cret-pw"
VIRT = "root/virtualization/v2"
CLUSTER = "root/HyperVCluster/v2"
PRIMARY_VM = "11111111-1111-4111-8111-111111111111"
REPLICA_VM = "22222222-2222-4222-8222-222222222222"
POINT_ID = "33333333-3333-4333-8333-333333333333"
COLLECTION_ID = "44444444-4444-4444-8444-444444444444"
REDUNDANCY_SET_ID = "55555555-5555-4555-8555-555555555555"


def seed(db: Database) -> None:
    """Store the objects the tests drive (see the module docstring)."""
    now = datetime.now(UTC).replace(microsecond=0)
    db.vms.insert(
        VirtualMachine(
            PRIMARY_VM,
            "web",
            256,
            1,
            enabled_state=EnabledState.DISABLED,
            replication_mode=ReplicationMode.PRIMARY,
            created_at=now,
        )
    )
    db.vms.insert(
        VirtualMachine(
            REPLICA_VM,
            "web-replica",
            256,
            1,
            enabled_state=EnabledState.DISABLED,
            replication_mode=ReplicationMode.REPLICA,
            created_at=now,
        )
    )
    for vm_id in (PRIMARY_VM, REPLICA_VM):
        db.relationships.insert(
            Relationship(
                vm_id,
                RelationshipIndex.PRIMARY,
                ReplicationState.REPLICATING,
                last_replication_time=now - timedelta(minutes=5),
            )
        )
    db.recovery_points.insert(
        RecoveryPoint(POINT_ID, REPLICA_VM, 1, now - timedelta(minutes=5), VirtualSystemType.REPLICA_STANDARD)
    )
    db.collections.insert(
        Collection(
            COLLECTION_ID,
            "group-1",
            (REPLICA_VM,),
            ReplicationMode.REPLICA,
            CollectionReplicationState.REPLICATING,
        )
    )
    db.redundancy_sets.insert(
        RedundancySet(
            REDUNDANCY_SET_ID,
            "web-pair",
            TypeOfSet.SPARING,
            RedundancyStatus.FULLY_REDUNDANT,
            (PRIMARY_VM, REPLICA_VM),
            PRIMARY_VM,
        )
    )


@pytest.fixture(scope="session")
def daemon() -> Iterator[DaemonProcess]:
    """One seeded daemon for the whole interop session."""
    folder = Path(tempfile.mkdtemp(prefix="sbiop-", dir="/tmp"))
    process = DaemonProcess.prepare(folder / "data", users={USER: PASSWORD})
    db = Database.open(process.data_dir / "standby.db")
    try:
        seed(db)
    finally:
        db.close()
    process.launch()
    try:
        if "CIM-XML mounted" not in process.log():
            pytest.fail(f"the daemon did not mount /cimom:\n{process.log()[-3000:]}")
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def url(daemon: DaemonProcess) -> str:
    """The loopback HTTP CIM-XML listener."""
    return f"http://127.0.0.1:{daemon.http_port}"


@pytest.fixture(autouse=True)
def _replica_left_replicating(request: pytest.FixtureRequest) -> Iterator[None]:
    """Failover works now (issue 5): a test that failed the seeded replica over leaves it reverted."""
    yield
    if "url" in request.fixturenames:
        revert_replica(request.getfixturevalue("url"))


def revert_replica(url: str, timeout: float = 60.0) -> None:
    """RevertFailover on the seeded replica until it answers 32775 (nothing to revert), waiting out jobs."""
    import time

    import pywbem

    conn = pywbem.WBEMConnection(url, (USER, PASSWORD), default_namespace=VIRT, timeout=60)
    service = conn.EnumerateInstanceNames("Msvm_ReplicationService")[0]
    vm = pywbem.CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem",
                                                        "Name": REPLICA_VM}, namespace=VIRT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rv, out = conn.InvokeMethod("RevertFailover", service, ComputerSystem=vm)
        if int(rv) == 32775:
            return
        if int(rv) == 4096:
            while int(conn.GetInstance(out["Job"])["JobState"]) not in (7, 8, 9, 10, 32768):
                time.sleep(0.05)
        else:  # 32774: a failover job still runs
            time.sleep(0.05)
    raise AssertionError(f"the seeded replica could not be reverted within {timeout} s")
