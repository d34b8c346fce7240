"""The QMP block wrappers on a real QEMU: dirty bitmaps, transactions, fleecing backup, NBD export, jobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.errors import StandbyError
from standby.hypervisor.qemu import QemuHypervisor
from standby.hypervisor.qemu.block import backup_action, bitmap_action

T = TypeVar("T")
MIB = 1 << 20
K64 = 64 * 1024


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbb-", dir="/tmp") as tmp:
        yield Path(tmp)


def run(hv: QemuHypervisor, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run a scenario; whatever happens, no QEMU outlives it."""

    async def guarded() -> T:
        try:
            return await scenario()
        finally:
            await hv.close()

    return asyncio.run(guarded())


def qemu_io(*args: str) -> str:
    proc = subprocess.run(["qemu-io", *args], capture_output=True, text=True, check=True)
    return proc.stdout + proc.stderr


def test_bitmaps_transaction_fleecing_and_nbd_export(workdir: Path) -> None:
    disk = workdir / "d0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    qemu_io("-f", "qcow2", "-c", "write -P 0x11 0 1M", str(disk))
    scratch = workdir / "fleece.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(scratch), "16M"], check=True)
    nbd_sock = workdir / "nbd.sock"
    copy = workdir / "copy.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(copy), "16M"], check=True)
    # No kernel: the firmware finds nothing to boot and waits, which is all block operations need.
    vm = VirtualMachine(str(uuid.uuid4()).upper(), "blk", 64, 1, disks=(Disk("d0", str(disk), 16 * MIB),))
    hv = QemuHypervisor(workdir / "run", accel="tcg")

    async def scenario() -> dict[str, object]:
        await hv.start(vm)
        ops = hv.qmp(vm.vm_id)
        await ops.bitmap_add("fmt-d0", "rep-0")
        await ops.guest_write("d0", K64, K64, 0x22)
        [bm] = await ops.bitmaps("fmt-d0")
        assert (bm["name"], bm["count"], bm["recording"], bm["persistent"]) == ("rep-0", K64, True, True)

        # A failing transaction changes nothing.
        with pytest.raises(StandbyError, match="transaction failed"):
            await ops.transaction(
                [bitmap_action("add", "fmt-d0", "rep-x"), bitmap_action("add", "fmt-d0", "rep-0")]
            )
        assert [b["name"] for b in await ops.bitmaps("fmt-d0")] == ["rep-0"]

        # The cut: new bitmap, old one frozen, copy-before-write into a scratch node backed by the disk.
        await ops.blockdev_add(
            {
                "driver": "qcow2",
                "node-name": "fleece0",
                "file": {"driver": "file", "filename": str(scratch)},
                "backing": "fmt-d0",
            }
        )
        await ops.transaction(
            [
                bitmap_action("add", "fmt-d0", "rep-1", persistent=True),
                bitmap_action("disable", "fmt-d0", "rep-0"),
                backup_action("fleece-job", "fmt-d0", "fleece0", sync="none"),
            ]
        )
        await ops.guest_write("d0", 0, K64, 0x33)  # after the cut: the export must still show 0x11
        assert [j["device"] for j in await ops.query_block_jobs()] == ["fleece-job"]

        await ops.nbd_server_start(nbd_sock)
        await ops.block_export_add("exp0", "fleece0", bitmaps=["rep-0"], allocation_depth=True)
        url = f"nbd+unix:///exp0?socket={nbd_sock}"
        read = await asyncio.to_thread(
            qemu_io,
            "-r",
            "-f",
            "raw",
            "-c",
            f"read -P 0x11 0 {K64}",
            "-c",
            f"read -P 0x22 {K64} {K64}",
            "-c",
            f"read -P 0x11 {2 * K64} {K64}",
            url,
        )
        dirty = await asyncio.to_thread(dirty_extents, nbd_sock)

        # Teardown in the order DESIGN §7 gives.
        await ops.block_export_del("exp0")
        assert await ops.query_exports() == []
        await ops.job_cancel("fleece-job")
        status = await ops.wait_job("fleece-job")
        if status == "concluded":
            await ops.job_dismiss("fleece-job")
        await ops.blockdev_del("fleece0")
        await ops.bitmap_merge("fmt-d0", "rep-1", ["rep-0"])
        await ops.bitmap_remove("fmt-d0", "rep-0")
        await ops.nbd_server_stop()
        after = {b["name"]: b["count"] for b in await ops.bitmaps("fmt-d0")}

        # A full backup job, waited for through its completion event, then dismissed.
        await ops.blockdev_add(
            {"driver": "qcow2", "node-name": "copy0", "file": {"driver": "file", "filename": str(copy)}}
        )
        await ops.blockdev_backup("copy-job", "fmt-d0", "copy0", sync="full", **{"auto-dismiss": False})
        completed = await ops.wait_block_job_completed("copy-job")
        await ops.job_dismiss("copy-job")
        await ops.blockdev_del("copy0")
        assert await ops.query_jobs() == []
        with pytest.raises(StandbyError, match="block-dirty-bitmap-remove failed"):
            await ops.bitmap_remove("fmt-d0", "rep-0")
        await hv.stop(vm.vm_id, graceful=False)  # QMP quit: a clean exit stores persistent bitmaps
        return {"read": read, "dirty": dirty, "after": after, "completed": completed}

    out = run(hv, scenario)
    assert "Pattern verification failed" not in str(out["read"])
    assert str(out["read"]).count("read 65536/65536 bytes") == 3
    assert out["dirty"] == [(K64, K64)]
    assert out["after"] == {"rep-1": 2 * K64}  # the 0x33 write plus the merged 0x22 write
    assert out["completed"]["device"] == "copy-job" and "error" not in out["completed"]
    compare = ["qemu-img", "compare", "-U", str(disk), str(copy)]
    same = subprocess.run(compare, capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )
    names = [b["name"] for b in info["format-specific"]["data"].get("bitmaps", [])]
    assert names == ["rep-1"]


def dirty_extents(sock: Path) -> list[tuple[int, int]]:
    """Dirty ranges of rep-0 as NBD block status reports them (qemu-img map's x-dirty-bitmap view)."""
    opts = (
        f"driver=nbd,export=exp0,server.type=unix,server.path={sock},x-dirty-bitmap=qemu:dirty-bitmap:rep-0"
    )
    proc = subprocess.run(
        ["qemu-img", "map", "--output=json", "--image-opts", opts], capture_output=True, text=True, check=True
    )
    # With x-dirty-bitmap, qemu-img reports dirty extents as data=false.
    return [(e["start"], e["length"]) for e in json.loads(proc.stdout) if not e["data"]]
