"""The workload writer's record format, on the host side (the C writer, ``writer.c``, is its twin).

A record is 512 bytes, little endian::

    0  magic "SBYREC01"   8  writer id u32   12  flags u32 (bit 0: cite set)   16  sequence u64
    24 cited writer u32   28 reserved u32    32  cited sequence u64            40  payload (464 bytes)
    504 tail magic "SBYE" 508 CRC-32 (zlib) of bytes 0..507

The payload is derived from (writer, sequence), so a record that carries the right checksum but was written
for another position, or a stale block from an earlier run, is still recognised as wrong.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum

RECORD_SIZE = 512
MAGIC = b"SBYREC01"
TAIL = b"SBYE"
FLAG_CITE = 1
_PAYLOAD_WORDS = 58
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_HEADER = struct.Struct("<8sIIQIIQ")
# 58 copies of a 64-bit value are ``h * _REPUNIT``: the words never carry into each other.
_REPUNIT = sum(1 << (64 * i) for i in range(_PAYLOAD_WORDS))
_TABLE = sum((((i + 1) * _GOLDEN) & _MASK) << (64 * i) for i in range(_PAYLOAD_WORDS))


class RecordStatus(StrEnum):
    """What one 512-byte slot holds."""

    VALID = "valid"
    EMPTY = "empty"  # all zero: never written
    CORRUPT = "corrupt"  # not a record, or a record whose checksum fails (torn or damaged)
    MISPLACED = "misplaced"  # a good record, but not the one this position should hold


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record."""

    writer: int
    seq: int
    cite: tuple[int, int] | None = None


def _splitmix64(x: int) -> int:
    z = (x + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def payload(writer: int, seq: int) -> bytes:
    """The 464 payload bytes of record (writer, seq)."""
    h = _splitmix64(((writer << 40) ^ seq) & _MASK)
    return ((h * _REPUNIT) ^ _TABLE).to_bytes(_PAYLOAD_WORDS * 8, "little")


def encode(writer: int, seq: int, cite: tuple[int, int] | None = None) -> bytes:
    """The exact 512 bytes the writer puts on disk for (writer, seq)."""
    cw, cs = cite if cite is not None else (0, 0)
    flags = FLAG_CITE if cite is not None else 0
    head = _HEADER.pack(MAGIC, writer, flags, seq, cw, 0, cs) + payload(writer, seq) + TAIL
    return head + struct.pack("<I", zlib.crc32(head))


def decode(block: bytes) -> Record | None:
    """The record in ``block`` if its magic, checksum and derived payload hold, else None."""
    if len(block) != RECORD_SIZE or block[:8] != MAGIC or block[504:508] != TAIL:
        return None
    if struct.unpack_from("<I", block, 508)[0] != zlib.crc32(block[:508]):
        return None
    _, writer, flags, seq, cw, _, cs = _HEADER.unpack_from(block)
    if block[40:504] != payload(writer, seq):
        return None
    return Record(writer=writer, seq=seq, cite=(cw, cs) if flags & FLAG_CITE else None)


def classify(block: bytes, writer: int, position: int) -> tuple[RecordStatus, Record | None]:
    """What the slot at ``position`` holds, for a stream written by ``writer``."""
    if not block.strip(b"\0"):
        return RecordStatus.EMPTY, None
    rec = decode(block)
    if rec is None:
        return RecordStatus.CORRUPT, None
    if rec.writer != writer or rec.seq != position:
        return RecordStatus.MISPLACED, rec
    return RecordStatus.VALID, rec
