"""Idle cycles send heartbeats, for real: an in-process primary (our QEMU driver, ``Capture``,
``CycleRunner``, ``PeerClient`` with host A's certificate) replicating a blank-disk VM (TCG, nothing boots)
to a real replica daemon (host B of a loopback site).

No write → a heartbeat: no cut (no fleecing node, no new bitmap), no new recovery point on B, and
LastReplicationTime moves on both sides. A write through the device → the next cycle ships it and B's head
equals what the VM wrote, byte for byte. A heartbeat naming a sequence that is not B's head is answered as
an out-of-sequence log (409 with the head); a suspended replica refuses it as it refuses logs.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.cycles import CycleKind, CycleOutcome
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import Unavailable
from standby.domain.replica import OutOfSequence
from standby.engine.capture import Capture
from standby.engine.cycle import HEARTBEAT, CycleRunner
from standby.hypervisor.qemu import QemuHypervisor
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls
from standby.store.sqlite import Database
from standby.testing.cluster import TwoHosts

MIB = 1 << 20
SIZE = 16 * MIB
P = RelationshipIndex.PRIMARY


@pytest.fixture(scope="module")
def site(loopback_site: TwoHosts) -> TwoHosts:
    return loopback_site


def _now() -> datetime:
    return datetime.now(UTC)


def _replica_relationship(site: TwoHosts, vm_id: str) -> dict[str, object]:
    with site.b.control() as client:
        answer = client.get(f"/api/v1/vms/{vm_id}/replication")
        answer.raise_for_status()
        data: dict[str, object] = answer.json()
        return data


def _head_image(site: TwoHosts, vm_id: str, sequence: int) -> Path:
    [image] = site.b.replica_location.glob(f"*_{vm_id}/disks/d0/rp-{sequence:010d}.qcow2")
    return image


def _raw(image: Path, out: Path) -> bytes:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short: QMP and NBD unix socket paths must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sbh-", dir="/tmp") as tmp:
        yield Path(tmp)


def test_idle_cycles_heartbeat_and_a_write_ships(site: TwoHosts, workdir: Path) -> None:
    asyncio.run(_scenario(site, workdir))


async def _scenario(site: TwoHosts, tmp_path: Path) -> None:
    db = Database.open(tmp_path / "primary.db")
    hv = QemuHypervisor(tmp_path / "run", accel="tcg")
    capture = Capture(hv, tmp_path / "run")
    tls = PeerTls(site.ca.cert_file, site.a.cert.cert_file, site.a.cert.key_file)
    peer = PeerClient(site.b.peer_url, tls)
    runner = CycleRunner(db, capture, lambda _settings: peer, _now)
    vm_id = str(uuid.uuid4()).upper()
    try:
        disk = tmp_path / "idle.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
        vm = db.vms.insert(VirtualMachine(vm_id, "idle", 64, 1, disks=(Disk("d0", str(disk), SIZE),),
                                          replication_mode=ReplicationMode.PRIMARY, created_at=_now()))
        await hv.start(vm)
        settings = ReplicationSettings(recovery_connection_point=site.b.address,
                                       recovery_port=site.b.peer_port, primary_connection_point=site.a.name,
                                       interval_seconds=30)
        await peer.create_replica(vm, settings, primary_host=site.a.name)
        waiting = ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
        db.relationships.insert(Relationship(vm_id, P, waiting, health=ReplicationHealth.OK,
                                             settings=settings))
        initial = await runner.run(vm_id, kind=CycleKind.INITIAL)
        assert initial.outcome is CycleOutcome.SUCCESS and initial.sequence == 1

        # No write: a heartbeat. Nothing is cut, B keeps its one point, both sides' times move on.
        before_a = db.relationships.get(vm_id, int(P)).last_replication_time
        before_b = _replica_relationship(site, vm_id)["last_replication_time"]
        idle = await runner.run(vm_id)
        assert (idle.outcome, idle.sequence, idle.detail, idle.dirty_bytes) == (
            CycleOutcome.SUCCESS, 1, HEARTBEAT, 0), idle
        assert [b["name"] for b in await hv.qmp(vm_id).bitmaps("fmt-d0")] == ["rep-1"]
        nodes = await hv.qmp(vm_id).execute("query-named-block-nodes", {"flat": True})
        assert not [n for n in nodes if str(n.get("node-name", "")).startswith("fleece-")]
        status = await peer.replica_status(vm_id)
        assert [p.sequence for p in status.points] == [1] and status.head_sequence == 1
        rel = db.relationships.get(vm_id, int(P))
        assert rel.sequence == 1 and rel.last_replication_time is not None and before_a is not None
        assert rel.last_replication_time > before_a
        after_b = _replica_relationship(site, vm_id)["last_replication_time"]
        assert isinstance(after_b, str) and isinstance(before_b, str)
        assert datetime.fromisoformat(after_b) > datetime.fromisoformat(before_b)
        [record] = [r for r in db.cycles.list(vm_id, int(P)) if r.kind is CycleKind.DELTA]
        assert (record.outcome, record.detail, record.wire_bytes) == (CycleOutcome.SUCCESS, HEARTBEAT, 0)

        # A write through the device: the next cycle ships it; B's head is what the VM wrote.
        await hv.qmp(vm_id).guest_write("d0", 3 * MIB + 4096, 200_000, 0x5A)
        shipped = await runner.run(vm_id)
        assert shipped.outcome is CycleOutcome.SUCCESS and shipped.sequence == 2 and shipped.detail == ""
        assert shipped.dirty_bytes > 0
        expected = bytearray(SIZE)
        expected[3 * MIB + 4096:3 * MIB + 4096 + 200_000] = b"\x5a" * 200_000
        # The heartbeat first: it waits for B's lock, which the merge of point 1 into 2 holds meanwhile.
        again = await runner.run(vm_id)
        assert again.detail == HEARTBEAT and again.sequence == 2
        assert _raw(_head_image(site, vm_id, 2), tmp_path / "head.raw") == bytes(expected)
        # RecoveryHistory 0: point 1 was merged into 2; the heartbeat added nothing
        assert [p.sequence for p in (await peer.replica_status(vm_id)).points] == [2]

        # The replica's side of the protocol: a sequence that is not the head is out of sequence (409).
        with pytest.raises(OutOfSequence) as info:
            await peer.heartbeat(vm_id, 1)
        assert info.value.head_sequence == 2
        assert await peer.heartbeat(vm_id, 2) == 2
        await peer.set_state(vm_id, int(ReplicationState.SUSPENDED))
        with pytest.raises(Unavailable):
            await peer.heartbeat(vm_id, 2)
        await peer.set_state(vm_id, int(ReplicationState.REPLICATING))
    finally:
        if vm_id in hv.running():
            await hv.kill(vm_id)
        await hv.close()
        await peer.aclose()
        db.close()
