"""Replication logs made in the bench (what a primary would ship), and a replica built in this process.

``LocalReplica`` is the replica side's own use cases (``ReplicaUseCases`` + ``ReplicaApplier``) over a
SQLite file in a scratch folder, used by rows that measure the replica alone (P1, P7): logs go straight in
as byte streams, without a primary or a network. ``put`` returns once the retention after the answer has
finished too (unless ``settle=False``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path

from bench.common import MiB
from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.engine.apply import ApplyResult, ReplicaApplier
from standby.engine.replica import ReplicaSpec, ReplicaUseCases
from standby.storage.logformat import MAX_FRAME, DiskInfo, LogEncoder, LogHeader, LogKind
from standby.store.sqlite import Database

CALLER = "primary.bench"


def mixed(length: int, seed: int = 0) -> bytes:
    """Half random, half text (≈ 2:1 with zstd-1): the data rows write."""
    text = (f"standby bench data {seed} " * (MiB // 16)).encode()[:MiB]
    out = bytearray()
    while len(out) < length:
        out += os.urandom(MiB) if (len(out) // MiB) % 2 == 0 else text
    return bytes(out[:length])


def encode(vm_id: str, sequence: int, parent: int, size: int, writes: Iterable[tuple[int, bytes]], *,
           kind: LogKind = LogKind.DELTA, at: datetime | None = None, compression: bool = True) -> bytes:
    """A whole log: ``writes`` (offset, data) on disk d0, split into frames."""
    when = (at or datetime.now(UTC)).isoformat()
    header = LogHeader(vm_id, 0, sequence, parent, kind, when, (DiskInfo("d0", size),),
                       compression=compression)
    encoder = LogEncoder(header)
    parts = [encoder.header_bytes()]
    for offset, data in writes:
        for start in range(0, len(data), MAX_FRAME):
            parts.append(encoder.frame(0, offset + start, data[start:start + MAX_FRAME]))
    parts.append(encoder.end())
    return b"".join(parts)


async def stream(data: bytes, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """A log as the peer listener hands it to the applier."""
    for offset in range(0, len(data), chunk):
        yield data[offset:offset + chunk]


class LocalReplica:
    """The replica side's use cases over ``folder/replica.db``, replica files under ``folder/replicas``."""

    def __init__(self, folder: Path, clock: object = None) -> None:
        self.folder = folder
        (folder / "replicas").mkdir(parents=True, exist_ok=True)
        self.db = Database.open(folder / "replica.db")
        self.db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
        self.db.auth_entries.insert(AuthorizationEntry("*", "bench", str(folder / "replicas")))
        self.clock = clock if callable(clock) else (lambda: datetime.now(UTC))
        self.applier = ReplicaApplier(self.db, self.clock)
        self.use_cases = ReplicaUseCases(self.db, self.clock, self.applier)

    def create(self, size: int, *, name: str = "bench", history: int = 0) -> str:
        """A replica VM with one disk of ``size`` bytes; its GUID."""
        vm_id = str(uuid.uuid4()).upper()
        settings = ReplicationSettings(primary_connection_point=CALLER, recovery_history=history)
        self.use_cases.create_replica(CALLER, ReplicaSpec(vm_id, name, 256, 1, (("d0", size),),
                                                          settings=settings))
        return vm_id

    async def put(self, vm_id: str, sequence: int, log: bytes, *, settle: bool = True) -> ApplyResult:
        """Apply one log as if it came over the network. The replica answers before its retention runs;
        with ``settle`` this also waits for that retention, so the replica is quiet when it returns."""
        result = await self.use_cases.put_log(CALLER, vm_id, sequence, stream(log))
        if settle:
            await self.settled(vm_id)
        return result

    async def settled(self, vm_id: str) -> None:
        """Wait for the retention that followed the VM's last answer."""
        await self.applier.settled(vm_id)

    def close(self) -> None:
        """Close the store."""
        self.db.close()
