"""Apply throughput against ``qemu-img convert`` of the same bytes: the replica's share of P4.

    .venv/bin/python -m bench.apply_alone [--mib 256] [--repeat 3]

(Moved from tests/integration/bench_apply.py; ``bench.p04_throughput`` calls ``measure``.)

Builds a source qcow2 (half random data, a quarter compressible text, a quarter zeros written as data),
encodes the initial log of every allocated extent (what the primary ships), then times, best of N:
* ``apply``: ``ReplicaApplier.apply`` of that log from memory (decode, zstd, xxh3, qemu-nbd writes,
  fsync, rename, record) into a fresh replica, as the daemon does by default;
* ``apply verify-writes``: the same with ``[replica] verify_writes`` on (every written range read back);
* ``qemu-img convert``: ``-O qcow2`` of the source into a new image (the same bytes, no log, no network).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.engine.apply import ReplicaApplier
from standby.engine.replica import ReplicaSpec, ReplicaUseCases
from standby.storage import chain
from standby.storage.logformat import DiskInfo, LogEncoder, LogHeader, LogKind
from standby.storage.nbd import STATE_HOLE, STATE_ZERO
from standby.store.sqlite import Database

MiB = 1024 * 1024
VM_ID = "BE4C0000-0000-4000-8000-000000000001"


def _source(path: Path, size: int) -> None:
    chain.create_image(path, size)
    text = (b"standby replicates virtual machines; " * 30000)[:MiB]
    with chain.NbdServer(path, writable=True) as server, server.connect() as client:
        for offset in range(0, size, MiB):
            quarter = (offset // MiB) % 4
            data = os.urandom(MiB) if quarter < 2 else text if quarter == 2 else bytes(MiB)
            client.write(offset, data)
        client.flush()


def _log(path: Path, size: int) -> bytes:
    header = LogHeader(VM_ID, 0, 1, 0, LogKind.INITIAL, "2026-01-01T00:00:00+00:00", (DiskInfo("d0", size),))
    encoder = LogEncoder(header)
    parts = [encoder.header_bytes()]
    with chain.NbdServer(path, writable=False) as server, server.connect([chain.BASE_ALLOCATION]) as client:
        data_extents = [e for e in client.block_status(chain.BASE_ALLOCATION)
                        if not e.flags & (STATE_HOLE | STATE_ZERO)]
        ranges = [(e.offset + pos, min(4 * MiB, e.length - pos))
                  for e in data_extents for pos in range(0, e.length, 4 * MiB)]
        for offset, data in client.read_many(ranges, depth=16):
            parts.append(encoder.frame(0, offset, data))
    parts.append(encoder.end())
    return b"".join(parts)


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), 256 * 1024):
        yield data[offset:offset + 256 * 1024]


def _now() -> datetime:
    return datetime.now(UTC)


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (qemu-nbd, qemu-img): robust on a busy machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _apply_once(root: Path, log: bytes, size: int, *, verify: bool = False,
                cpu: list[float] | None = None) -> float:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    db = Database.open(root / "db")
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry("*", "g", str(root)))
    applier = ReplicaApplier(db, _now, verify_writes=verify)
    replica = ReplicaUseCases(db, _now, applier)
    replica.create_replica("bench", ReplicaSpec(VM_ID, "bench", 256, 1, (("d0", size),),
                                                settings=ReplicationSettings()))

    async def put() -> float:
        used = _cpu_seconds()
        start = time.perf_counter()
        await replica.put_log("bench", VM_ID, 1, _stream(log))
        elapsed = time.perf_counter() - start  # the replica's answer; retention follows it
        if cpu is not None:
            cpu.append(_cpu_seconds() - used)
        await applier.settled(VM_ID)
        return elapsed

    elapsed = asyncio.run(put())
    db.close()
    return elapsed


def _convert_once(source: Path, target: Path) -> float:
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(source), str(target)], check=True)
    chain.fsync_file(target)  # the apply fsyncs too
    return time.perf_counter() - start


def measure(mib: int, repeat: int, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds per repeat of: the apply, the apply with the read-back verify, and qemu-img convert.

    ``cpu``, when given, receives the CPU seconds (this process and qemu-nbd/qemu-img) of each apply.
    """
    cpu = {} if cpu is None else cpu
    size = mib * MiB
    work = Path(tempfile.mkdtemp(prefix="sby-bench-", dir="/tmp"))
    try:
        source = work / "src.qcow2"
        _source(source, size)
        log = _log(source, size)
        cpu.update({"apply": [], "apply verify-writes": []})
        applied = [_apply_once(work / "replica", log, size, cpu=cpu["apply"]) for _ in range(repeat)]
        verified = [_apply_once(work / "replica", log, size, verify=True, cpu=cpu["apply verify-writes"])
                    for _ in range(repeat)]
        converted = [_convert_once(source, work / "converted.qcow2") for _ in range(repeat)]
        return {"apply": applied, "apply verify-writes": verified, "qemu-img convert": converted}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Run the benchmark and print the figures (medians)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {}
    for name, samples in measure(args.mib, args.repeat, cpu).items():
        seconds = statistics.median(samples)
        used = f"  cpu {statistics.median(cpu[name]):6.3f} s" if name in cpu else ""
        print(f"{name:20s} {seconds:7.3f} s  {args.mib / seconds:8.1f} MiB/s of disk{used}")


if __name__ == "__main__":
    main()
