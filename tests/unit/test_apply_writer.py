"""The replica's pipelined writer (engine.apply._Writer) with fake NBD windows: order, errors, the bound."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from standby.domain.errors import StandbyError
from standby.engine import apply as apply_module
from standby.engine.apply import _Disk, _Writer
from standby.storage.logformat import DiskInfo, LogCorrupt, LogDecoder, LogEncoder, LogHeader, LogKind

MiB = 1024 * 1024
HEADER = LogHeader("VM", 0, 2, 1, LogKind.DELTA, "2026-01-01T00:00:00+00:00",
                   (DiskInfo("d0", 64 * MiB), DiskInfo("d1", 64 * MiB)))


class FakeWindow:
    """Records writes; may fail at one of them or block until released."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.writes: list[tuple[int, bytes | None, int]] = []
        self.drained = 0
        self.fail_at = fail_at
        self.fail_drain = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def write(self, offset: int, data: bytes | None, length: int) -> None:
        self.entered.set()
        self.release.wait()
        if self.fail_at is not None and len(self.writes) == self.fail_at:
            raise StandbyError("NBD request failed: error 5")
        self.writes.append((offset, data, length))

    def drain(self) -> None:
        self.drained += 1
        if self.fail_drain:
            raise StandbyError("NBD request failed: error 28")


def _disks(*windows: FakeWindow) -> list[_Disk]:
    disks = []
    for index, window in enumerate(windows):
        disk = _Disk(f"d{index}", 64 * MiB, Path("/nonexistent/p"), Path("/nonexistent/f"))
        disk.window = window  # type: ignore[assignment]
        disks.append(disk)
    return disks


def _parts(frames: list[tuple[int, int, bytes | None, int]]) -> list[bytes]:
    """The log as header, one piece per frame, END."""
    encoder = LogEncoder(HEADER)
    parts = [encoder.header_bytes()]
    for disk, offset, data, length in frames:
        zero = data is None
        parts.append(encoder.zero(disk, offset, length) if zero else encoder.frame(disk, offset, data or b""))
    parts.append(encoder.end())
    return parts


def _log(frames: list[tuple[int, int, bytes | None, int]]) -> bytes:
    return b"".join(_parts(frames))


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[offset:offset + size] for offset in range(0, len(data), size)]


FRAMES: list[tuple[int, int, bytes | None, int]] = [
    (0, 0, b"\x01" * 65536, 65536),
    (1, 4 * MiB, b"text " * 30000, 150000),
    (0, 0, b"\x02" * 65536, 65536),  # the same range again: must arrive after the first
    (0, 8 * MiB, None, MiB),
    (1, 0, bytes(range(256)) * 1024, 262144),
]


async def _run(decoder: LogDecoder, disks: list[_Disk], log: bytes | list[bytes], *, verify: bool,
               piece: int = 0) -> None:
    writer = _Writer(decoder, disks, verify=verify)
    try:
        for chunk in log if isinstance(log, list) else _pieces(log, piece):
            await writer.put(chunk)
        await writer.close()
    except BaseException:
        await writer.abort()
        raise


@pytest.mark.parametrize("piece", [7, 4096, 10 * MiB])
def test_frames_reach_each_disk_in_log_order_and_every_window_is_drained(piece: int) -> None:
    windows = FakeWindow(), FakeWindow()
    disks = _disks(*windows)
    decoder = LogDecoder()
    asyncio.run(_run(decoder, disks, _log(FRAMES), verify=False, piece=piece))
    assert decoder.finish().frames == len(FRAMES)
    for index, window in enumerate(windows):
        expected = [(offset, data, length) for disk, offset, data, length in FRAMES if disk == index]
        assert window.writes == expected
        assert window.drained == 1
    assert all(disk.written == [] for disk in disks)  # nothing kept for a read-back when verify is off


def test_verify_keeps_each_frames_checksum_for_the_read_back() -> None:
    disks = _disks(FakeWindow(), FakeWindow())
    decoder = LogDecoder()
    asyncio.run(_run(decoder, disks, _log(FRAMES), verify=True, piece=MiB))
    assert [(offset, length, digest is None) for offset, length, digest in disks[0].written] == [
        (0, 65536, False), (0, 65536, False), (8 * MiB, MiB, True)]
    assert len({digest for _, _, digest in disks[0].written}) == 3


def test_a_corrupt_frame_mid_stream_raises_and_stops_the_writes() -> None:
    parts = _parts(FRAMES)
    corrupt = bytearray(parts[2])  # the second frame (disk 1); its payload is past the 40-byte frame header
    corrupt[-1] ^= 0xFF
    parts[2] = bytes(corrupt)
    windows = FakeWindow(), FakeWindow()
    with pytest.raises(LogCorrupt):
        asyncio.run(_run(LogDecoder(), _disks(*windows), parts, verify=False))
    assert windows[1].writes == []  # the corrupt frame was never written
    assert [w[0] for w in windows[0].writes] == [0]  # the frame before it was; nothing after it


def test_a_write_error_surfaces_from_the_writer() -> None:
    windows = FakeWindow(fail_at=1), FakeWindow()
    with pytest.raises(StandbyError, match="error 5"):
        asyncio.run(_run(LogDecoder(), _disks(*windows), _log(FRAMES), verify=False, piece=1024))
    assert len(windows[0].writes) == 1



def test_a_write_error_answered_only_at_the_end_surfaces_and_ends_the_thread() -> None:
    # The last writes of a log are answered in drain(), after the end marker: ENOSPC as the image grows.
    windows = FakeWindow(), FakeWindow()
    windows[1].fail_drain = True
    disks = _disks(*windows)

    async def apply_with_a_deadline() -> None:
        await asyncio.wait_for(_run(LogDecoder(), disks, _log(FRAMES), verify=False, piece=MiB), timeout=30)

    with pytest.raises(StandbyError, match="error 28"):
        asyncio.run(apply_with_a_deadline())
    assert windows[1].drained == 1
    assert not [t for t in threading.enumerate() if t.name == "standby-apply-writer"]

def test_the_queue_is_bounded_while_the_writer_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_module, "QUEUED", 2)
    window = FakeWindow()
    window.release.clear()  # the first write blocks until released
    pieces = _parts([(0, index * MiB, bytes([index + 1]) * 4096, 4096) for index in range(8)])

    async def scenario() -> None:
        writer = _Writer(LogDecoder(), _disks(window, FakeWindow()), verify=False)
        await writer.put(pieces[0])  # the header
        await writer.put(pieces[1])  # the first frame: its write blocks
        await asyncio.to_thread(window.entered.wait)  # (the slots of both were given back before this)
        await writer.put(pieces[2])
        await writer.put(pieces[3])
        blocked = asyncio.ensure_future(writer.put(pieces[4]))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not blocked.done()  # two pieces wait: the third waits for room
        window.release.set()
        await blocked
        for piece in pieces[5:]:
            await writer.put(piece)
        await writer.close()

    asyncio.run(scenario())
    assert [offset for offset, _, _ in window.writes] == [index * MiB for index in range(8)]


def test_abort_drops_what_is_queued_and_ends_the_thread() -> None:
    window = FakeWindow()
    window.release.clear()
    pieces = _parts([(0, index * MiB, bytes([index + 1]) * 4096, 4096) for index in range(4)])

    async def scenario() -> _Writer:
        writer = _Writer(LogDecoder(), _disks(window, FakeWindow()), verify=False)
        for piece in pieces[:4]:  # header and three frames; the first frame's write blocks
            await writer.put(piece)
        await asyncio.to_thread(window.entered.wait)
        aborting = asyncio.ensure_future(writer.abort())
        await asyncio.sleep(0)  # abort has marked the writer before the blocked write goes on
        window.release.set()
        await aborting
        return writer

    writer = asyncio.run(scenario())
    assert not writer._thread.is_alive()
    assert [offset for offset, _, _ in window.writes] == [0]  # only the write under way when abort came
