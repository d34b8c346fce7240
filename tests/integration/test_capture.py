"""Capture on a real QEMU with the real test guest writing: cuts, delta reads, abort/commit, the off-VM path,
block hashes, and a SIGKILL that loses the change tracking.

The replica here is a plain raw file the logs are applied to with LogDecoder (R's qcow2 applier is tested on
its own); each applied state is compared byte for byte with the fleecing export of the same cut.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import xxhash

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.enums import EnabledState
from standby.engine.capture import (
    Capture,
    Cut,
    ReadMode,
    TrackingLost,
    differing_ranges,
    stream_in_thread,
)
from standby.guest import console
from standby.guest.build import GuestImage, build_guest
from standby.guest.verify import verify_image
from standby.hypervisor.qemu import QemuHypervisor
from standby.storage.logformat import DiskInfo, LogDecoder, LogEncoder, LogHeader, LogKind

T = TypeVar("T")
BOOT_TIMEOUT = 180.0
SIZE = 64 << 20
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbc-", dir="/tmp") as tmp:
        yield Path(tmp)


def run(hv: QemuHypervisor, scenario: Callable[[], Awaitable[T]]) -> T:
    async def guarded() -> T:
        try:
            return await scenario()
        finally:
            await hv.close()

    return asyncio.run(guarded())


def guest_vm(guest: GuestImage, disk: Path) -> VirtualMachine:
    return VirtualMachine(str(uuid.uuid4()).upper(), "cap", 192, 1, disks=(Disk("d0", str(disk), SIZE),),
                          kernel=str(guest.kernel), initrd=str(guest.initrd),
                          append=guest.append("standby.writer=raw:/dev/vda:rate=300"))


async def ship(capture: Capture, cut: Cut, mode: ReadMode, replica: Path,
               ranges: dict[str, list[tuple[int, int]]] | None = None) -> tuple[int, int]:
    """Read the cut into a log (in a thread), apply it to ``replica``; (dirty bytes, wire bytes)."""
    header = LogHeader(cut.vm_id, 0, cut.sequence, 0, LogKind.DELTA, NOW.isoformat(),
                       tuple(DiskInfo(d.disk_id, SIZE) for d in cut.disks))
    encoder = LogEncoder(header)
    async with capture.reader(cut) as reader:
        def produce() -> Iterator[bytes]:
            yield encoder.header_bytes()
            for index, offset, data, length in reader.blocks(mode, ranges):
                yield encoder.frame(index, offset, data) if data is not None else encoder.zero(index, offset,
                                                                                               length)
            yield encoder.end()

        decoder = LogDecoder()
        with replica.open("r+b") as out:
            async for chunk in stream_in_thread(produce):
                for frame in decoder.feed(chunk):
                    out.seek(frame.offset)
                    out.write(frame.data if frame.data is not None else bytes(frame.length))
        decoder.finish()
    return encoder.data_bytes, encoder.wire_bytes


async def snapshot(cut: Cut, out: Path) -> None:
    """The fleecing export of the cut, flattened to raw with qemu-img (the reference)."""
    url = f"nbd+unix:///{cut.node('d0')}?socket={cut.socket}"
    await asyncio.to_thread(subprocess.run, ["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(out)],
                            check=True)


def same(a: Path, b: Path) -> None:
    proc = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", str(a), str(b)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def raw_hashes(path: Path, block: int) -> bytes:
    data = path.read_bytes()
    out = []
    for i in range(0, len(data), block):
        piece = data[i:i + block]
        out.append(bytes(16) if not piece.strip(b"\0") else xxhash.xxh3_128_digest(piece))
    return b"".join(out)


def test_cycles_abort_offline_and_hashes_on_a_writing_guest(guest: GuestImage, workdir: Path) -> None:
    disk = workdir / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    vm = guest_vm(guest, disk)
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    capture = Capture(hv, workdir / "run")
    replica = workdir / "replica.raw"
    with replica.open("wb") as f:
        f.truncate(SIZE)
    log = hv.run_paths(vm.vm_id).console
    figures: dict[str, float] = {}

    async def scenario() -> None:
        await hv.start(vm)
        await console.wait_for_seq(log, 50, timeout=BOOT_TIMEOUT)
        assert await capture.tracking(vm.vm_id, vm.disks) is None

        # initial replication: thin-aware full read of cut 1
        cut = await capture.cut(vm.vm_id, vm.disks, 1, previous=None, now=NOW)
        await snapshot(cut, workdir / "cut1.raw")
        dirty, wire = await ship(capture, cut, ReadMode.FULL, replica)
        assert 0 < dirty < SIZE // 4  # only what the guest wrote, not the 64 MiB
        same(replica, workdir / "cut1.raw")
        await capture.commit(vm.vm_id, vm.disks, 1)
        assert await capture.tracking(vm.vm_id, vm.disks) == 1

        # a delta cut while the guest keeps writing
        seq_now = console.last_seq(console.read(log)) or 0
        await console.wait_for_seq(log, seq_now + 100, timeout=BOOT_TIMEOUT)
        t0 = time.monotonic()
        cut = await capture.cut(vm.vm_id, vm.disks, 2, previous=1, now=NOW)
        figures["cut_ms"] = (time.monotonic() - t0) * 1000
        await snapshot(cut, workdir / "cut2.raw")
        t0 = time.monotonic()
        dirty, wire = await ship(capture, cut, ReadMode.DELTA, replica)
        figures["delta_ship_s"] = time.monotonic() - t0
        figures["delta_dirty"], figures["delta_wire"] = dirty, wire
        assert dirty > 0
        same(replica, workdir / "cut2.raw")
        await capture.commit(vm.vm_id, vm.disks, 2)

        # cut 3 fails before anything reached the replica: abort merges rep-2 back into rep-3
        await console.wait_for_seq(log, (console.last_seq(console.read(log)) or 0) + 60, timeout=BOOT_TIMEOUT)
        cut = await capture.cut(vm.vm_id, vm.disks, 3, previous=2, now=NOW)
        await capture.abort(vm.vm_id, vm.disks, 3)
        await capture.abort(vm.vm_id, vm.disks, 3)  # idempotent
        assert await capture.tracking(vm.vm_id, vm.disks) == 3
        ops = hv.qmp(vm.vm_id)
        assert await ops.query_exports() == [] and await ops.query_jobs() == []
        await console.wait_for_seq(log, (console.last_seq(console.read(log)) or 0) + 60, timeout=BOOT_TIMEOUT)
        cut = await capture.cut(vm.vm_id, vm.disks, 4, previous=3, now=NOW)
        await snapshot(cut, workdir / "cut4.raw")
        await ship(capture, cut, ReadMode.DELTA, replica)
        same(replica, workdir / "cut4.raw")  # nothing of cut 3's interval was lost
        await capture.commit(vm.vm_id, vm.disks, 4)
        # a cut left half done (as by a daemon killed mid-cycle) is settled by the next tracking() call
        await capture.cut(vm.vm_id, vm.disks, 5, previous=4, now=NOW)
        assert await capture.tracking(vm.vm_id, vm.disks) == 5
        assert await ops.query_exports() == []

        # the VM stops cleanly: the bitmap persists and the off path reads what changed since cut 4
        await hv.stop(vm.vm_id, graceful=True, timeout=180)
        assert await capture.tracking(vm.vm_id, vm.disks) == 5
        cut = await capture.cut(vm.vm_id, vm.disks, 6, previous=5, now=NOW)
        assert not cut.online
        await ship(capture, cut, ReadMode.DELTA, replica)
        async with capture.reader(cut) as reader:
            ours = await asyncio.to_thread(reader.hashes, vm.disks[0], 256 * 1024)
        await capture.commit(vm.vm_id, vm.disks, 6)
        assert await capture.tracking(vm.vm_id, vm.disks) == 6
        flat = workdir / "final.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(flat)], check=True)
        same(replica, flat)
        assert ours == raw_hashes(replica, 256 * 1024)
        report = verify_image(replica)
        assert report.exact_prefix and report.records > 200, report.problems
        assert differing_ranges(ours, raw_hashes(replica, 256 * 1024), 256 * 1024, SIZE) == []
        with replica.open("r+b") as f:  # damage the replica: the compare finds exactly that block
            f.seek(3 * 256 * 1024 + 100)
            f.write(b"x")
        assert differing_ranges(ours, raw_hashes(replica, 256 * 1024), 256 * 1024, SIZE) == [
            (3 * 256 * 1024, 256 * 1024)]

        # QEMU killed: the bitmap comes back inconsistent, so tracking is lost
        await hv.start(vm)
        await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT, count=2)
        os.kill(hv.pid(vm.vm_id), signal.SIGKILL)
        while hv.state(vm.vm_id) is not EnabledState.DISABLED:
            await asyncio.sleep(0.05)
        with pytest.raises(TrackingLost):
            await capture.tracking(vm.vm_id, vm.disks)
        await hv.start(vm)
        with pytest.raises(TrackingLost):
            await capture.tracking(vm.vm_id, vm.disks)
        with pytest.raises(TrackingLost):
            await capture.cut(vm.vm_id, vm.disks, 7, previous=6, now=NOW)
        # a fresh start (resync) drops the inconsistent bitmap and tracks again
        cut = await capture.cut(vm.vm_id, vm.disks, 7, previous=None, now=NOW)
        await capture.commit(vm.vm_id, vm.disks, 7)
        assert await capture.tracking(vm.vm_id, vm.disks) == 7
        await hv.stop(vm.vm_id, graceful=False)

    run(hv, scenario)
    ratio = figures["delta_wire"] / figures["delta_dirty"]
    print(f"\ncapture: cut {figures['cut_ms']:.1f} ms; delta {figures['delta_dirty'] / 1e6:.2f} MB dirty -> "
          f"{figures['delta_wire'] / 1e6:.2f} MB on the wire ({ratio:.3f}) "
          f"in {figures['delta_ship_s']:.2f} s")

