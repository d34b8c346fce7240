"""The test guest's record format, verifier, kernel extraction and cpio writer, on synthetic data."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from standby.domain.errors import InvalidParameter
from standby.guest.kernel import extract_vmlinux, modules_from_show_depends
from standby.guest.record import RECORD_SIZE, Record, RecordStatus, classify, decode, encode, payload
from standby.guest.verify import scan

WRITER_C = Path(__file__).parents[2] / "src/standby/guest/writer.c"


def stream(*blocks: bytes) -> bytes:
    return b"".join(blocks)


def test_record_round_trip_and_layout() -> None:
    rec = encode(7, 12345, cite=(3, 99))
    assert len(rec) == RECORD_SIZE
    assert rec[:8] == b"SBYREC01" and rec[504:508] == b"SBYE"
    assert decode(rec) == Record(writer=7, seq=12345, cite=(3, 99))
    assert decode(encode(7, 1)) == Record(7, 1, None)
    assert payload(7, 1) != payload(7, 2) != payload(8, 1)


def test_any_flipped_byte_is_caught() -> None:
    rec = bytearray(encode(1, 42))
    for pos in (0, 9, 17, 100, 503, 506, 510):
        damaged = bytearray(rec)
        damaged[pos] ^= 0x01
        assert decode(bytes(damaged)) is None, pos


def test_classify_positions() -> None:
    assert classify(bytes(RECORD_SIZE), 0, 0)[0] is RecordStatus.EMPTY
    assert classify(encode(0, 5), 0, 5)[0] is RecordStatus.VALID
    assert classify(encode(0, 5), 0, 6)[0] is RecordStatus.MISPLACED
    assert classify(encode(1, 5), 0, 5)[0] is RecordStatus.MISPLACED
    assert classify(b"x" * RECORD_SIZE, 0, 0)[0] is RecordStatus.CORRUPT


def test_exact_prefix_then_zeros() -> None:
    data = stream(*(encode(2, i) for i in range(100))) + bytes(3 << 20)
    report = scan(iter([data[i : i + 4096 + 7] for i in range(0, len(data), 4096 + 7)]))
    assert (report.writer, report.records, report.exact_prefix, report.last_seq) == (2, 100, True, 99)
    assert report.problems == ()


def test_empty_image() -> None:
    report = scan(iter([bytes(1 << 20)]))
    assert (report.records, report.exact_prefix, report.last_seq) == (0, True, None)


def test_torn_record_in_the_middle_is_reported() -> None:
    torn = encode(0, 3)[:256] + bytes(256)
    data = stream(encode(0, 0), encode(0, 1), encode(0, 2), torn, encode(0, 4))
    report = scan(iter([data]))
    assert report.records == 3
    assert not report.exact_prefix
    assert report.corrupt == 1 and report.stray == 1
    assert [(p.position, p.status) for p in report.problems] == [(3, "corrupt"), (4, "stray")]


def test_gap_then_record_is_not_a_prefix() -> None:
    data = stream(encode(0, 0), bytes(RECORD_SIZE), encode(0, 2))
    report = scan(iter([data]))
    assert report.records == 1 and not report.exact_prefix and report.stray == 1


def test_partial_record_at_end_of_a_file_is_torn() -> None:
    data = stream(encode(0, 0), encode(0, 1)[:100])
    report = scan(iter([data]))
    assert report.records == 1 and report.corrupt == 1 and not report.exact_prefix


def test_cites_are_collected() -> None:
    data = stream(encode(5, 0), encode(5, 1, cite=(4, 17)), encode(5, 2, cite=(4, 20)))
    assert scan(iter([data])).cites == ((1, 4, 17), (2, 4, 20))


def test_extract_vmlinux_finds_the_xz_elf() -> None:
    elf = b"\x7fELF" + b"kernel" * 1000
    fake_bz = b"MZ" + b"\0" * 100 + b"\xfd7zXZ\x00junk" + b"\0" * 10 + lzma.compress(elf) + b"trailer"
    assert extract_vmlinux(fake_bz) == elf
    with pytest.raises(InvalidParameter):
        extract_vmlinux(b"MZ no kernel here")


def test_modules_from_show_depends() -> None:
    out = (
        "insmod /tmp/k/lib/modules/6.1/kernel/virtio_ring.ko\n"
        "insmod /tmp/k/lib/modules/6.1/kernel/virtio.ko\n"
        "builtin crc32c\n"
        "insmod /tmp/k/lib/modules/6.1/kernel/virtio_ring.ko\n"
        "insmod /tmp/k/lib/modules/6.1/kernel/virtio_blk.ko.xz\n"
    )
    assert modules_from_show_depends(out, "/tmp/k/") == [
        "/lib/modules/6.1/kernel/virtio_ring.ko",
        "/lib/modules/6.1/kernel/virtio.ko",
        "/lib/modules/6.1/kernel/virtio_blk.ko.xz",
    ]
