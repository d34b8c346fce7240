"""Recovery-point chains with real qemu-img / qemu-nbd: overlays, merges, block hashes, digests."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
import xxhash

from standby.domain.errors import FileNotFound, InvalidParameter, StandbyError
from standby.storage import blockhash, chain, qemu_img

MiB = 1024 * 1024
SIZE = 16 * MiB


def qemu_io(path: Path, *commands: str, fmt: str = "qcow2") -> None:
    """Run qemu-io ``commands`` on the image (raises when one fails)."""
    args = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def raw_content(path: Path, tmp: Path) -> bytes:
    """The image's guest-visible bytes (qemu-img convert to raw, through its backing chain)."""
    out = tmp / (path.name + ".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def expected_hashes(data: bytes, block: int) -> bytes:
    """The peer protocol's block hashes of ``data``, computed the plain way."""
    out = []
    for offset in range(0, len(data), block):
        piece = data[offset:offset + block]
        out.append(bytes(16) if piece.count(0) == len(piece) else xxhash.xxh3_128_digest(piece))
    return b"".join(out)


@pytest.fixture()
def points(tmp_path: Path) -> list[Path]:
    """rp-1 (standalone) <- rp-2 <- rp-3 <- rp-4, each writing something different."""
    folder = tmp_path / "disks" / "d0"
    folder.mkdir(parents=True)
    paths = [folder / f"rp-{n:010d}.qcow2" for n in range(1, 5)]
    qemu_img.create(paths[0], SIZE)
    qemu_io(paths[0], "write -P 0x11 0 1M", "write -P 0x12 8M 64k")
    for previous, path in itertools.pairwise(paths):
        qemu_img.create_overlay(path, previous)
    qemu_io(paths[1], "write -P 0x21 512k 1M", "write -z 8M 64k")  # overwrite, and zero what rp-1 wrote
    qemu_io(paths[2], "write -P 0x31 3M 100k", "write -P 0x32 15M 1M")
    qemu_io(paths[3], "write -P 0x41 0 4k")
    return paths


def test_overlays_name_their_backing_relative(points: list[Path]) -> None:
    assert qemu_img.info(points[2]).backing_file == points[1].name
    assert chain.backing_file(points[0]) is None
    assert chain.chain_of(points[3]) == [points[3], points[2], points[1], points[0]]
    assert qemu_img.virtual_size(points[3]) == SIZE


def test_block_hashes_match_the_raw_content(points: list[Path], tmp_path: Path) -> None:
    for block in (64 * 1024, 1 * MiB, 3 * MiB):  # 3 MiB: the last block is partial
        for path in points:
            expected = expected_hashes(raw_content(path, tmp_path), block)
            assert blockhash.image_block_hashes(path, block) == expected
    hashes = blockhash.image_block_hashes(points[1], 1 * MiB)
    assert hashes[8 * 16:9 * 16] == bytes(16)  # zeroed in rp-2 over rp-1's data
    assert hashes[10 * 16:11 * 16] == bytes(16)  # never written: a hole, not read


@pytest.mark.parametrize("read_size", [1, 256 * 1024, 4 * MiB, 32 * MiB])
def test_hashes_do_not_depend_on_the_read_size(tmp_path: Path, read_size: int) -> None:
    # Odd size (the last block partial), allocated zeros (read, hashed as zeros), holes (not read), data
    # across read boundaries.
    path = tmp_path / "odd.qcow2"
    qemu_img.create(path, 9 * MiB + 1536)
    qemu_io(path, "write -P 0x51 100k 3M", "write -P 0 5M 1M", "write -P 0x52 9M 1536")
    expected = expected_hashes(raw_content(path, tmp_path), 256 * 1024)
    with chain.NbdServer(path, writable=False) as server, server.connect([chain.BASE_ALLOCATION]) as client:
        hashes, read = blockhash.nbd_hashes(client, 256 * 1024, read_size=read_size)
    assert hashes == expected
    assert read < 9 * MiB  # the holes were skipped


def test_reads_join_runs_of_blocks_between_zero_blocks() -> None:
    runs = list(blockhash._runs(10, {2, 3, 7}, 4, 38, 12))
    assert runs == [(0, 8), (16, 12), (32, 6)]  # at most 3 blocks a read; the last one short


def test_merge_keeps_every_remaining_point(points: list[Path], tmp_path: Path) -> None:
    before = [blockhash.image_digest(path) for path in points]
    raw_before = [raw_content(path, tmp_path) for path in points]
    assert len(set(before)) == 4
    chain.merge(points[1], points[2])  # drop point 2
    assert not points[1].exists()
    after = {path: blockhash.image_digest(path) for path in (points[0], points[2], points[3])}
    assert after == {points[0]: before[0], points[2]: before[2], points[3]: before[3]}
    assert raw_content(points[2], tmp_path) == raw_before[2]
    assert raw_content(points[3], tmp_path) == raw_before[3]
    assert chain.chain_of(points[3]) == [points[3], points[2], points[0]]
    subprocess.run(["qemu-img", "check", "-q", str(points[2])], check=True)
    # Dropping the oldest point: rp-1 absorbs rp-3 and becomes the standalone base.
    chain.merge(points[0], points[2])
    assert chain.backing_file(points[2]) is None
    assert blockhash.image_digest(points[3]) == before[3]
    assert blockhash.image_digest(points[2]) == before[2]


def test_merge_after_crash_and_mismatch(points: list[Path]) -> None:
    chain.merge(points[1], points[2])
    chain.merge(points[1], points[2])  # the rename happened already: nothing to do
    with pytest.raises(StandbyError):
        chain.merge(points[0], points[3])  # rp-4 is not an overlay of rp-1
    with pytest.raises(FileNotFound):
        chain.merge(points[1].with_name("nope-a"), points[1].with_name("nope-b"))


def test_refusals(points: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter):
        qemu_img.create_overlay(points[3], points[2])  # exists
    with pytest.raises(FileNotFound):
        qemu_img.create_overlay(tmp_path / "x.qcow2", tmp_path / "missing.qcow2")
    with pytest.raises(InvalidParameter):
        qemu_img.create(tmp_path / "y.qcow2", 0)
    (tmp_path / "junk.qcow2").write_bytes(b"not an image")
    with pytest.raises(StandbyError):
        blockhash.image_digest(tmp_path / "junk.qcow2")


def test_nbd_writes_zeroes_as_zero_clusters_over_a_backing(points: list[Path], tmp_path: Path) -> None:
    top = points[3].with_name("rp-0000000005.qcow2.partial")
    qemu_img.create_overlay(top, points[3])
    with chain.NbdServer(top, writable=True) as server, server.connect() as client:
        client.write_many([(0, None, 1 * MiB), (2 * MiB, b"\x55" * 4096, 4096)])
        client.flush()
    data = raw_content(top, tmp_path)
    assert data[: 1 * MiB] == bytes(1 * MiB)  # reads zero, not through to rp-4's 0x41 / rp-1's 0x11
    assert data[2 * MiB: 2 * MiB + 4096] == b"\x55" * 4096
    assert data[3 * MiB: 3 * MiB + 100 * 1024] == b"\x31" * 100 * 1024  # from the backing chain
