"""The replication log format: round trips, compression, zero frames, and every way a log can be damaged."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standby.storage.logformat import (
    FRAME_HEADER_SIZE,
    DiskInfo,
    Frame,
    LogCorrupt,
    LogDecoder,
    LogEncoder,
    LogHeader,
    LogKind,
    encode_log,
    is_zero,
)

MiB = 1024 * 1024


def _header(compression: bool = True) -> LogHeader:
    return LogHeader(
        vm_id="6F1A0D5E-1111-2222-3333-444455556666",
        relationship_index=0,
        sequence=7,
        parent_sequence=6,
        kind=LogKind.DELTA,
        cut_time="2026-11-21T07:00:00+00:00",
        disks=(DiskInfo("d0", 64 * MiB), DiskInfo("d1", 8 * MiB)),
        compression=compression,
        extra={"digests": {"d0": "abc"}},
    )


def _decode(blob: bytes, chunk: int = 65536) -> tuple[LogDecoder, list[Frame]]:
    decoder = LogDecoder()
    frames: list[Frame] = []
    for start in range(0, len(blob), chunk):
        frames += decoder.feed(blob[start : start + chunk])
    decoder.finish()
    return decoder, frames


ITEMS: list[tuple[int, int, bytes | None, int]] = [
    (0, 0, b"A" * 65536, 65536),  # compressible
    (0, 5 * MiB, os.urandom(65536), 65536),  # incompressible: stored raw
    (1, 4096, None, MiB),  # explicit zero range
    (0, 9 * MiB, bytes(65536), 65536),  # zero data detected
]


def test_round_trip_keeps_every_byte_and_the_header() -> None:
    blob = b"".join(encode_log(_header(), ITEMS))
    decoder, frames = _decode(blob)
    assert decoder.header == _header()
    assert [(f.disk_index, f.offset, f.length) for f in frames] == [(d, o, n) for d, o, _, n in ITEMS]
    assert frames[0].data == b"A" * 65536
    assert frames[1].data == ITEMS[1][2]
    assert frames[2].data is None and frames[3].data is None
    assert decoder.summary is not None and decoder.summary.frames == 4


def test_compression_shrinks_compressible_data_and_zero_frames_carry_nothing() -> None:
    encoder = LogEncoder(_header())
    packed = encoder.frame(0, 0, b"A" * 65536)
    raw = encoder.frame(0, 65536, (b := os.urandom(65536)))
    zero = encoder.frame(0, 2 * 65536, bytes(65536))
    assert len(packed) < 1000
    assert len(raw) == FRAME_HEADER_SIZE + len(b)
    assert len(zero) == FRAME_HEADER_SIZE


def test_uncompressed_logs_store_data_as_is() -> None:
    encoder = LogEncoder(_header(compression=False))
    assert len(encoder.frame(0, 0, b"A" * 4096)) == FRAME_HEADER_SIZE + 4096


@pytest.mark.parametrize("chunk", [1, 7, 36, 4096])
def test_decoding_byte_by_byte_gives_the_same_frames(chunk: int) -> None:
    blob = b"".join(encode_log(_header(), ITEMS[:3]))
    _, frames = _decode(blob, chunk)
    assert len(frames) == 3


def test_truncated_log_is_rejected() -> None:
    blob = b"".join(encode_log(_header(), ITEMS))
    decoder = LogDecoder()
    decoder.feed(blob[:-5])
    with pytest.raises(LogCorrupt, match="before its END"):
        decoder.finish()


def test_flipped_payload_byte_fails_its_checksum() -> None:
    blob = bytearray(b"".join(encode_log(_header(compression=False), [(0, 0, b"B" * 4096, 4096)])))
    blob[-FRAME_HEADER_SIZE - 10] ^= 0xFF
    with pytest.raises(LogCorrupt, match="checksum"):
        _decode(bytes(blob))


def test_dropped_frame_is_caught_by_the_end_frame() -> None:
    encoder = LogEncoder(_header(compression=False))
    head = encoder.header_bytes()
    first = encoder.frame(0, 0, b"C" * 512)
    encoder.frame(0, 512, b"D" * 512)  # produced but never sent
    with pytest.raises(LogCorrupt, match="END frame does not match"):
        _decode(head + first + encoder.end())


def test_swapped_frames_are_caught_by_the_end_frame() -> None:
    encoder = LogEncoder(_header(compression=False))
    head = encoder.header_bytes()
    first, second = encoder.frame(0, 0, b"C" * 512), encoder.frame(0, 512, b"D" * 512)
    with pytest.raises(LogCorrupt, match="END frame does not match"):
        _decode(head + second + first + encoder.end())


def test_data_after_end_and_wrong_magic_are_rejected() -> None:
    blob = b"".join(encode_log(_header(), ITEMS[:1]))
    decoder = LogDecoder()
    decoder.feed(blob)
    with pytest.raises(LogCorrupt, match="after the END"):
        decoder.feed(b"x")
    with pytest.raises(LogCorrupt, match="not a standby"):
        LogDecoder().feed(b"NOTALOG!" + bytes(8))


def test_frames_outside_the_disk_are_rejected() -> None:
    header = _header(compression=False)
    encoder = LogEncoder(header)
    blob = encoder.header_bytes() + encoder.frame(1, 8 * MiB - 100, b"E" * 512)
    with pytest.raises(LogCorrupt, match="out of bounds"):
        LogDecoder().feed(blob)
    with pytest.raises(ValueError, match="disk index"):
        encoder.frame(5, 0, b"x")


def test_malformed_header_is_rejected() -> None:
    body = b'{"vm_id": 1}'
    with pytest.raises(LogCorrupt, match="malformed"):
        LogDecoder().feed(b"SBYLOG01" + len(body).to_bytes(4, "big") + body)


@pytest.mark.parametrize(
    ("data", "expected"), [(b"", True), (bytes(4096), True), (b"\0" * 4095 + b"\1", False), (b"\1", False)]
)
def test_is_zero(data: bytes, expected: bool) -> None:
    assert is_zero(data) is expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 1000), st.binary(min_size=1, max_size=3000)),
        max_size=12,
    ),
    st.integers(1, 200),
    st.booleans(),
)
def test_any_sequence_of_frames_round_trips(
    items: list[tuple[int, int, bytes]], chunk: int, compression: bool
) -> None:
    encoded = [(disk, offset * 512, data, len(data)) for disk, offset, data in items]
    blob = b"".join(encode_log(_header(compression), encoded))
    _, frames = _decode(blob, chunk)
    assert [(f.disk_index, f.offset) for f in frames] == [(d, o) for d, o, _, _ in encoded]
    for frame, (_, _, data, _) in zip(frames, encoded, strict=True):
        assert (frame.data if frame.data is not None else bytes(frame.length)) == data
