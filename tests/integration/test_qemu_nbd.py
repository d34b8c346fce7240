"""The one qemu-nbd launcher: served once it returns, stopped and reaped at the end, failures through the
error map; blocking (``chain.NbdServer``) and async (``offline.QemuNbdExport``) alike."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from standby.domain.errors import FileNotFound, InUse
from standby.hypervisor.qemu import offline
from standby.storage import chain, qemu_img
from standby.storage.nbd import NbdClient
from standby.storage.qemu_nbd import NbdExport, QemuNbd

MiB = 1024 * 1024


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "d0.qcow2"
    qemu_img.create(path, 4 * MiB)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", str(path)], check=True,
                   capture_output=True)
    return path


def test_it_serves_when_start_returns_and_cleans_up(image: Path, tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    with QemuNbd(NbdExport(image, sock, "disk")), NbdClient.connect_unix(str(sock), "disk") as client:
        assert client.read(1 * MiB, 4096) == b"\x5a" * 4096
    assert not sock.exists()
    qemu_img.bitmap_add(image, "rep-1", 65536)  # the lock is released: the process is gone


def test_a_missing_image_is_file_not_found(tmp_path: Path) -> None:
    server = QemuNbd(NbdExport(tmp_path / "missing.qcow2", tmp_path / "s.sock", "disk"))
    with pytest.raises(FileNotFound) as caught:
        server.start()
    assert caught.value.message_id == "DiskFileMissing"
    assert not (tmp_path / "s.sock").exists()


def test_a_second_writer_is_in_use(image: Path) -> None:
    with chain.NbdServer(image, writable=True), pytest.raises(InUse) as caught:
        chain.NbdServer(image, writable=True)
    assert caught.value.message_id == "ImageLocked"


def test_a_broken_chain_names_the_missing_backing_file(image: Path, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    qemu_img.create_overlay(top, image)
    image.unlink()
    with pytest.raises(FileNotFound) as caught:
        chain.NbdServer(top, writable=False)
    assert Path(str(caught.value.args_map["path"])).name == image.name


def test_the_off_vm_export_serves_its_bitmap_to_parallel_readers(image: Path, tmp_path: Path) -> None:
    qemu_img.bitmap_add(image, "rep-1", 65536)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 2M 64k", str(image)], check=True,
                   capture_output=True)
    sock = tmp_path / "off.sock"

    async def read() -> tuple[list[tuple[int, int]], bytes]:
        async with offline.QemuNbdExport(image, sock, "d0", bitmap="rep-1") as export:
            assert isinstance(export, offline.QemuNbdExport) and export.socket_path == sock
            context = "qemu:dirty-bitmap:rep-1"
            with NbdClient.connect_unix(str(sock), export.export, [context]) as first, \
                    NbdClient.connect_unix(str(sock), export.export) as second:
                dirty = [(e.offset, e.length) for e in first.block_status(context) if e.flags]
                return dirty, second.read(2 * MiB, 4096)

    dirty, data = asyncio.run(read())
    assert dirty == [(2 * MiB, 64 * 1024)] and data == b"\x11" * 4096
    assert not sock.exists()
