"""The replication log: what one cycle ships from the primary to the replica (DESIGN §4).

A log is a header followed by frames and an END frame::

    b"SBYLOG01" | u32 header length | header JSON (utf-8)
    frame*      : u8 type | u8 flags | u16 disk index | u64 offset | u32 length | u32 stored length
                  | 16-byte xxh3-128 of the uncompressed data | stored bytes
    END frame   : type END, offset = data bytes described, length = number of frames,
                  checksum = xxh3-128 over the header and every frame header (order and completeness)

DATA frames carry bytes (zstd-compressed when that is smaller); ZERO frames carry none and mean "these bytes
read as zeros" (the replica writes them with NBD WRITE_ZEROES). Every frame is verified on arrival; a log that
ends before its END frame, or whose END does not match, is rejected whole — the replica applies a log
completely or not at all.

The encoder and the decoder are incremental so the log can stream over HTTP without being held in memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

import xxhash
import zstandard

from standby.domain.errors import StandbyError

MAGIC: Final = b"SBYLOG01"
_PREFIX = struct.Struct(">8sI")
_FRAME = struct.Struct(">BBHQII16s")
FRAME_HEADER_SIZE: Final = _FRAME.size
#: Largest data frame: reads are split to this size so the replica's memory stays bounded.
MAX_FRAME: Final = 4 * 1024 * 1024
_MAX_HEADER: Final = 1024 * 1024
_FLAG_ZSTD: Final = 1
_ZERO_DIGEST: Final = bytes(16)


class FrameType(IntEnum):
    """What a frame says about its byte range."""

    DATA = 1
    ZERO = 2
    END = 3


class LogKind(StrEnum):
    """Why the log was cut."""

    INITIAL = "initial"  # a full copy of the allocated, non-zero data (initial replication)
    DELTA = "delta"  # the blocks dirtied since the parent cut
    RESYNC = "resync"  # the blocks whose hashes differed (resynchronization, seeded IR, failback)
    PLANNED = "planned"  # the last delta of a planned failover


class LogCorrupt(StandbyError):
    """The log is truncated, out of order or fails a checksum; nothing of it may be applied."""


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """A disk the log covers: its id and size in bytes."""

    disk_id: str
    size: int


@dataclass(frozen=True, slots=True)
class LogHeader:
    """What the replica needs to know before the first frame."""

    vm_id: str
    relationship_index: int
    sequence: int
    parent_sequence: int
    kind: LogKind
    cut_time: str  # ISO-8601 UTC
    disks: tuple[DiskInfo, ...]
    application_consistent: bool = False
    compression: bool = True
    #: Extension data (e.g. full-disk digests for verification); JSON values only.
    extra: dict[str, object] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialize as the prefix of the log."""
        body = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()
        return _PREFIX.pack(MAGIC, len(body)) + body

    @classmethod
    def from_json(cls, body: bytes) -> LogHeader:
        """Parse the JSON part of a header."""
        try:
            raw = json.loads(body)
            disks = tuple(DiskInfo(str(d["disk_id"]), int(d["size"])) for d in raw["disks"])
            return cls(
                vm_id=str(raw["vm_id"]),
                relationship_index=int(raw["relationship_index"]),
                sequence=int(raw["sequence"]),
                parent_sequence=int(raw["parent_sequence"]),
                kind=LogKind(raw["kind"]),
                cut_time=str(raw["cut_time"]),
                disks=disks,
                application_consistent=bool(raw.get("application_consistent", False)),
                compression=bool(raw.get("compression", True)),
                extra=dict(raw.get("extra", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LogCorrupt(f"log header is malformed: {exc}", message_id="LogCorrupt") from exc


@dataclass(frozen=True, slots=True)
class Frame:
    """One verified frame: ``data`` is None for a zero range."""

    disk_index: int
    offset: int
    length: int
    data: bytes | None
    #: The xxh3-128 the frame carried (verified against ``data``); zero bytes for a ZERO frame.
    checksum: bytes = _ZERO_DIGEST


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What the END frame vouched for."""

    frames: int
    data_bytes: int


def is_zero(data: bytes | memoryview) -> bool:
    """Whether every byte is zero (fast path through ``bytes.count``)."""
    view = memoryview(data)
    return view.nbytes == 0 or (view[0] == 0 and bytes(view).count(0) == view.nbytes)


class LogEncoder:
    """Builds a log piece by piece: ``header()``, then ``frame(...)`` for each range, then ``end()``."""

    def __init__(self, header: LogHeader, level: int = 1) -> None:
        self.header = header
        self._compressor = zstandard.ZstdCompressor(level=level) if header.compression else None
        self._digest = xxhash.xxh3_128()
        self.frames = 0
        self.data_bytes = 0
        self.wire_bytes = 0
        self._header_bytes = header.to_bytes()
        self._digest.update(self._header_bytes)

    def header_bytes(self) -> bytes:
        """The log's prefix (magic, length, JSON)."""
        self.wire_bytes += len(self._header_bytes)
        return self._header_bytes

    def frame(self, disk_index: int, offset: int, data: bytes) -> bytes:
        """A DATA frame, or a ZERO frame when ``data`` is all zeros."""
        if len(data) > MAX_FRAME:
            raise ValueError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
        if is_zero(data):
            return self.zero(disk_index, offset, len(data))
        checksum = xxhash.xxh3_128_digest(data)
        stored, flags = data, 0
        if self._compressor is not None:
            packed = self._compressor.compress(data)
            if len(packed) < len(data):
                stored, flags = packed, _FLAG_ZSTD
        return self._emit(FrameType.DATA, flags, disk_index, offset, len(data), stored, checksum)

    def zero(self, disk_index: int, offset: int, length: int) -> bytes:
        """A ZERO frame (no payload)."""
        return self._emit(FrameType.ZERO, 0, disk_index, offset, length, b"", _ZERO_DIGEST)

    def end(self) -> bytes:
        """The END frame, vouching for everything before it."""
        head = _FRAME.pack(FrameType.END, 0, 0, self.data_bytes, self.frames, 0, self._digest.digest())
        self.wire_bytes += len(head)
        return head

    def _emit(  # noqa: PLR0917 - one argument per wire field
        self, kind: FrameType, flags: int, disk_index: int, offset: int, length: int, stored: bytes,
        checksum: bytes,
    ) -> bytes:
        if not 0 <= disk_index < len(self.header.disks):
            raise ValueError(f"disk index {disk_index} is not in the log header")
        head = _FRAME.pack(kind, flags, disk_index, offset, length, len(stored), checksum)
        self._digest.update(head)
        self.frames += 1
        self.data_bytes += length
        self.wire_bytes += len(head) + len(stored)
        return head + stored


class LogDecoder:
    """Incremental reader: ``feed`` bytes as they arrive, take verified frames, then ``finish``."""

    def __init__(self, max_header: int = _MAX_HEADER) -> None:
        self._buffer = bytearray()
        self._digest = xxhash.xxh3_128()
        self._decompressor = zstandard.ZstdDecompressor()
        self._max_header = max_header
        self.header: LogHeader | None = None
        self.summary: LogSummary | None = None
        self._frames = 0
        self._data_bytes = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Add received bytes; return every frame now complete and verified."""
        if self.summary is not None and chunk:
            raise LogCorrupt("data after the END frame", message_id="LogCorrupt")
        self._buffer += chunk
        frames: list[Frame] = []
        if self.header is None and not self._take_header():
            return frames
        while self.summary is None:
            frame = self._take_frame()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def finish(self) -> LogSummary:
        """Confirm the log ended with a valid END frame and nothing else."""
        if self.summary is None or self._buffer:
            raise LogCorrupt("the log ended before its END frame", message_id="LogCorrupt")
        return self.summary

    def _take_header(self) -> bool:
        if len(self._buffer) < _PREFIX.size:
            return False
        magic, length = _PREFIX.unpack_from(self._buffer)
        if magic != MAGIC:
            raise LogCorrupt("not a standby replication log", message_id="LogCorrupt")
        if length > self._max_header:
            raise LogCorrupt(f"log header of {length} bytes is too large", message_id="LogCorrupt")
        if len(self._buffer) < _PREFIX.size + length:
            return False
        raw = bytes(self._buffer[: _PREFIX.size + length])
        self.header = LogHeader.from_json(raw[_PREFIX.size :])
        self._digest.update(raw)
        del self._buffer[: len(raw)]
        return True

    def _take_frame(self) -> Frame | None:
        if len(self._buffer) < FRAME_HEADER_SIZE:
            return None
        kind, flags, disk, offset, length, stored, checksum = _FRAME.unpack_from(self._buffer)
        if kind == FrameType.END:
            self._check_end(offset, length, checksum)
            del self._buffer[:FRAME_HEADER_SIZE]
            return None
        if len(self._buffer) < FRAME_HEADER_SIZE + stored:
            return None
        self._check_frame_header(kind, disk, offset, length, stored)
        # One copy at most: the payload is decompressed (or copied) straight out of the buffer.
        with memoryview(self._buffer) as view:
            self._digest.update(view[:FRAME_HEADER_SIZE])
            data = None if kind == FrameType.ZERO else self._unpack(
                view[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + stored], flags, length)
        del self._buffer[: FRAME_HEADER_SIZE + stored]
        self._frames += 1
        self._data_bytes += length
        if data is None:
            return Frame(disk, offset, length, None)
        if xxhash.xxh3_128_digest(data) != checksum:
            raise LogCorrupt(f"checksum mismatch in frame at disk {disk} offset {offset}",
                             message_id="LogCorrupt")
        return Frame(disk, offset, length, data, checksum)

    def _check_frame_header(self, kind: int, disk: int, offset: int, length: int, stored: int) -> None:
        assert self.header is not None
        if kind not in (FrameType.DATA, FrameType.ZERO):
            raise LogCorrupt(f"unknown frame type {kind}", message_id="LogCorrupt")
        if disk >= len(self.header.disks):
            raise LogCorrupt(f"frame names disk index {disk}, the log has {len(self.header.disks)}",
                             message_id="LogCorrupt")
        if offset + length > self.header.disks[disk].size or length > MAX_FRAME or stored > MAX_FRAME + 1024:
            raise LogCorrupt(f"frame at offset {offset} length {length} is out of bounds",
                             message_id="LogCorrupt")

    def _unpack(self, payload: memoryview, flags: int, length: int) -> bytes:
        if not flags & _FLAG_ZSTD:
            data = bytes(payload)
        else:
            try:
                data = self._decompressor.decompress(payload, max_output_size=length)
            except zstandard.ZstdError as exc:
                raise LogCorrupt(f"frame does not decompress: {exc}", message_id="LogCorrupt") from exc
        if len(data) != length:
            raise LogCorrupt("frame payload has the wrong length", message_id="LogCorrupt")
        return data

    def _check_end(self, data_bytes: int, frames: int, checksum: bytes) -> None:
        if frames != self._frames or data_bytes != self._data_bytes or checksum != self._digest.digest():
            raise LogCorrupt("the END frame does not match the frames received", message_id="LogCorrupt")
        self.summary = LogSummary(frames, data_bytes)


def encode_log(header: LogHeader, frames: Iterable[tuple[int, int, bytes | None, int]]) -> Iterator[bytes]:
    """Encode ``(disk_index, offset, data or None for zeros, length)`` items into log chunks."""
    encoder = LogEncoder(header)
    yield encoder.header_bytes()
    for disk_index, offset, data, length in frames:
        if data is None:
            yield encoder.zero(disk_index, offset, length)
        else:
            yield encoder.frame(disk_index, offset, data)
    yield encoder.end()
