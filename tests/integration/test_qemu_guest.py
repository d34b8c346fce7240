"""The QEMU driver with the real test guest (TCG): boot, write, stop, verify, restart, kill, pause, reset."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import FileNotFound, InvalidState
from standby.guest import console
from standby.guest.build import GuestImage, build_guest
from standby.guest.record import RECORD_SIZE, encode
from standby.guest.verify import verify_image
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.hypervisor.qemu import QemuHypervisor

T = TypeVar("T")
BOOT_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short paths: unix socket names must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sbq-", dir="/tmp") as tmp:
        yield Path(tmp)


def run(hv: QemuHypervisor, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run a scenario; whatever happens, no QEMU outlives it."""

    async def guarded() -> T:
        try:
            return await scenario()
        finally:
            await hv.close()

    return asyncio.run(guarded())


def make_disk(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def guest_vm(guest: GuestImage, disk: Path, *extra: str, name: str = "g1") -> VirtualMachine:
    return VirtualMachine(
        vm_id=str(uuid.uuid4()).upper(),
        name=name,
        memory_mib=192,
        cpus=1,
        disks=(Disk("d0", str(disk), 64 << 20),),
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        append=guest.append(*extra),
    )


def is_zombie_or_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return bool(stat)  # any entry (running or Z) means the pid was not reaped


def test_boot_write_stop_verify_and_continue(guest: GuestImage, workdir: Path) -> None:
    disk = make_disk(workdir / "d0.qcow2")
    vm = guest_vm(guest, disk, "standby.writer=raw:/dev/vda:rate=100")
    hv = QemuHypervisor(workdir / "run", accel="auto")
    events: list[VmEvent] = []
    hv.subscribe(events.append)
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> tuple[float, int, int]:
        t0 = time.monotonic()
        await hv.start(vm)
        assert hv.state(vm.vm_id) is EnabledState.ENABLED
        await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT)
        boot = time.monotonic() - t0
        await console.wait_for_seq(log, 40, timeout=BOOT_TIMEOUT)
        await hv.stop(vm.vm_id, graceful=True, timeout=180)
        first = console.writer_stops(console.read(log))
        # second run: the writer finds the prefix and continues the sequence
        offset = len(console.read(log))
        await hv.start(vm)
        await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT, after=offset)
        await console.wait_for_seq(log, first[-1] + 40, timeout=BOOT_TIMEOUT, after=offset)
        await hv.stop(vm.vm_id, graceful=True, timeout=180)
        return boot, first[-1], console.writer_stops(console.read(log))[-1]

    boot, first_count, second_count = run(hv, scenario)
    print(f"\ntest guest boot to ready marker under {hv.accel}: {boot:.2f} s")
    text = console.read(log)
    assert console.writer_starts(text) == [0, first_count]
    assert second_count >= first_count + 40
    assert hv.state(vm.vm_id) is EnabledState.DISABLED
    kinds = [e.kind for e in events]
    assert kinds.count(VmEventKind.STARTED) == 2
    assert VmEventKind.CRASHED not in kinds

    report = verify_image(disk)
    assert report.exact_prefix, report.problems
    assert report.records == second_count
    assert report.last_seq == second_count - 1
    # byte for byte: the flattened image holds exactly the records the format defines
    raw = workdir / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    data = raw.read_bytes()
    expected = b"".join(encode(0, seq) for seq in range(second_count))
    assert data[: len(expected)] == expected
    assert not data[len(expected) : len(expected) + 64 * RECORD_SIZE].strip(b"\0")


def test_sigkill_is_noticed_reaped_and_disk_is_a_prefix(guest: GuestImage, workdir: Path) -> None:
    disk = make_disk(workdir / "d0.qcow2")
    vm = guest_vm(guest, disk, "standby.writer=raw:/dev/vda:rate=200")
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    events: list[VmEvent] = []
    hv.subscribe(events.append)
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> int:
        await hv.start(vm)
        await console.wait_for_seq(log, 30, timeout=BOOT_TIMEOUT)
        pid = hv.pid(vm.vm_id)
        os.kill(pid, signal.SIGKILL)  # from outside, as a crash would
        while hv.state(vm.vm_id) is not EnabledState.DISABLED:
            await asyncio.sleep(0.05)
        return pid

    pid = run(hv, scenario)
    crashed = [e for e in events if e.kind is VmEventKind.CRASHED]
    assert len(crashed) == 1
    assert crashed[0].signal == signal.SIGKILL
    assert crashed[0].state is EnabledState.DISABLED
    assert "signal 9" in crashed[0].detail
    assert not is_zombie_or_alive(pid)
    report = verify_image(disk)
    assert report.exact_prefix, report.problems
    assert report.records >= 31


def test_pause_resume_reset_and_hard_stop(guest: GuestImage, workdir: Path) -> None:
    disk = make_disk(workdir / "d0.qcow2")
    vm = guest_vm(guest, disk)
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    events: list[VmEvent] = []
    hv.subscribe(events.append)
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> None:
        await hv.start(vm)
        await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT)
        with pytest.raises(InvalidState):
            await hv.start(vm)
        await hv.pause(vm.vm_id)
        assert hv.state(vm.vm_id) is EnabledState.QUIESCE
        status = await hv.qmp(vm.vm_id).execute("query-status")
        assert status["status"] == "paused"
        await hv.resume(vm.vm_id)
        assert hv.state(vm.vm_id) is EnabledState.ENABLED
        await hv.reset(vm.vm_id)
        await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT, count=2)
        pid = hv.pid(vm.vm_id)
        await hv.stop(vm.vm_id, graceful=False)
        assert not is_zombie_or_alive(pid)

    run(hv, scenario)
    # the firmware may reset the machine once more while it reboots: fold repeated resets
    kinds = [e.kind for i, e in enumerate(events) if i == 0 or e.kind is not events[i - 1].kind]
    assert kinds == [
        VmEventKind.STARTED,
        VmEventKind.PAUSED,
        VmEventKind.RESUMED,
        VmEventKind.RESET,
        VmEventKind.STOPPED,
    ]
    assert events[3].detail == "host"
    assert hv.state(vm.vm_id) is EnabledState.DISABLED


def test_acpi_power_button_powers_the_guest_off(guest: GuestImage, workdir: Path) -> None:
    disk = make_disk(workdir / "d0.qcow2")
    vm = guest_vm(guest, disk, "standby.writer=raw:/dev/vda:rate=50")
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    events: list[VmEvent] = []
    hv.subscribe(events.append)
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> None:
        await hv.start(vm)
        await console.wait_for_seq(log, 5, timeout=BOOT_TIMEOUT)
        await hv.qmp(vm.vm_id).execute("system_powerdown")
        await console.wait_for(log, "STANDBY-GUEST-HALT", timeout=180)
        while hv.state(vm.vm_id) is not EnabledState.DISABLED:
            await asyncio.sleep(0.05)

    run(hv, scenario)
    assert events[-1].kind is VmEventKind.GUEST_SHUTDOWN
    stops = console.writer_stops(console.read(log))
    report = verify_image(disk)
    assert report.exact_prefix and report.records == stops[-1]


def test_bad_input_is_refused_before_anything_runs(guest: GuestImage, workdir: Path) -> None:
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    missing = guest_vm(guest, workdir / "nope.qcow2")

    async def scenario() -> None:
        with pytest.raises(FileNotFound):
            await hv.start(missing)
        with pytest.raises(InvalidState):
            await hv.stop(missing.vm_id)
        with pytest.raises(InvalidState):
            hv.qmp(missing.vm_id)

    run(hv, scenario)
    assert hv.running() == []
    assert not (workdir / "run" / missing.vm_id / "qmp.sock").exists()


def test_qemu_refusing_to_start_is_a_clear_error(workdir: Path) -> None:
    bad = make_disk(workdir / "bad.qcow2")
    bad.write_bytes(b"QFI\xfb" + b"\0" * 100)  # a broken qcow2 header
    vm = VirtualMachine(str(uuid.uuid4()).upper(), "broken", 64, 1, disks=(Disk("d0", str(bad), 0),))
    hv = QemuHypervisor(workdir / "run", accel="tcg")

    async def scenario() -> str:
        with pytest.raises(Exception) as info:
            await hv.start(vm)
        return str(info.value)

    message = run(hv, scenario)
    assert "QEMU did not start" in message
    assert hv.running() == []
