"""A group cut's steps on a real QEMU (no guest: writes go through the device backend with qemu-io): ``rep-N``
is added in ``prepare_cut``, before the pause, so writes between prepare and the cut are recorded by both
bitmaps — shipped by this cut and again by the next, never lost — and an abort before the transaction leaves
one recording bitmap holding every change since the last committed cut."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.engine.capture import Capture, Cut, ReadMode
from standby.hypervisor.qemu import QemuHypervisor

SIZE = 16 << 20
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
A, B, C = 1 << 20, 4 << 20, 8 << 20  # three 64 KiB granules far apart
LENGTH = 64 << 10


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbgc-", dir="/tmp") as tmp:
        yield Path(tmp)


async def dirty(capture: Capture, cut: Cut) -> dict[int, bytes]:
    """What a DELTA read of the cut ships: {offset: data} per 64 KiB granule."""
    await capture.export_cut(cut)
    async with capture.reader(cut) as reader:
        blocks = await asyncio.to_thread(lambda: list(reader.blocks(ReadMode.DELTA)))
    out: dict[int, bytes] = {}
    for _, offset, data, length in blocks:
        payload = data if data is not None else bytes(length)
        for at in range(0, length, LENGTH):
            out[offset + at] = payload[at:at + LENGTH]
    return out


async def recording(hv: QemuHypervisor, vm_id: str) -> dict[str, tuple[bool, int]]:
    """Our bitmaps on the disk: name -> (recording, dirty bytes)."""
    listed = await hv.qmp(vm_id).bitmaps("fmt-d0")
    return {b["name"]: (bool(b.get("recording")), int(b.get("count", 0)))
            for b in listed if str(b.get("name", "")).startswith("rep-")}


def test_writes_between_prepare_and_the_cut_are_shipped_now_and_again_never_lost(workdir: Path) -> None:
    image = workdir / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE)], check=True)
    vm = VirtualMachine(str(uuid.uuid4()).upper(), "grp", 64, 1, disks=(Disk("d0", str(image), SIZE),))
    hv = QemuHypervisor(workdir / "run", accel="auto")
    capture = Capture(hv, workdir / "run")

    async def scenario() -> None:
        await hv.start(vm)
        ops = hv.qmp(vm.vm_id)
        first = await capture.cut(vm.vm_id, vm.disks, 1, previous=None, now=NOW)
        await capture.commit(vm.vm_id, vm.disks, first.sequence)

        cut = await capture.prepare_cut(vm.vm_id, vm.disks, 2, previous=1, now=NOW)
        assert await recording(hv, vm.vm_id) == {"rep-1": (True, 0), "rep-2": (True, 0)}
        await ops.guest_write("d0", A, LENGTH, 0x11)  # after prepare, before the cut
        await ops.execute("stop")
        await capture.transact_cut(cut)
        await ops.execute("cont")
        await ops.guest_write("d0", B, LENGTH, 0x22)  # after the cut
        bitmaps = await recording(hv, vm.vm_id)
        assert bitmaps["rep-1"] == (False, LENGTH) and bitmaps["rep-2"] == (True, 2 * LENGTH)
        shipped = await dirty(capture, cut)
        assert shipped == {A: b"\x11" * LENGTH}  # the cut: A as written, B not yet
        await capture.commit(vm.vm_id, vm.disks, 2)

        # The next cut ships A again (recorded by both) and B.
        cut = await capture.prepare_cut(vm.vm_id, vm.disks, 3, previous=2, now=NOW)
        await ops.execute("stop")
        await capture.transact_cut(cut)
        await ops.execute("cont")
        assert await dirty(capture, cut) == {A: b"\x11" * LENGTH, B: b"\x22" * LENGTH}
        await capture.commit(vm.vm_id, vm.disks, 3)

        # A group cut failing before its transaction: the abort keeps one recording bitmap with every change.
        await ops.guest_write("d0", A, LENGTH, 0x33)
        await capture.prepare_cut(vm.vm_id, vm.disks, 4, previous=3, now=NOW)
        await ops.guest_write("d0", C, LENGTH, 0x44)
        await capture.abort(vm.vm_id, vm.disks, 4)
        assert await recording(hv, vm.vm_id) == {"rep-4": (True, 2 * LENGTH)}
        assert await capture.tracking(vm.vm_id, vm.disks) == 4
        cut = await capture.prepare_cut(vm.vm_id, vm.disks, 5, previous=4, now=NOW)
        await ops.execute("stop")
        await capture.transact_cut(cut)
        await ops.execute("cont")
        assert await dirty(capture, cut) == {A: b"\x33" * LENGTH, C: b"\x44" * LENGTH}
        await capture.commit(vm.vm_id, vm.disks, 5)
        assert set(await recording(hv, vm.vm_id)) == {"rep-5"}

    async def guarded() -> None:
        try:
            await scenario()
        finally:
            if vm.vm_id in hv.running():
                await hv.kill(vm.vm_id)
            await hv.close()

    asyncio.run(guarded())
