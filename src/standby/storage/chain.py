"""qcow2 recovery-point chains (DESIGN §4, §7); images are made with ``storage.qemu_img``.

* ``merge(older, newer)``: drop the point of ``older`` — commit ``newer``'s delta into ``older`` (its
  backing), then rename ``older`` over ``newer``; whoever read ``newer`` reads the same bytes afterwards;
* ``walk_chain`` / ``read_header``: the backing chain read from the qcow2 headers themselves (our own parser
  of QEMU's docs/interop/qcow2.txt), checked file by file — constant work per link, no qemu-img process;
  ``backing_file`` and ``chain_of`` use it;
* ``NbdServer``: ``qemu-nbd`` (``storage.qemu_nbd``) serving one image on a private unix socket.

Block hashes of images and exports live in ``storage.blockhash``.

Everything here is synchronous; the engine calls it through ``asyncio.to_thread``. ``qemu-img`` and
``qemu-nbd`` failures become ``domain.errors`` in ``storage.qemu_img``, once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from standby.domain.errors import FileNotFound, StandbyError, Unavailable
from standby.storage import qemu_img
from standby.storage.nbd import NbdClient
from standby.storage.qemu_nbd import NbdExport, QemuNbd

EXPORT = "disk"
BASE_ALLOCATION = "base:allocation"


class ChainError(StandbyError):
    """A recovery-point image or its backing chain cannot be used as it is."""


def backing_file(path: Path) -> Path | None:
    """The path of the image's backing file (relative names joined to the image's folder, as QEMU does), or
    None for a standalone image; read from the qcow2 header (a raw image has no backing file)."""
    if not path.is_file():
        raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path))
    header = _read_qcow2(path, probe=True)
    return header.backing if header is not None else None


def chain_of(path: Path) -> list[Path]:
    """The image and its backing files, top first (checked as ``walk_chain`` does)."""
    return [link.path for link in walk_chain(path, top_format=None)]


def merge(older: Path, newer: Path) -> None:
    """Drop ``older``'s point: commit ``newer`` into it, then rename it over ``newer`` (DESIGN §7).

    Safe to repeat after a crash: while ``older`` still exists the commit is redone (it writes the same
    bytes); once the rename happened there is nothing left to do.
    """
    if not older.exists():
        if newer.exists():
            return  # the rename already happened
        raise FileNotFound(f"neither {older} nor {newer} exists", message_id="DiskFileMissing",
                           path=str(newer))
    backing = backing_file(newer)
    if backing is None or backing.resolve() != older.resolve():
        raise ChainError(f"{newer} is not an overlay of {older}", message_id="ChainMismatch", path=str(newer))
    qemu_img.commit(newer)
    fsync_file(older)
    os.replace(older, newer)
    fsync_dir(newer.parent)


def fsync_file(path: Path) -> None:
    """Make a file's content durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames and creations in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- backing chains from the qcow2 headers ----------------------------------------------------------------
# Opening a chain with qemu-img or qemu-nbd costs time linear in its depth (bench P7: ~5 s at 840 points);
# reading each file's first cluster does not open anything else, so a failover overlay can be created with
# ``qemu-img create -u`` after this walk has checked the chain (constant time at any depth for the overlay).

QCOW2_MAGIC = b"QFI\xfb"
#: Header fields up to ``nb_snapshots``/``snapshots_offset`` (version 2) and the version 3 additions.
_V2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")
_V3_EXTRA = struct.Struct(">QQQII")
_EXT_HEAD = struct.Struct(">II")
_EXT_END, _EXT_BACKING_FORMAT, _EXT_DATA_FILE = 0x00000000, 0xE2792ACA, 0x44415441
#: Incompatible feature bits QEMU 7.2 knows (dirty, corrupt, external data file, compression type,
#: extended L2); any other bit makes QEMU refuse the image, so we refuse it too.
_KNOWN_INCOMPATIBLE = 0x1F
_CORRUPT = 0x2
#: What is read first: the header, its extensions and the backing name fit in it for every image qemu-img
#: makes; the spec only promises the first cluster (≤ 2 MiB), which is read when they do not.
_FIRST_READ = 4096
_MAX_BACKING_NAME = 1023  # QEMU's limit


@dataclass(frozen=True)
class ChainLink:
    """One image of a backing chain as its parent's header (or the caller) names it."""

    path: Path
    format: str  # "qcow2" or "raw"
    size: int  # virtual size in bytes (a raw file's length)
    data_file: Path | None = None  # a qcow2's external data file


@dataclass(frozen=True)
class Qcow2Header:
    """What the chain walk needs of a qcow2 header."""

    version: int
    size: int
    backing: Path | None
    backing_format: str | None
    data_file: Path | None


def read_header(path: Path) -> Qcow2Header:
    """Parse the qcow2 header of ``path`` (docs/interop/qcow2.txt); ``ChainError`` when it is not a usable
    qcow2 (wrong magic, unknown version or features, marked corrupt, names out of bounds)."""
    header = _read_qcow2(path, probe=False)
    assert header is not None
    return header


class _Short(Exception):
    """The part of the file read so far ends before a field the header points at."""


def _read_qcow2(path: Path, *, probe: bool) -> Qcow2Header | None:
    """The header of ``path``; with ``probe``, None when the file does not start with the qcow2 magic."""
    try:
        with path.open("rb") as image:
            data = image.read(_FIRST_READ)
            if data[:4] == QCOW2_MAGIC:
                try:
                    return _parse(path, data, complete=len(data) < _FIRST_READ)
                except _Short:
                    cluster = 1 << min(max(data[23], 9), 21) if len(data) >= 24 else _FIRST_READ
                    image.seek(0)
                    data = image.read(cluster)
    except FileNotFoundError:
        raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path)) from None
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror}") from None
    if data[:4] != QCOW2_MAGIC:
        if probe:
            return None
        raise ChainError(f"{path} is not a qcow2 image", message_id="BadImage", path=str(path))
    try:
        return _parse(path, data, complete=True)
    except _Short:
        raise _bad(path, "header fields point past its first cluster") from None


def _parse(path: Path, data: bytes, *, complete: bool) -> Qcow2Header:
    """Parse a header from the first bytes of the file (``complete``: nothing more is there to read)."""

    def need(end: int, what: str) -> None:
        if end > len(data):
            if not complete:
                raise _Short
            raise _bad(path, what)

    need(_V2_HEADER.size, "truncated header")
    (_, version, backing_offset, backing_size, cluster_bits, size, _crypt, _l1_size, _l1_offset,
     _refcount_offset, _refcount_clusters, _snapshots, _snapshots_offset) = _V2_HEADER.unpack_from(data)
    if version not in (2, 3):
        raise _bad(path, f"qcow2 version {version} is not supported")
    if not 9 <= cluster_bits <= 21:
        raise _bad(path, f"cluster bits {cluster_bits} out of range")
    header_length = _V2_HEADER.size
    if version == 3:
        need(_V2_HEADER.size + _V3_EXTRA.size, "truncated version 3 header")
        incompatible, _compatible, _autoclear, _refcount_order, header_length = _V3_EXTRA.unpack_from(
            data, _V2_HEADER.size)
        if incompatible & ~_KNOWN_INCOMPATIBLE:
            raise _bad(path, f"unknown incompatible features {incompatible:#x}")
        if incompatible & _CORRUPT:
            raise _bad(path, "QEMU marked it corrupt")
    cluster = 1 << cluster_bits
    backing = None
    if backing_offset:
        if backing_size == 0 or backing_size > _MAX_BACKING_NAME or backing_offset + backing_size > cluster:
            raise _bad(path, "backing file name out of bounds")
        need(backing_offset + backing_size, "backing file name out of bounds")
        backing = _linked(path, data[backing_offset:backing_offset + backing_size])
    extensions = _extensions(path, data, header_length, min(backing_offset or cluster, cluster), need)
    raw_format = extensions.get(_EXT_BACKING_FORMAT)
    data_file = extensions.get(_EXT_DATA_FILE)
    return Qcow2Header(version, size, backing, raw_format.decode("ascii", "replace") if raw_format else None,
                       _linked(path, data_file) if data_file else None)


def _extensions(path: Path, data: bytes, start: int, limit: int,
                need: Callable[[int, str], None]) -> dict[int, bytes]:
    """Header extensions (type → data) from ``start`` to the end marker, which must come before ``limit``."""
    found: dict[int, bytes] = {}
    offset = start
    while True:
        if offset + _EXT_HEAD.size > limit:
            raise _bad(path, "header extensions run past the header")
        need(offset + _EXT_HEAD.size, "header extensions run past the file")
        kind, length = _EXT_HEAD.unpack_from(data, offset)
        offset += _EXT_HEAD.size
        if kind == _EXT_END:
            return found
        if offset + length > limit:
            raise _bad(path, "header extension out of bounds")
        need(offset + length, "header extension out of bounds")
        found[kind] = data[offset:offset + length]
        offset += (length + 7) & ~7


def _linked(path: Path, raw_name: bytes) -> Path:
    """A file a header names, relative names joined to the naming image's folder (QEMU's rule)."""
    name = raw_name.decode("utf-8", "surrogateescape")
    if name.startswith("json:") or "\0" in name:
        raise _bad(path, f"names {name!r}, which is not a plain file")
    named = Path(name)
    return named if named.is_absolute() else path.parent / named


def _bad(path: Path, reason: str) -> ChainError:
    return ChainError(f"{path} is not a usable qcow2 image: {reason}", message_id="ImageOperationFailed",
                      path=str(path), reason=reason)


def walk_chain(top: Path, *, top_format: str | None = "qcow2") -> list[ChainLink]:
    """``top`` and every backing file under it, top first, each checked: it exists, it is the format its
    parent names (qcow2, or raw — which ends the chain; a missing format name is probed by the magic as
    QEMU does), its qcow2 header parses, its external data file exists, and no file appears twice.

    ``top_format`` None probes the top as well. Raises ``FileNotFound`` (a missing file), ``ChainError``
    (a malformed header, a loop, an unsupported format). Cost: one small read per link.
    """
    links: list[ChainLink] = []
    seen: set[tuple[int, int]] = set()
    path, fmt = top, top_format
    while True:
        found = _must_exist(path, top)
        if (found.st_dev, found.st_ino) in seen:
            raise ChainError(f"backing chain of {top} loops at {path}", message_id="ChainLoop", path=str(top))
        seen.add((found.st_dev, found.st_ino))
        if fmt not in (None, "qcow2", "raw"):
            raise ChainError(f"{path} in the backing chain of {top} is a {fmt} image; standby chains hold "
                             "qcow2 images (and raw at the bottom)", message_id="BadImage", path=str(path))
        header = None if fmt == "raw" else _read_qcow2(path, probe=fmt is None)
        if header is None:  # raw (named so, or probed): the bottom of the chain
            links.append(ChainLink(path, "raw", _raw_size(path)))
            return links
        if header.data_file is not None:
            _must_exist(header.data_file, top)
        links.append(ChainLink(path, "qcow2", header.size, header.data_file))
        if header.backing is None:
            return links
        path, fmt = header.backing, header.backing_format


def _must_exist(path: Path, top: Path) -> os.stat_result:
    try:
        found = path.stat()
    except OSError:
        raise FileNotFound(f"{path} in the backing chain of {top} does not exist",
                           message_id="DiskFileMissing", path=str(path)) from None
    if not (stat.S_ISREG(found.st_mode) or stat.S_ISBLK(found.st_mode)):
        raise ChainError(f"{path} in the backing chain of {top} is not a file", message_id="BadImage",
                         path=str(path))
    return found


def _raw_size(path: Path) -> int:
    with path.open("rb") as image:
        return image.seek(0, os.SEEK_END)


# -- qemu-nbd -----------------------------------------------------------------------------------------------


class NbdServer:
    """``qemu-nbd`` serving one qcow2 image (with its backing chain) on a private unix socket."""

    def __init__(self, image: Path, *, writable: bool) -> None:
        self.image = image
        self._dir = Path(tempfile.mkdtemp(prefix="standby-nbd-"))
        self.socket = self._dir / "nbd.sock"
        self._nbd = QemuNbd(NbdExport(image, self.socket, EXPORT, writable=writable, cache="writeback"))
        try:
            self._nbd.start()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def connect(self, meta_contexts: Iterable[str] = ()) -> NbdClient:
        """A client on this server's export."""
        try:
            return NbdClient.connect_unix(str(self.socket), EXPORT, meta_contexts)
        except Unavailable:
            ended = self._nbd.exited(timeout=2)
            if ended is None:
                raise
            raise ended from None

    def close(self) -> None:
        """Stop qemu-nbd (it flushes on SIGTERM) and remove the socket folder."""
        self._nbd.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NbdServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- hashes -------------------------------------------------------------------------------------------------


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists (cleanup paths must not raise)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
