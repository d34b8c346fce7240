"""mapped_hashes over hand-made layouts: which bytes each block reads from which file; what it refuses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from standby.domain.errors import StandbyError
from standby.storage.blockhash import ZERO_HASH, MappedExtent, mapped_hashes

BLOCK = 4096


def _hashes(data: bytes, block: int = BLOCK) -> bytes:
    pieces = (data[offset:offset + block] for offset in range(0, len(data), block))
    return b"".join(ZERO_HASH if p.count(0) == len(p) else xxhash.xxh3_128_digest(p) for p in pieces)


@pytest.fixture()
def files(tmp_path: Path) -> Iterator[list[int]]:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    top.write_bytes(b"T" * 3 * BLOCK)
    bottom.write_bytes(bytes(range(256)) * (8 * BLOCK // 256))
    fds = [os.open(top, os.O_RDONLY), os.open(bottom, os.O_RDONLY)]
    yield fds
    for fd in fds:
        os.close(fd)


def test_each_extent_reads_its_own_file_and_offset(files: list[int]) -> None:
    bottom = bytes(range(256)) * (8 * BLOCK // 256)
    size = 5 * BLOCK + 100  # the last block is short
    extents = [MappedExtent(0, 1000, 1, 0),  # bottom, same offset
               MappedExtent(1000, 3000, 0, BLOCK),  # top, somewhere else
               MappedExtent(3000, 2 * BLOCK + 50, None),  # zeros across a block edge
               MappedExtent(2 * BLOCK + 50, 4 * BLOCK, 1, 2 * BLOCK + 50),
               MappedExtent(4 * BLOCK, size, None)]
    content = bottom[:1000] + b"T" * 2000 + bytes(2 * BLOCK + 50 - 3000) + bottom[2 * BLOCK + 50:4 * BLOCK]
    content += bytes(size - len(content))
    assert mapped_hashes(extents, files, size, BLOCK) == _hashes(content)


def test_zero_runs_are_not_read(files: list[int]) -> None:
    size = 1 << 40  # a terabyte of zeros would take hours to read: it must be skipped
    hashes = mapped_hashes([MappedExtent(0, size, None)], files, size, 64 * 1024 * 1024 // 2)
    assert hashes == ZERO_HASH * (size // (32 * 1024 * 1024))


def test_a_map_shorter_than_the_disk_reads_zeros_past_its_end(files: list[int]) -> None:
    hashes = mapped_hashes([MappedExtent(0, BLOCK + 10, 0, 0)], files, 3 * BLOCK, BLOCK)
    assert hashes == _hashes(b"T" * (BLOCK + 10) + bytes(2 * BLOCK - 10))


def test_data_beyond_the_file_end_is_refused(files: list[int]) -> None:
    with pytest.raises(StandbyError, match="ends before"):
        mapped_hashes([MappedExtent(0, 2 * BLOCK, 0, 2 * BLOCK)], files, 2 * BLOCK, BLOCK)
