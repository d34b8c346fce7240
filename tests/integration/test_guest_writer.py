"""The test guest's writer in its other modes: ext4 (fdatasync per record), two writers with citations,
and the guest agent channel (exec, file write) the cross-VM citations will use."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.guest import console
from standby.guest.build import GuestImage, build_guest
from standby.guest.verify import verify_image
from standby.hypervisor.qemu import QemuHypervisor

BOOT_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbw-", dir="/tmp") as tmp:
        yield Path(tmp)


def disk(path: Path, size: str = "64M") -> Disk:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return Disk(path.stem, str(path), 0)


def test_ext4_writer_survives_a_clean_stop_and_continues(guest: GuestImage, workdir: Path) -> None:
    d0 = disk(workdir / "d0.qcow2")
    vm = VirtualMachine(
        str(uuid.uuid4()).upper(),
        "ext4",
        192,
        1,
        disks=(d0,),
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        append=guest.append("standby.writer=ext4:/dev/vda:rate=50"),
    )
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> None:
        try:
            await hv.start(vm)
            await console.wait_for_seq(log, 20, timeout=BOOT_TIMEOUT)
            await hv.stop(vm.vm_id, timeout=180)
            offset = len(console.read(log))
            await hv.start(vm)  # the file system is found, not formatted again; the writer goes on
            await console.wait_for_seq(
                log, console.writer_stops(console.read(log))[-1] + 10, timeout=BOOT_TIMEOUT, after=offset
            )
            await hv.stop(vm.vm_id, timeout=180)
        finally:
            await hv.close()

    asyncio.run(scenario())
    text = console.read(log)
    stops, starts = console.writer_stops(text), console.writer_starts(text)
    assert starts == [0, stops[0]]
    report = verify_image(Path(d0.path), mode="ext4")
    assert report.exact_prefix, report.problems
    assert report.records == stops[-1]
    # the raw view of an ext4 disk holds no record stream at its start
    assert verify_image(Path(d0.path)).records == 0


def test_two_writers_cite_each_other_and_the_agent_answers(guest: GuestImage, workdir: Path) -> None:
    a, b = disk(workdir / "a.qcow2"), disk(workdir / "b.qcow2")
    append = guest.append(
        "standby.writer=raw:/dev/vda:rate=40:id=1:status=/run/a",
        "standby.writer=raw:/dev/vdb:rate=40:id=2:cite=/run/a",
    )
    vm = VirtualMachine(
        str(uuid.uuid4()).upper(),
        "pair",
        192,
        1,
        disks=(a, b),
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        append=append,
    )
    hv = QemuHypervisor(workdir / "run", accel="tcg")
    log = hv.run_paths(vm.vm_id).console

    async def scenario() -> tuple[int, str]:
        try:
            await hv.start(vm)
            await console.wait_for_seq(log, 20, writer=2, timeout=BOOT_TIMEOUT)
            agent = await hv.agent(vm.vm_id)
            try:
                await agent.write_file("/run/note", b"hello from the host\n")
                code, out = await agent.run(["/bin/cat", "/run/note"])
            finally:
                await agent.close()
            await hv.stop(vm.vm_id, timeout=180)
            return code, out
        finally:
            await hv.close()

    code, out = asyncio.run(scenario())
    assert (code, out) == (0, "hello from the host\n")
    ra = verify_image(Path(a.path), writer=1)
    rb = verify_image(Path(b.path), writer=2)
    assert ra.exact_prefix and rb.exact_prefix
    assert rb.records >= 21 and len(rb.cites) >= 15
    # every citation names a record of A that is on A's disk, and they never go backwards
    cited = [seq for _, writer, seq in rb.cites]
    assert all(writer == 1 for _, writer, _ in rb.cites)
    assert cited == sorted(cited)
    assert max(cited) < ra.records
