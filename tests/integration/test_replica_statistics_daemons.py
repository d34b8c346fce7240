"""Both sides count, for real: an in-process primary (our QEMU driver, ``CycleRunner``, ``PeerClient`` with
host A's certificate) replicates a blank-disk VM (TCG, nothing boots) to a real replica daemon (host B).
After an initial log, a delta and two heartbeats, B's statistics of the replica VM (Measure-VMReplication
over REST, GetReplicationStatistics over CIM) show the four successful replications and the bytes A shipped.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.cycles import CycleKind, CycleOutcome
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReplicationHealth, ReplicationMode, ReplicationState
from standby.engine.capture import Capture
from standby.engine.cycle import HEARTBEAT, CycleRunner
from standby.hypervisor.qemu import QemuHypervisor
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls
from standby.store.sqlite import Database
from standby.testing import cim
from standby.testing.cluster import TwoHosts
from tests.integration.test_idle_heartbeat import workdir

__all__ = ["workdir"]  # a short scratch folder (unix socket paths), used as a fixture here

MIB = 1 << 20
SIZE = 16 * MIB
P = RelationshipIndex.PRIMARY


@pytest.fixture(scope="module")
def site(loopback_site: TwoHosts) -> TwoHosts:
    return loopback_site


def _now() -> datetime:
    return datetime.now(UTC)


def test_the_replica_daemon_counts_what_it_applied(site: TwoHosts, workdir: Path) -> None:
    vm_id, shipped = asyncio.run(_replicate(site, workdir))
    with site.b.control() as client:
        answer = client.get(f"/api/v1/vms/{vm_id}/replication/statistics")
        answer.raise_for_status()
        rest = answer.json()
    assert rest["success_count"] == 4, rest
    assert rest["size_bytes"] == sum(shipped) and rest["max_size_bytes"] == max(shipped), (rest, shipped)
    assert rest["initial_size_bytes"] == shipped[0]
    assert rest["average_size_bytes"] == sum(shipped) / 2  # two logs; the heartbeats shipped none

    conn = site.b.cim()
    rv, out = conn.InvokeMethod("GetReplicationStatistics", cim.service(conn),
                                ComputerSystem=cim.vm_path(vm_id))
    assert rv == 0
    (stats,) = out["ReplicationStatistics"]
    assert (stats["ReplicationSuccessCount"], stats["ReplicationSize"]) == (4, sum(shipped))


async def _replicate(site: TwoHosts, tmp_path: Path) -> tuple[str, list[int]]:
    """Initial replication, a heartbeat, a delta, a heartbeat; (the VM id, the wire bytes of A's logs)."""
    db = Database.open(tmp_path / "primary.db")
    hv = QemuHypervisor(tmp_path / "run", accel="tcg")
    tls = PeerTls(site.ca.cert_file, site.a.cert.cert_file, site.a.cert.key_file)
    peer = PeerClient(site.b.peer_url, tls)
    runner = CycleRunner(db, Capture(hv, tmp_path / "run"), lambda _settings: peer, _now)
    vm_id = str(uuid.uuid4()).upper()
    try:
        disk = tmp_path / "stats.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
        vm = db.vms.insert(VirtualMachine(vm_id, "stats", 64, 1, disks=(Disk("d0", str(disk), SIZE),),
                                          replication_mode=ReplicationMode.PRIMARY, created_at=_now()))
        await hv.start(vm)
        settings = ReplicationSettings(recovery_connection_point=site.b.address,
                                       recovery_port=site.b.peer_port, primary_connection_point=site.a.name,
                                       interval_seconds=30)
        await peer.create_replica(vm, settings, primary_host=site.a.name)
        waiting = ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
        db.relationships.insert(Relationship(vm_id, P, waiting, health=ReplicationHealth.OK,
                                             settings=settings))
        assert (await runner.run(vm_id, kind=CycleKind.INITIAL)).outcome is CycleOutcome.SUCCESS
        assert (await runner.run(vm_id)).detail == HEARTBEAT
        await hv.qmp(vm_id).guest_write("d0", 3 * MIB, 300_000, 0x5A)
        delta = await runner.run(vm_id)
        assert delta.outcome is CycleOutcome.SUCCESS and delta.detail == "" and delta.sequence == 2
        assert (await runner.run(vm_id)).detail == HEARTBEAT
        records = db.cycles.list(vm_id, int(P))
        assert [r.outcome for r in records] == [CycleOutcome.SUCCESS] * 4
        return vm_id, [r.wire_bytes for r in records if r.detail != HEARTBEAT]
    finally:
        if vm_id in hv.running():
            await hv.kill(vm_id)
        await hv.close()
        await peer.aclose()
        db.close()
