"""Block hashes read straight from a chain's files equal those read through qemu-nbd, for every layout the
replica can hold: qcow2 over qcow2 over raw, zeroed clusters over data, holes, an odd size, compressed
clusters (which fall back to qemu-nbd), and refusals."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from standby.domain.errors import FileNotFound, InvalidParameter, StandbyError
from standby.storage import blockhash, chain, qemu_img
from tests.integration.test_chain import expected_hashes, qemu_io, raw_content

MiB = 1024 * 1024
SIZES = [64 * 1024, 256 * 1024, 1536 * 1024, 4 * MiB]  # 1.5 MiB: blocks straddle clusters and extents


def _through_nbd(path: Path, block: int) -> bytes:
    with chain.NbdServer(path, writable=False) as server, server.connect([chain.BASE_ALLOCATION]) as client:
        return blockhash.nbd_hashes(client, block)[0]


@pytest.fixture()
def layered(tmp_path: Path) -> Path:
    """raw base (odd size) <- qcow2 <- qcow2: data, zeroed data, holes, writes across cluster edges."""
    base = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), str(9 * MiB + 1536)], check=True)
    qemu_io(base, "write -P 0x11 0 2M", "write -P 0x12 6M 1M", "write -P 0x13 9M 1536", fmt="raw")
    middle = tmp_path / "mid.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", str(middle)],
                   check=True)
    qemu_io(middle, "write -P 0x21 1000k 300k", "write -z 6M 64k", "write -P 0 3M 256k")
    top = tmp_path / "top.qcow2"
    qemu_img.create_overlay(top, middle)
    qemu_io(top, "write -P 0x31 1536k 4k", "write -P 0x32 6100k 100k", "write -z 0 64k")
    return top


@pytest.mark.parametrize("block", SIZES)
def test_file_hashes_equal_the_content_and_the_nbd_hashes(layered: Path, tmp_path: Path, block: int) -> None:
    expected = expected_hashes(raw_content(layered, tmp_path), block)
    assert blockhash.image_block_hashes(layered, block) == expected
    assert _through_nbd(layered, block) == expected


def test_the_map_names_each_layer(layered: Path) -> None:
    extents = blockhash.map_chain(layered)
    assert extents[0].start == 0 and extents[-1].end == 9 * MiB + 1536
    assert all(a.end == b.start for a, b in itertools.pairwise(extents))
    assert {e.layer for e in extents} == {None, 0, 1, 2}  # zeros, top, middle, raw base
    raw_extent = next(e for e in extents if e.layer == 2)
    assert raw_extent.offset == raw_extent.start  # a raw file holds each byte at its own offset


def test_compressed_clusters_fall_back_to_qemu_nbd(tmp_path: Path) -> None:
    plain = tmp_path / "plain.qcow2"
    qemu_img.create(plain, 4 * MiB)
    qemu_io(plain, "write -P 0x41 0 1M", "write -P 0x42 3M 512k")
    packed = tmp_path / "packed.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(plain), str(packed)], check=True)
    with pytest.raises(blockhash.NotInPlace):
        blockhash.map_chain(packed)
    top = tmp_path / "top.qcow2"
    qemu_img.create_overlay(top, packed)
    qemu_io(top, "write -P 0x43 512k 64k")
    expected = expected_hashes(raw_content(top, tmp_path), 256 * 1024)
    assert blockhash.image_block_hashes(top, 256 * 1024) == expected


def test_digests_follow_the_content(layered: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(layered), str(copy)], check=True)
    assert blockhash.image_digest(copy) == blockhash.image_digest(layered)
    qemu_io(copy, "write -P 0x77 5M 512")
    assert blockhash.image_digest(copy) != blockhash.image_digest(layered)


def test_refusals(layered: Path, tmp_path: Path) -> None:
    for bad in (0, 511, 64 * MiB):
        with pytest.raises(InvalidParameter):
            blockhash.image_block_hashes(layered, bad)
    (tmp_path / "mid.qcow2").unlink()
    with pytest.raises(FileNotFound):
        blockhash.image_block_hashes(layered, 64 * 1024)
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"not an image")
    with pytest.raises(StandbyError):
        blockhash.image_block_hashes(junk, 64 * 1024)
