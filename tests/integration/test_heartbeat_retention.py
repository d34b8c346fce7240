"""Retention on an idle replica, with real qemu-img / qemu-nbd: points that age past RecoveryHistory are
merged when the primary's heartbeat arrives (no new log needed), and the head keeps every byte.

A replica side (``ReplicaUseCases`` over a real ``ReplicaApplier``) receives three logs of a source image
ten minutes apart, then, hours later by its clock, heartbeats only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.engine.apply import ReplicaApplier
from standby.engine.replica import ReplicaSpec, ReplicaUseCases
from standby.storage import chain, qemu_img
from standby.storage.logformat import DiskInfo, LogEncoder, LogHeader, LogKind
from standby.store.sqlite import Database

MiB = 1024 * 1024
SIZE = 8 * MiB
VM_ID = "7B1C2D3E-0000-4000-8000-0000000000F7"
PRIMARY = "hva.lab.example"


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _write(source: Path, offset: int, data: bytes) -> None:
    with chain.NbdServer(source, writable=True) as server, server.connect() as client:
        client.write(offset, data)
        client.flush()


def _log(sequence: int, parent: int, at: datetime, frames: list[tuple[int, bytes]]) -> list[bytes]:
    kind = LogKind.INITIAL if parent == 0 else LogKind.DELTA
    encoder = LogEncoder(LogHeader(VM_ID, 0, sequence, parent, kind, at.isoformat(), (DiskInfo("d0", SIZE),)))
    return [encoder.header_bytes(), *(encoder.frame(0, offset, data) for offset, data in frames),
            encoder.end()]


def _same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0


@pytest.fixture()
def replica(tmp_path: Path) -> tuple[Database, ReplicaUseCases, Clock]:
    clock = Clock()
    db = Database.open(tmp_path / "b.db")
    location = tmp_path / "replicas"
    location.mkdir()
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry(PRIMARY, "lab", str(location)))
    use_cases = ReplicaUseCases(db, clock, ReplicaApplier(db, clock))
    use_cases.create_replica(PRIMARY, ReplicaSpec(VM_ID, "idle", 256, 1, (("d0", SIZE),),
                                                  settings=ReplicationSettings(recovery_history=1)))
    return db, use_cases, clock


def test_points_past_the_recovery_history_are_merged_on_a_heartbeat(
        replica: tuple[Database, ReplicaUseCases, Clock], tmp_path: Path) -> None:
    db, use_cases, clock = replica
    source = tmp_path / "a-d0.qcow2"
    qemu_img.create(source, SIZE)

    async def ship_three() -> None:
        for sequence, offset in ((1, 0), (2, 3 * MiB), (3, 6 * MiB)):
            data = os.urandom(256 * 1024)
            _write(source, offset, data)
            log = _log(sequence, sequence - 1, clock.now, [(offset, data)])
            await use_cases.put_log(PRIMARY, VM_ID, sequence, _stream(log))
            await use_cases.applier.settled(VM_ID)
            clock.now += timedelta(minutes=10)

    asyncio.run(ship_three())
    # Within the last hour every point stays (RecoveryHistory 1).
    assert [p.sequence for p in db.recovery_points.list(vm_id=VM_ID)] == [1, 2, 3]

    async def heartbeat() -> None:
        assert await use_cases.heartbeat(PRIMARY, VM_ID, 3) == 3
        await use_cases.applier.settled(VM_ID)

    # Hours later the VM is still idle: only heartbeats arrive, and they age the points out.
    clock.now += timedelta(hours=3)
    asyncio.run(heartbeat())
    points = db.recovery_points.list(vm_id=VM_ID)
    assert [p.sequence for p in points] == [3]
    head = Path(dict(points[0].images)["d0"])
    assert _same(source, head)  # the merges kept every byte of the older logs in the head
    assert chain.backing_file(head) is None  # the chain is down to the one image
    rel = db.relationships.get(VM_ID, 0)
    assert rel.intent is None and rel.last_replication_time == clock.now
