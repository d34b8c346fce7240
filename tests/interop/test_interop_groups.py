"""Issue 7 through pywbem over CIM-XML against a real daemon: Msvm_RedundancySet.Failover on a VM set and on a
host set with every code 0-4 provoked, Msvm_FailoverIndication records, and collection failover of a replica
collection — whole, reverted, and all or nothing when one member cannot fail over.

The daemon's store is seeded the way replication leaves a replica host ("testhost"): replica VMs of two
primary hosts that cannot be reached (``*.invalid``), with diskless recovery points (failover of such a VM
needs no files), collection recovery points made of them, and one VM whose point image is missing (its
failover fails: the collection and host-set failovers around it must roll back).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pywbem
from pywbem import CIMInstanceName

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
CLUSTER = "root/HyperVCluster/v2"
HOST = "testhost"
HOST_A, HOST_C, HOST_D, HOST_E = "hosta.invalid", "hostc.invalid", "hostd.invalid", "hoste.invalid"
VIRT = "root/virtualization/v2"
APP = "D6000000-0000-4000-8000-000000000006"
WEB, DB, MAIL = ("A1000000-0000-4000-8000-000000000001", "A2000000-0000-4000-8000-000000000002",
                 "C3000000-0000-4000-8000-000000000003")
FILES, CACHE = "E4000000-0000-4000-8000-000000000004", "E5000000-0000-4000-8000-000000000005"
GOOD_GROUP, BAD_GROUP = "G1000000-0000-4000-8000-000000000001", "G2000000-0000-4000-8000-000000000002"
# A collection failover the daemon was stopped in: one member failed over, the other not yet.
STUCK_GROUP, HOST_F = "G3000000-0000-4000-8000-000000000003", "hostf.invalid"
MOVED, WAITING = "F6000000-0000-4000-8000-000000000006", "F7000000-0000-4000-8000-000000000007"
TERMINAL = {7, 8, 9, 10, 32768}


def _seed(db: Database) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def replica(vm_id: str, name: str, primary: str, *,
                state: ReplicationState = ReplicationState.REPLICATING,
                broken: bool = False) -> None:
        disks = (Disk("d0", f"/nonexistent/{name}.qcow2", 1 << 20),) if broken else ()
        db.vms.insert(VirtualMachine(vm_id, name, 128, 1, disks=disks, enabled_state=EnabledState.DISABLED,
                                     replication_mode=ReplicationMode.REPLICA, created_at=now))
        db.relationships.insert(Relationship(
            vm_id, RelationshipIndex.PRIMARY, state, ReplicationHealth.OK,
            ReplicationSettings(primary_connection_point=primary), last_replication_time=now))
        images = (("d0", f"/nonexistent/{name}-rp-1.qcow2"),) if broken else ()
        db.recovery_points.insert(RecoveryPoint(f"RP-{vm_id}", vm_id, 1, now - timedelta(minutes=1),
                                                VirtualSystemType.REPLICA_STANDARD, images,
                                                collection_point_id=None))

    replica(WEB, "web", HOST_A)
    replica(DB, "db", HOST_A)
    replica(MAIL, "mail", HOST_C, state=ReplicationState.READY_FOR_REPLICATION)
    replica(FILES, "files", HOST_E, broken=True)
    replica(CACHE, "cache", HOST_E)
    replica(MOVED, "moved", HOST_F, state=ReplicationState.RECOVERED)
    replica(WAITING, "waiting", HOST_F)
    db.collections.insert(Collection(STUCK_GROUP, "stuck", (MOVED, WAITING), ReplicationMode.REPLICA,
                                     CollectionReplicationState.FAILOVER_INITIATED))
    db.vms.insert(VirtualMachine(APP, "app", 128, 1, enabled_state=EnabledState.DISABLED,
                                 replication_mode=ReplicationMode.PRIMARY, created_at=now))
    db.relationships.insert(Relationship(
        APP, RelationshipIndex.PRIMARY, ReplicationState.READY_FOR_REPLICATION, ReplicationHealth.WARNING,
        ReplicationSettings(recovery_connection_point=HOST_D, recovery_port=8443)))
    for group, name, members in ((GOOD_GROUP, "front", (WEB, DB)), (BAD_GROUP, "back", (CACHE, FILES))):
        db.collections.insert(Collection(group, name, members, ReplicationMode.REPLICA,
                                         CollectionReplicationState.REPLICATING))
        db.collection_points.insert(CollectionRecoveryPoint(
            f"CUT-{group}", group, now - timedelta(minutes=1), ConsistencyLevel.GROUP_CRASH_CONSISTENT,
            tuple((vm, f"RP-{vm}") for vm in members), 2.5))


@pytest.fixture(scope="module")
def group_url() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="sbgrp-", dir="/tmp"))
    process = DaemonProcess.prepare(folder / "data", users={USER: PASSWORD})
    db = Database.open(process.data_dir / "standby.db")
    try:
        _seed(db)
    finally:
        db.close()
    process.launch()
    try:
        yield f"http://127.0.0.1:{process.http_port}"
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


def connect(url: str) -> pywbem.WBEMConnection:
    return pywbem.WBEMConnection(url, (USER, PASSWORD), default_namespace=CLUSTER, timeout=120)


def system(name: str) -> CIMInstanceName:
    return CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": name},
                           namespace=CLUSTER)


def redundancy_set(conn: pywbem.WBEMConnection, set_id: str) -> CIMInstanceName:
    (path,) = [p for p in conn.EnumerateInstanceNames("Msvm_RedundancySet")
               if p.keybindings["InstanceID"] == f"Microsoft:{set_id}"]
    return path


def failover(conn: pywbem.WBEMConnection, set_id: str, source: str | None, target: str | None) -> int:
    rv, _ = conn.InvokeMethod("Failover", redundancy_set(conn, set_id),
                              FailoverFrom=system(source) if source else None,
                              FailoverTo=system(target) if target else None)
    return int(rv)


def replication_state(conn: pywbem.WBEMConnection, vm_id: str) -> int:
    return int(conn.GetInstance(system(vm_id))["ReplicationState"])


def wait(conn: pywbem.WBEMConnection, job: CIMInstanceName, timeout: float = 60.0) -> pywbem.CIMInstance:
    deadline = time.monotonic() + timeout
    while (inst := conn.GetInstance(job))["JobState"] not in TERMINAL:
        assert time.monotonic() < deadline, f"job still in state {inst['JobState']}"
        time.sleep(0.05)
    return inst


def collection_call(conn: pywbem.WBEMConnection, method: str, group: str,
                    **params: object) -> tuple[int, dict[str, Any]]:
    (service,) = conn.EnumerateInstanceNames("Msvm_CollectionReplicationService")
    collection = CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": group}, namespace=CLUSTER)
    rv, out = conn.InvokeMethod(method, service, Collection=collection, **params)
    return int(rv), dict(out)


def revert(conn: pywbem.WBEMConnection, vm_id: str) -> None:
    (service,) = conn.EnumerateInstanceNames("Msvm_ReplicationService", namespace="root/virtualization/v2")
    vm = CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": vm_id},
                         namespace="root/virtualization/v2")
    rv, out = conn.InvokeMethod("RevertFailover", service, ComputerSystem=vm)
    assert int(rv) == 4096
    assert wait(conn, out["Job"])["JobState"] == 7


def test_a_collection_failover_interrupted_by_a_stop_is_undone_at_start(group_url: str) -> None:
    conn = connect(group_url)
    stuck = CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": STUCK_GROUP}, namespace=CLUSTER)
    assert conn.GetInstance(stuck)["ReplicationState"] == 3  # Replicating again, not 4
    assert replication_state(conn, MOVED) == 3 and replication_state(conn, WAITING) == 3


def test_sets_members_and_peer_systems(group_url: str) -> None:
    conn = connect(group_url)
    sets = {p.keybindings["InstanceID"]: conn.GetInstance(p)
            for p in conn.EnumerateInstanceNames("Msvm_RedundancySet")}
    web = sets[f"Microsoft:VM-{WEB}"]
    assert list(web["TypeOfSet"]) == [4] and web["RedundancyStatus"] == 2  # Sparing, Fully Redundant
    hosts = sets[f"Microsoft:HOSTS-{HOST_A}"]
    assert list(hosts["TypeOfSet"]) == [2]  # N+1
    members = {p["Name"] for p in conn.Associators(redundancy_set(conn, f"VM-{WEB}"),
                                                    AssocClass="Msvm_MemberOfRedundancySet")}
    assert members == {WEB, f"{WEB}@{HOST_A}"}
    peer = conn.GetInstance(system(f"{WEB}@{HOST_A}"))
    assert peer["ElementName"] == "web"
    host_members = {p["Name"] for p in conn.Associators(redundancy_set(conn, f"HOSTS-{HOST_A}"),
                                                         AssocClass="Msvm_MemberOfRedundancySet")}
    assert host_members == {HOST, HOST_A}


# Indications have no keys (CIM_Indication): pywbem warns about the keyless paths of the enumeration.
@pytest.mark.filterwarnings("ignore::pywbem.MissingKeybindingsWarning")
def test_vm_set_failover_codes(group_url: str) -> None:
    conn = connect(group_url)
    web_set, peer = f"VM-{WEB}", f"{WEB}@{HOST_A}"
    assert failover(conn, web_set, None, WEB) == 4  # NULL reference
    assert failover(conn, web_set, DB, WEB) == 4  # From is not a member
    assert failover(conn, web_set, WEB, peer) == 4  # From is not the active member
    assert failover(conn, web_set, peer, DB) == 1  # To is not a member
    assert failover(conn, f"VM-{MAIL}", f"{MAIL}@{HOST_C}", MAIL) == 2  # mail has not replicated (state 1)
    assert failover(conn, web_set, peer, WEB) == 0
    assert replication_state(conn, WEB) == 5  # failed over, the primary host unreachable: unplanned
    web = conn.GetInstance(redundancy_set(conn, web_set))
    assert web["RedundancyStatus"] == 4  # Redundancy Lost until reversed
    indications = [i for i in conn.EnumerateInstances("Msvm_FailoverIndication") if WEB in i["HostedElement"]]
    assert len(indications) == 1
    assert indications[0]["FailoverType"] == 2 and HOST_A in indications[0]["PreviousHostingSystem"]
    assert HOST in indications[0]["HostingSystem"]
    assert failover(conn, web_set, peer, WEB) == 4  # the peer is no longer the active member
    revert(conn, WEB)


def test_busy_while_a_job_runs_on_the_member(group_url: str) -> None:
    conn = connect(group_url)
    (service,) = conn.EnumerateInstanceNames("Msvm_ReplicationService", namespace=VIRT)
    app = CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": APP},
                          namespace=VIRT)
    later = pywbem.CIMDateTime(datetime.now(UTC) + timedelta(hours=1))
    # An initial replication scheduled an hour ahead: its job waits on app all that time.
    rv, out = conn.InvokeMethod("StartReplication", service, ComputerSystem=app,
                                InitialReplicationType=pywbem.Uint16(1),
                                StartTime=later)
    assert int(rv) == 4096
    try:
        assert failover(conn, f"VM-{APP}", APP, f"{APP}@{HOST_D}") == 3
        assert failover(conn, f"HOSTS-{HOST_D}", HOST, HOST_D) == 3
    finally:
        conn.InvokeMethod("RequestStateChange", out["Job"], RequestedState=pywbem.Uint16(4))
        wait(conn, out["Job"])
    # idle now: a planned failover, which app cannot make (it has not replicated: the prepare is refused)
    assert failover(conn, f"VM-{APP}", APP, f"{APP}@{HOST_D}") == 2


def test_host_set_failover_codes_and_all_or_nothing(group_url: str) -> None:
    conn = connect(group_url)
    assert failover(conn, f"HOSTS-{HOST_A}", None, HOST) == 4
    assert failover(conn, f"HOSTS-{HOST_A}", WEB, HOST) == 4  # a VM is not a member of a host set
    assert failover(conn, f"HOSTS-{HOST_A}", HOST_A, WEB) == 1  # To is not a member
    assert failover(conn, f"HOSTS-{HOST_A}", HOST, HOST_A) == 4  # this host runs no VM replicated to hosta
    assert failover(conn, f"HOSTS-{HOST_C}", HOST_C, HOST) == 2  # mail cannot fail over
    # hoste runs files (its point image is gone) and cache: nothing may stay failed over.
    assert failover(conn, f"HOSTS-{HOST_E}", HOST_E, HOST) == 2
    assert replication_state(conn, FILES) == 3 and replication_state(conn, CACHE) == 3
    assert failover(conn, f"HOSTS-{HOST_A}", HOST_A, HOST) == 0
    assert replication_state(conn, WEB) == 5 and replication_state(conn, DB) == 5
    assert failover(conn, f"HOSTS-{HOST_A}", HOST_A, HOST) == 4  # hosta runs nothing replicated here now
    revert(conn, WEB)
    revert(conn, DB)


def test_collection_failover_whole_and_all_or_nothing(group_url: str) -> None:
    conn = connect(group_url)
    points = [p for p in conn.EnumerateInstanceNames("Msvm_CollectionRecoveryPoint")
              if p.keybindings["CollectionID"] == GOOD_GROUP]
    assert len(points) == 1
    point = conn.GetInstance(points[0])
    assert list(point["VirtualMachineIds"]) == [WEB, DB] and point["ConsistencyLevel"] == 3
    rv, out = collection_call(conn, "InitiateFailover", GOOD_GROUP, CollectionRecoveryPoint=points[0])
    assert rv == 4096 and wait(conn, out["Job"])["JobState"] == 7
    assert replication_state(conn, WEB) == 5 and replication_state(conn, DB) == 5
    group = CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": GOOD_GROUP}, namespace=CLUSTER)
    assert conn.GetInstance(group)["ReplicationState"] == 5
    rv, out = collection_call(conn, "RevertFailover", GOOD_GROUP)
    assert rv == 4096 and wait(conn, out["Job"])["JobState"] == 7
    assert replication_state(conn, WEB) == 3 and conn.GetInstance(group)["ReplicationState"] == 3

    rv, out = collection_call(conn, "InitiateFailover", BAD_GROUP, CollectionRecoveryPoint=None)
    assert rv == 4096
    job = wait(conn, out["Job"])
    assert job["JobState"] == 10 and job["ErrorCode"] != 0
    assert "files" in job["ErrorDescription"] and "reverted" in job["ErrorDescription"]
    assert replication_state(conn, CACHE) == 3 and replication_state(conn, FILES) == 3
    bad = CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": BAD_GROUP}, namespace=CLUSTER)
    assert conn.GetInstance(bad)["ReplicationState"] == 3


def test_collection_statistics(group_url: str) -> None:
    conn = connect(group_url)
    rv, out = collection_call(conn, "GetReplicationStatistics", GOOD_GROUP)
    assert rv == 0
    stats = out["ReplicationStatistics"]
    assert stats.classname == "Msvm_CollectionReplicationStatistics"
    assert int(stats["ReplicationWALSuccessCount"]) == 0 and int(stats["ReplicationHealth"]) == 1
    assert collection_call(conn, "ResetReplicationStatistics", GOOD_GROUP)[0] == 0
