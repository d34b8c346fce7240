"""One qemu-img adapter: every function that ran qemu-img on its own before now reports the same failure the
same way, with a stand-in qemu-img and with the real one (a missing backing file, a held lock)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from standby.domain.errors import FileNotFound, InUse, InvalidParameter, StandbyError
from standby.engine import reverse
from standby.guest.verify import verify_image
from standby.hypervisor.qemu import images, offline
from standby.storage import blockhash, chain, failover_images, qemu_img
from standby.storage.qemu_nbd import NbdExport, QemuNbd
from standby.testing import guestvm

MiB = 1024 * 1024


def _real(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """base.qcow2 <- top.qcow2, made by the real qemu-img."""
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    _real("create", "-q", "-f", "qcow2", str(base), str(4 * MiB))
    _real("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(top))
    return base, top


def _every_former_site(base: Path, top: Path, out: Path) -> dict[str, Callable[[], object]]:
    """What ran qemu-img before, one call each: chain, failover_images, hypervisor.qemu.images, offline,
    reverse, blockhash, guest.verify, testing.guestvm."""
    return {
        "chain.create_image": lambda: qemu_img.create(out / "new.qcow2", 4 * MiB),
        "chain.create_overlay": lambda: qemu_img.create_overlay(out / "o.qcow2", top, size=4 * MiB),
        "chain.image_info": lambda: qemu_img.info(top),
        "chain.virtual_size": lambda: qemu_img.virtual_size(top),
        "chain.merge": lambda: chain.merge(base, top),
        "failover_images.create_overlay": lambda: failover_images.failover_overlay(out / "f.qcow2", top),
        "images.create_qcow2": lambda: images.create_qcow2(out / "vm.qcow2", 4 * MiB),
        "QemuImages.create_qcow2": lambda: images.QemuImages().create_qcow2(out / "vm2.qcow2", 4 * MiB),
        "QemuImages.image_info": lambda: images.QemuImages().image_info(top),
        "offline.image_bitmaps": lambda: offline.image_bitmaps(top),
        "offline.bitmap_add": lambda: offline.bitmap_add(top, "rep-1", 65536),
        "offline.bitmap_disable": lambda: offline.bitmap_disable(top, "rep-1"),
        "offline.bitmap_remove": lambda: offline.bitmap_remove(top, "rep-1"),
        "offline.bitmap_merge": lambda: offline.bitmap_merge(top, "rep-1", "rep-2"),
        "reverse.allocated_ranges": lambda: reverse.allocated_ranges(top),
        "reverse rebase": lambda: qemu_img.rebase_unsafe(top, base),
        "blockhash.map_chain": lambda: blockhash.map_chain(top),
        "guest.verify.verify_image": lambda: verify_image(top),
    }


@pytest.fixture()
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put a qemu-img first on the PATH that prints ``said`` on stderr and fails."""
    folder = tmp_path / "bin"
    folder.mkdir()

    def install(said: str) -> None:
        (folder / "said").write_text(said)
        script = folder / "qemu-img"
        script.write_text(f"#!/bin/sh\ncat '{folder / 'said'}' >&2\nexit 1\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}:/usr/local/bin:/usr/bin:/bin")

    return install


@pytest.mark.parametrize(("said", "expected"), [
    ("qemu-img: Could not open 'x.qcow2': Permission denied\n", (InvalidParameter, "BadImage")),
    ("qemu-img: Could not open 'x.qcow2': Could not open backing file: Could not open '/gone/rp-1.qcow2': "
     "No such file or directory\n", (FileNotFound, "DiskFileMissing")),
    ("qemu-img: Could not open 'x.qcow2': Failed to get \"write\" lock\n"
     "Is another process using the image [x.qcow2]?\n", (InUse, "ImageLocked")),
])
def test_every_former_call_site_reports_a_could_not_open_alike(
        pair: tuple[Path, Path], tmp_path: Path, stand_in: Callable[[str], None], said: str,
        expected: tuple[type[StandbyError], str]) -> None:
    base, top = pair
    cls, message_id = expected
    stand_in(said)
    seen: dict[str, tuple[type[StandbyError], str, int]] = {}
    for site, call in _every_former_site(base, top, tmp_path).items():
        with pytest.raises(StandbyError) as caught:
            call()
        seen[site] = (type(caught.value), caught.value.message_id, int(caught.value.code))
    assert set(seen.values()) == {(cls, message_id, int(cls.code))}, seen
    with pytest.raises(RuntimeError) as harness:  # the test harness wraps it, keeping it as the cause
        guestvm.image_sha256(top)
    assert type(harness.value.__cause__) is cls


def test_a_missing_backing_file_is_file_not_found_naming_it(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, top = pair
    base.unlink()
    opening = {
        "overlay without size": lambda: qemu_img.create_overlay(tmp_path / "o.qcow2", top),
        "map": lambda: blockhash.map_chain(top),
        "map -U": lambda: reverse.allocated_ranges(top),
        "convert": lambda: verify_image(top),
        "commit": lambda: qemu_img.commit(top),
    }
    for what, call in opening.items():
        with pytest.raises(FileNotFound) as caught:
            call()
        assert caught.value.message_id == "DiskFileMissing", what
        assert Path(str(caught.value.args_map["path"])).name == base.name, what
    assert qemu_img.info(top).backing_file == base.name  # info does not open the backing chain


def test_an_image_held_by_a_writer_is_in_use(pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, top = pair
    with QemuNbd(NbdExport(top, tmp_path / "w.sock", "disk", writable=True)):
        for call in (lambda: offline.image_bitmaps(top), lambda: offline.bitmap_add(top, "rep-1", 65536),
                     lambda: chain.NbdServer(top, writable=False)):
            with pytest.raises(InUse) as caught:
                call()
            assert caught.value.message_id == "ImageLocked"
        assert qemu_img.info(top).virtual_size == 4 * MiB  # -U reads it anyway
    assert offline.image_bitmaps(top) == []


def test_typed_calls_do_what_they_say(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, top = pair
    offline.bitmap_add(top, "rep-1", 65536)
    offline.bitmap_add(top, "rep-2", 65536)
    offline.bitmap_disable(top, "rep-1")
    found = {b.name: b for b in offline.image_bitmaps(top)}
    assert found["rep-1"].enabled is False and found["rep-2"].enabled is True
    assert not found["rep-1"].inconsistent and found["rep-1"].granularity == 65536
    offline.bitmap_merge(top, "rep-1", "rep-2")
    offline.bitmap_remove(top, "rep-1")
    assert [b.name for b in qemu_img.info(top).bitmaps] == ["rep-2"]
    assert qemu_img.info(qemu_img.create_overlay(tmp_path / "near.qcow2", top)).backing_file == top.name
    (tmp_path / "elsewhere").mkdir()
    overlay = qemu_img.create_overlay(tmp_path / "elsewhere" / "o.qcow2", top, size=4 * MiB)
    assert qemu_img.info(overlay).backing_file == str(top.absolute())
    replaced = failover_images.failover_overlay(overlay, top)
    assert replaced == overlay and not overlay.with_name("o.qcow2.partial").exists()
    qemu_img.rebase_unsafe(top, base.absolute())
    assert qemu_img.info(top).backing_file == str(base.absolute())
    flat = tmp_path / "flat.raw"
    qemu_img.convert(top, flat, shared=True)
    assert flat.stat().st_size == 4 * MiB
