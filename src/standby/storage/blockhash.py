"""Block hashes of a disk: xxh3-128 per block, all-zero blocks as 16 zero bytes (the peer protocol's rule).

Both sides of a resync compute them with the same rule and compare (DESIGN §4):

* the primary over its cut's NBD export (``nbd_hashes``: holes skipped through ``base:allocation``,
  ``HASH_READ`` bytes a request, ``HASH_DEPTH`` in flight);
* the replica over a recovery point's chain of files (``image_block_hashes``). Nothing writes those files
  while it hashes (the caller holds the VM's lock), so it reads them directly: ``qemu-img map`` tells where
  each extent's bytes lie (which file of the chain, which offset, or zeros), and the data is read with
  ``preadv`` — no qemu-nbd and no NBD copy per byte (bench P8). A chain holding clusters that cannot be read
  in place (compressed or encrypted clusters, an external data file) is hashed through a read-only
  qemu-nbd instead; the result is the same.

``image_digest`` is the full-image digest built from ``DIGEST_BLOCK`` hashes. Everything here is
synchronous; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from standby.domain.errors import InvalidParameter
from standby.storage import qemu_img
from standby.storage.chain import BASE_ALLOCATION, ChainError, NbdServer, walk_chain
from standby.storage.nbd import STATE_ZERO, Extent, NbdClient

ZERO_HASH = bytes(16)
#: Block size of the full-image digest (``image_digest``, the log header's ``extra["digests"]``).
DIGEST_BLOCK = 1024 * 1024
#: Bytes per NBD read while hashing (runs of blocks up to this size; a larger block is one read), with
#: ``HASH_DEPTH`` in flight. Measured here through qemu-nbd on a unix socket (paired, page cache): 256 KiB
#: requests read at ~1150 MiB/s, 512 KiB ~1000, 1 MiB ~470, 4 MiB slower still — bigger is not better.
HASH_READ = 256 * 1024
HASH_DEPTH = 8
_MIN_BLOCK, _MAX_BLOCK = 512, 32 * 1024 * 1024


def block_hash(data: bytes) -> bytes:
    """xxh3-128 of one block; an all-zero block hashes as 16 zero bytes (the peer protocol's rule)."""
    if not data or (data[0] == 0 and data.count(0) == len(data)):
        return ZERO_HASH
    return xxhash.xxh3_128_digest(data)


class BlockHasher:
    """``block_hash`` over views without copying: the hash first, and only when it equals the hash of
    zeros (in practice: the block is zeros) a byte compare to be exact."""

    def __init__(self, block_size: int) -> None:
        self._zeros = bytes(block_size)
        self._zero_digest = xxhash.xxh3_128_digest(self._zeros)

    def hash(self, view: memoryview) -> bytes:
        """The block's hash (a short last block takes the plain rule)."""
        digest = xxhash.xxh3_128_digest(view)
        if len(view) == len(self._zeros):
            if digest == self._zero_digest and view.tobytes() == self._zeros:
                return ZERO_HASH
            return digest
        return block_hash(view.tobytes())


def _check_block_size(block_size: int) -> None:
    if block_size < _MIN_BLOCK or block_size > _MAX_BLOCK:
        raise InvalidParameter(f"block size {block_size} is outside 512 B .. 32 MiB",
                               message_id="InvalidBlockSize", size=str(block_size))


# -- over NBD (the primary's cut; the fallback for chains that cannot be read in place) ---------------------


def _zero_blocks(extents: Iterable[Extent], block_size: int, size: int) -> set[int]:
    """Indexes of the blocks that lie entirely in extents reading as zeros."""
    zero: set[int] = set()
    for extent in extents:
        if not extent.flags & STATE_ZERO:
            continue
        first = -(-extent.offset // block_size)
        end = extent.end if extent.end < size else size
        last = end // block_size if end < size else -(-size // block_size)
        zero.update(range(first, last))
    return zero


def nbd_block_hashes(client: NbdClient, block_size: int, *, depth: int = HASH_DEPTH) -> Iterator[bytes]:
    """One 16-byte hash per ``block_size`` block of the export, in order (holes are never read)."""
    hashes, _ = nbd_hashes(client, block_size, depth=depth)
    for index in range(0, len(hashes), 16):
        yield hashes[index:index + 16]


def nbd_hashes(client: NbdClient, block_size: int, *, depth: int = HASH_DEPTH,
               read_size: int = HASH_READ) -> tuple[bytes, int]:
    """The block hashes of the export (``block_hash`` of each block, joined) and the bytes read for them.

    Blocks lying in extents that ``base:allocation`` reports as zeros are not read; the others are read
    ``read_size`` at a time (runs of whole blocks) with ``depth`` requests in flight.
    """
    _check_block_size(block_size)
    size = client.size
    count = -(-size // block_size)
    zero = _zero_blocks(client.block_status(BASE_ALLOCATION), block_size, size) if (
        BASE_ALLOCATION in client.contexts) else set()
    digests = [ZERO_HASH] * count
    hasher = BlockHasher(block_size)
    read = 0
    for offset, data in client.read_many(_runs(count, zero, block_size, size, read_size), depth=depth):
        read += len(data)
        view = memoryview(data)
        first = offset // block_size
        for index, start in enumerate(range(0, len(data), block_size), first):
            digests[index] = hasher.hash(view[start:start + block_size])
    return b"".join(digests), read


def _runs(count: int, zero: set[int], block_size: int, size: int,
          read_size: int) -> Iterator[tuple[int, int]]:
    """Reads covering every block not in ``zero``: consecutive blocks joined up to ``read_size`` bytes."""
    per_read = max(1, read_size // block_size)
    index = 0
    while index < count:
        if index in zero:
            index += 1
            continue
        end = index + 1
        while end < count and end - index < per_read and end not in zero:
            end += 1
        offset = index * block_size
        yield offset, min(end * block_size, size) - offset
        index = end


def _nbd_image_hashes(path: Path, block_size: int) -> bytes:
    with NbdServer(path, writable=False) as server, server.connect([BASE_ALLOCATION]) as client:
        return nbd_hashes(client, block_size)[0]


# -- from the chain's files -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappedExtent:
    """One extent of ``qemu-img map``: guest ``start``..``end`` reads as zeros, or from ``layer`` (0 = the
    top of the chain) at ``offset``."""

    start: int
    end: int
    layer: int | None  # None: reads as zeros
    offset: int = 0


class NotInPlace(Exception):
    """The chain holds data that cannot be read from its file as is (compressed, encrypted)."""


def map_chain(path: Path) -> list[MappedExtent]:
    """Where each guest byte of the qcow2 ``path`` (with its backing chain) lies; ``NotInPlace`` when some
    data cluster has no plain offset in a file of the chain."""
    rows = qemu_img.image_map(path, shared=False)
    try:
        return [_mapped(row) for row in rows]
    except (ValueError, KeyError, TypeError) as bad:
        raise ChainError(f"qemu-img map {path} printed what we cannot read: {bad}",
                         message_id="ImageOperationFailed", path=str(path)) from None


def _mapped(row: dict[str, object]) -> MappedExtent:
    start, length = int(str(row["start"])), int(str(row["length"]))
    if row.get("zero") or not row.get("data"):
        return MappedExtent(start, start + length, None)
    if "offset" not in row:
        raise NotInPlace(f"data at {start} has no offset in its file")
    return MappedExtent(start, start + length, int(str(row["depth"])), int(str(row["offset"])))


def mapped_hashes(extents: list[MappedExtent], files: list[int], size: int, block_size: int) -> bytes:
    """The block hashes of a ``size``-byte disk laid out as ``extents`` over the open ``files`` (one per
    layer, top first): zero runs are not read, every other block is read into one reused buffer."""
    count = -(-size // block_size)
    digests = [ZERO_HASH] * count
    hasher = BlockHasher(block_size)
    layout = _Layout(extents, files, memoryview(bytes(block_size)))
    buffer = memoryview(bytearray(block_size))
    cursor = 0
    index = 0
    while index < count:
        start = index * block_size
        while cursor < len(extents) and extents[cursor].end <= start:
            cursor += 1
        if cursor == len(extents):
            break  # past the map's end: zeros
        extent = extents[cursor]
        end = min(start + block_size, size)
        if extent.layer is None and extent.end >= end:
            index = max(index + 1, extent.end // block_size)  # blocks wholly inside this zero extent
            continue
        view = buffer[:end - start]
        layout.fill(view, start, cursor)
        digests[index] = hasher.hash(view)
        index += 1
    return b"".join(digests)


@dataclass(frozen=True, slots=True)
class _Layout:
    extents: list[MappedExtent]
    files: list[int]
    zeros: memoryview

    def fill(self, view: memoryview, start: int, cursor: int) -> None:
        """Read guest bytes ``start``.. into ``view``; ``cursor`` indexes the extent holding ``start``."""
        position, end = start, start + len(view)
        while position < end:
            if cursor == len(self.extents):
                view[position - start:] = self.zeros[:end - position]
                return
            extent = self.extents[cursor]
            take = min(extent.end, end) - position
            target = view[position - start:position - start + take]
            if extent.layer is None:
                target[:] = self.zeros[:take]
            else:
                _pread_exact(self.files[extent.layer], target, extent.offset + position - extent.start)
            position += take
            cursor += 1


def _pread_exact(fd: int, target: memoryview, offset: int) -> None:
    done = 0
    while done < len(target):
        got = os.preadv(fd, [target[done:]], offset + done)
        if got == 0:
            raise ChainError(f"an image file ends before offset {offset + done} that qemu-img map names",
                             message_id="ImageOperationFailed")
        done += got


def _file_hashes(path: Path, block_size: int) -> bytes:
    links = walk_chain(path)
    if any(link.data_file is not None for link in links):
        raise NotInPlace("an external data file")
    extents = map_chain(path)
    with contextlib.ExitStack() as files:
        fds = [_opened(files, link.path) for link in links]
        return mapped_hashes(extents, fds, links[0].size, block_size)


def _opened(files: contextlib.ExitStack, path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    files.callback(os.close, fd)
    return fd


def image_block_hashes(path: Path, block_size: int) -> bytes:
    """The block hashes of a qcow2 image with its backing chain. The caller keeps the chain's files
    unchanged meanwhile (the replica hashes under the VM's lock)."""
    _check_block_size(block_size)
    try:
        return _file_hashes(path, block_size)
    except NotInPlace:
        return _nbd_image_hashes(path, block_size)


def digest_of_hashes(hashes: Iterable[bytes]) -> str:
    """The full-image digest: xxh3-128 (hex) over the ``DIGEST_BLOCK`` block hashes in order."""
    digest = xxhash.xxh3_128()
    for item in hashes:
        digest.update(item)
    return digest.hexdigest()


def nbd_digest(client: NbdClient) -> str:
    """``image_digest`` of an NBD export (the primary computes it over its fleecing export)."""
    return digest_of_hashes(nbd_block_hashes(client, DIGEST_BLOCK))


def image_digest(path: Path) -> str:
    """The full-image digest of a qcow2 image with its backing chain."""
    return digest_of_hashes([image_block_hashes(path, DIGEST_BLOCK)])
