"""Groups and redundancy sets through a real daemon: the ``standby group …`` / ``standby redundancy …`` CLI
and the REST routes behind them (create, add, remove, show, failover whole / all or nothing, revert, test,
redundancy list and failover with its code), and clear refusals.

The store is seeded as a replica host: replica VMs of an unreachable primary with diskless recovery points,
one group's collection recovery point, and a VM whose point image is missing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
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
from tests.integration.conftest import run_cli

PRIMARY = "hosta.invalid"
WEB, DB, BROKEN, SPARE = ("A1000000-0000-4000-8000-000000000001", "A2000000-0000-4000-8000-000000000002",
                          "A3000000-0000-4000-8000-000000000003", "A4000000-0000-4000-8000-000000000004")
GROUP = "F1000000-0000-4000-8000-000000000001"


def _seed(db: Database) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for vm_id, name in ((WEB, "web"), (DB, "db"), (BROKEN, "broken"), (SPARE, "spare")):
        broken = vm_id == BROKEN
        disks = (Disk("d0", "/nonexistent/broken.qcow2", 1 << 20),) if broken else ()
        db.vms.insert(VirtualMachine(vm_id, name, 128, 1, disks=disks, enabled_state=EnabledState.DISABLED,
                                     replication_mode=ReplicationMode.REPLICA, created_at=now))
        settings = ReplicationSettings(primary_connection_point=PRIMARY)
        db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING,
                                             ReplicationHealth.OK, settings, last_replication_time=now))
        images = (("d0", "/nonexistent/broken-rp.qcow2"),) if broken else ()
        db.recovery_points.insert(RecoveryPoint(f"RP-{name}", vm_id, 1, now - timedelta(minutes=1),
                                                VirtualSystemType.REPLICA_STANDARD, images))
    db.collections.insert(Collection(GROUP, "front", (WEB, DB), ReplicationMode.REPLICA,
                                     CollectionReplicationState.REPLICATING))
    db.collection_points.insert(CollectionRecoveryPoint("CUT-1", GROUP, now - timedelta(minutes=1),
                                                        ConsistencyLevel.GROUP_CRASH_CONSISTENT,
                                                        ((WEB, "RP-web"), (DB, "RP-db")), 1.8))


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    folder = Path(tempfile.mkdtemp(prefix="sbgrs-", dir="/tmp"))
    process = DaemonProcess.prepare(folder / "data", users={"admin": "pw"})
    db = Database.open(process.data_dir / "standby.db")
    try:
        _seed(db)
    finally:
        db.close()
    process.launch()
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


cli = run_cli


def ok(daemon: DaemonProcess, *args: str) -> object:
    done = cli(daemon, *args, "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def replication_state(daemon: DaemonProcess, vm_id: str) -> int:
    with daemon.control() as client:
        return int(client.get(f"/api/v1/vms/{vm_id}/replication").json()["state"])


def test_group_management_and_show(daemon: DaemonProcess) -> None:
    made = ok(daemon, "group", "create", "back")
    assert isinstance(made, dict) and made["name"] == "back" and made["members"] == []
    added = ok(daemon, "group", "add", "back", "spare")
    assert isinstance(added, dict) and [m["name"] for m in added["members"]] == ["spare"]
    removed = ok(daemon, "group", "remove", "back", "spare")
    assert isinstance(removed, dict) and removed["members"] == []
    done = cli(daemon, "group", "remove", "back", "spare")
    assert done.returncode == 1 and "not a member" in done.stderr
    shown = ok(daemon, "group", "show", "front")
    assert isinstance(shown, dict)
    assert [p["id"] for p in shown["points"]] == ["CUT-1"] and shown["points"][0]["pause_ms"] == 1.8
    assert shown["statistics"]["health"] == 1
    listed = ok(daemon, "group", "list")
    assert isinstance(listed, list) and {g["name"] for g in listed} == {"front", "back"}
    text = cli(daemon, "group", "show", "front")
    assert text.returncode == 0 and "group crash consistent" in text.stdout
    assert cli(daemon, "group", "show", "nope").returncode == 1


def test_group_failover_revert_and_all_or_nothing(daemon: DaemonProcess) -> None:
    job = ok(daemon, "group", "failover", "front", "--point", "CUT-1")
    assert isinstance(job, dict) and job["state_name"] == "Completed"
    assert replication_state(daemon, WEB) == 5 and replication_state(daemon, DB) == 5
    ok(daemon, "group", "revert", "front")
    assert replication_state(daemon, WEB) == 3 and replication_state(daemon, DB) == 3

    ok(daemon, "group", "create", "mixed")
    ok(daemon, "group", "add", "mixed", "web")
    ok(daemon, "group", "add", "mixed", "broken")
    with daemon.control() as client:  # the replica side assembles such a point from tagged logs
        response = client.get("/api/v1/groups/mixed")
        group_id = response.json()["id"]
    db = Database.open(daemon.data_dir / "standby.db")
    try:
        db.collections.update(db.collections.get(group_id).__class__(
            group_id, "mixed", (WEB, BROKEN), ReplicationMode.REPLICA, CollectionReplicationState.REPLICATING,
            version=db.collections.get(group_id).version))
        db.collection_points.insert(CollectionRecoveryPoint("CUT-M", group_id, datetime.now(UTC),
                                                            ConsistencyLevel.GROUP_CRASH_CONSISTENT,
                                                            ((WEB, "RP-web"), (BROKEN, "RP-broken")), 2.0))
    finally:
        db.close()
    failed = cli(daemon, "group", "failover", "mixed")
    assert failed.returncode == 1
    assert "broken" in failed.stderr and "reverted" in failed.stderr
    assert replication_state(daemon, WEB) == 3 and replication_state(daemon, BROKEN) == 3


def test_redundancy_list_and_failover(daemon: DaemonProcess) -> None:
    sets = ok(daemon, "redundancy", "list")
    assert isinstance(sets, list)
    ids = {s["id"] for s in sets}
    assert f"VM-{SPARE}" in ids and f"HOSTS-{PRIMARY}" in ids
    peer = f"{SPARE}@{PRIMARY}"
    refused = cli(daemon, "redundancy", "failover", f"VM-{SPARE}", "--from", SPARE, "--to", peer)
    assert refused.returncode == 1 and "4 (parameter error)" in refused.stdout + refused.stderr
    answer = ok(daemon, "redundancy", "failover", f"VM-{SPARE}", "--from", peer, "--to", SPARE)
    assert answer == {"code": 0, "name": "completed"}
    assert replication_state(daemon, SPARE) == 5
    text = cli(daemon, "redundancy", "list")
    assert text.returncode == 0 and f"*{SPARE}" in text.stdout.replace("\n", "")


def test_rest_refusals_are_clear(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        response = client.post(f"/api/v1/groups/{GROUP}/frobnicate")
        assert response.status_code == 400 and "frobnicate" in response.json()["message"]
        response = client.post(f"/api/v1/groups/{GROUP}/failover", json={"point": "CUT-9"})
        assert response.status_code == 400 and response.json()["code"] == 32773
        response = client.post(f"/api/v1/groups/{GROUP}/replication",
                               json={"element_name": "x", "replica_host": "b.example", "history": 17})
        assert response.status_code == 409  # a replica group: the table's 32775
        response = client.post("/api/v1/redundancy-sets/NOPE/failover", json={"from": WEB, "to": DB})
        assert response.json() == {"code": 4, "name": "parameter error"}
