"""QEMU outlives its supervisor: a second driver (a restarted daemon) re-attaches, the change tracking a cut
left in QEMU is still there, and a SIGKILL of the adopted QEMU is noticed as a crash through its pidfd."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.enums import EnabledState
from standby.engine.capture import Capture
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.hypervisor.qemu import QemuHypervisor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbr-", dir="/tmp") as tmp:
        yield Path(tmp)


def test_a_restarted_driver_reattaches_and_keeps_tracking(workdir: Path) -> None:
    disk = workdir / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    vm = VirtualMachine(str(uuid.uuid4()).upper(), "re", 64, 1, disks=(Disk("d0", str(disk), 16 << 20),))
    first = QemuHypervisor(workdir / "run", accel="tcg")
    second = QemuHypervisor(workdir / "run", accel="tcg")
    events: list[VmEvent] = []
    second.subscribe(events.append)

    async def scenario() -> None:
        try:
            await first.start(vm)
            pid = first.pid(vm.vm_id)
            await Capture(first, workdir / "run").cut(vm.vm_id, vm.disks, 1, previous=None, now=NOW)
            await first.detach()  # the daemon goes away; QEMU keeps running
            assert first.running() == []
            os.kill(pid, 0)

            assert await second.reattach([vm]) == [vm.vm_id]
            assert second.state(vm.vm_id) is EnabledState.ENABLED and second.pid(vm.vm_id) == pid
            capture = Capture(second, workdir / "run")
            assert await capture.tracking(vm.vm_id, vm.disks) == 1  # the half-done cut is settled
            await second.qmp(vm.vm_id).guest_write("d0", 0, 65536, 0x5A)
            cut = await capture.cut(vm.vm_id, vm.disks, 2, previous=1, now=NOW)
            async with capture.reader(cut) as reader:
                blocks = await asyncio.to_thread(lambda: list(reader.blocks()))
            assert [(b[1], b[3]) for b in blocks] == [(0, 65536)]
            await capture.commit(vm.vm_id, vm.disks, 2)

            os.kill(pid, signal.SIGKILL)  # as a crash would
            while second.state(vm.vm_id) is not EnabledState.DISABLED:
                await asyncio.sleep(0.05)
            assert await second.reattach([vm]) == []  # nothing left to adopt
            # Bitmaps added while QEMU ran reach the image only at a clean exit: none survived the kill
            # (the cycle runner treats "no tracking" on a replicating relationship as lost tracking).
            assert await capture.tracking(vm.vm_id, vm.disks) is None
        finally:
            await second.close()
            await first.close()

    asyncio.run(scenario())
    assert [e.kind for e in events] == [VmEventKind.CRASHED]
