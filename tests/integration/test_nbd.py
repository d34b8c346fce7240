"""The NBD client against a real qemu-nbd serving real qcow2 images."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from standby.domain.errors import InvalidParameter, StandbyError, Unavailable
from standby.storage.nbd import STATE_DIRTY, STATE_HOLE, NbdClient, dirty_ranges

MiB = 1024 * 1024
# (offset, length, byte) written through qemu-io before export; 64 KiB aligned and not.
WRITES = [(0, 4096, 0x11), (5 * MiB, 128 * 1024, 0x22), (17 * MiB + 512, 3000, 0x33), (63 * MiB, MiB, 0x44)]


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _make_image(path: Path, size: str = "64M") -> None:
    _run("qemu-img", "create", "-q", "-f", "qcow2", str(path), size)


def _qemu_io_write(path: Path, offset: int, length: int, pattern: int) -> None:
    _run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {length}", str(path))


def _raw_bytes(path: Path, tmp: Path) -> bytes:
    out = tmp / f"{path.name}.raw"
    _run("qemu-img", "convert", "-O", "raw", str(path), str(out))
    return out.read_bytes()


class _Server:
    def __init__(self, image: Path, sock: Path, *extra: str) -> None:
        self.sock = sock
        self.proc = subprocess.Popen(
            ["qemu-nbd", "-f", "qcow2", "-k", str(sock), "-x", "disk", "--persistent", *extra, str(image)],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qemu-nbd did not start (exit {self.proc.poll()})")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture()
def written_image(tmp_path: Path) -> Path:
    image = tmp_path / "disk.qcow2"
    _make_image(image)
    for offset, length, pattern in WRITES:
        _qemu_io_write(image, offset, length, pattern)
    return image


@pytest.fixture()
def server(tmp_path: Path, written_image: Path) -> Iterator[_Server]:
    srv = _Server(written_image, tmp_path / "nbd.sock", "--read-only")
    yield srv
    srv.stop()


def test_handshake_reports_size_and_read_only(server: _Server) -> None:
    with NbdClient.connect_unix(str(server.sock), "disk") as client:
        assert client.size == 64 * MiB
        assert client.read_only


def test_reads_match_qemu_img_convert(server: _Server, written_image: Path, tmp_path: Path) -> None:
    expected = _raw_bytes(written_image, tmp_path)
    with NbdClient.connect_unix(str(server.sock), "disk") as client:
        ranges = [(off, 2 * MiB) for off in range(0, client.size, 2 * MiB)]
        got = b"".join(data for _, data in client.read_many(ranges, depth=16))
        single = client.read(17 * MiB + 512, 3000)
    assert got == expected
    assert single == bytes([0x33]) * 3000


def test_read_many_yields_in_request_order_for_scattered_ranges(server: _Server) -> None:
    ranges = [(63 * MiB, 4096), (0, 4096), (5 * MiB, 65536), (30 * MiB, 512)]
    with NbdClient.connect_unix(str(server.sock), "disk") as client:
        results = list(client.read_many(ranges, depth=3))
    assert [off for off, _ in results] == [r[0] for r in ranges]
    assert results[0][1] == bytes([0x44]) * 4096
    assert results[1][1] == bytes([0x11]) * 4096
    assert results[2][1] == bytes([0x22]) * 65536
    assert results[3][1] == bytes(512)


def test_base_allocation_marks_unwritten_space_as_holes(server: _Server) -> None:
    with NbdClient.connect_unix(str(server.sock), "disk", ["base:allocation"]) as client:
        extents = client.block_status("base:allocation")
    assert extents[0].offset == 0
    assert extents[-1].end == 64 * MiB
    data = [e for e in extents if not e.flags & STATE_HOLE]
    covered = sum(e.length for e in data)
    # Every written byte lies in a data extent; qcow2 allocates 64 KiB clusters.
    for offset, length, _ in WRITES:
        assert any(e.offset <= offset and offset + length <= e.end for e in data)
    assert covered <= 4 * 64 * 1024 + 128 * 1024 + MiB


def test_dirty_bitmap_context_reports_exactly_the_written_clusters(tmp_path: Path) -> None:
    image = tmp_path / "bm.qcow2"
    _make_image(image)
    _run("qemu-img", "bitmap", "--add", str(image), "rep-1")
    _qemu_io_write(image, 2 * MiB, 64 * 1024, 0x55)
    _qemu_io_write(image, 40 * MiB + 100, 10, 0x66)
    srv = _Server(image, tmp_path / "bm.sock", "--read-only", "-B", "rep-1")
    try:
        context = "qemu:dirty-bitmap:rep-1"
        with NbdClient.connect_unix(str(srv.sock), "disk", [context]) as client:
            extents = client.block_status(context)
            ranges = dirty_ranges(extents, STATE_DIRTY)
            data = dict(client.read_many(ranges))
    finally:
        srv.stop()
    assert ranges == [(2 * MiB, 64 * 1024), (40 * MiB, 64 * 1024)]
    assert data[2 * MiB] == bytes([0x55]) * 65536
    assert data[40 * MiB][100:110] == bytes([0x66]) * 10


def test_pipelined_writes_and_zeroes_land_in_the_image(tmp_path: Path) -> None:
    image = tmp_path / "w.qcow2"
    _make_image(image)
    _qemu_io_write(image, 8 * MiB, MiB, 0x77)  # to be zeroed below
    srv = _Server(image, tmp_path / "w.sock")
    payload = os.urandom(3 * 65536)
    try:
        with NbdClient.connect_unix(str(srv.sock), "disk") as client:
            assert client.can_write_zeroes
            written = client.write_many(
                [(0, payload, len(payload)), (8 * MiB, None, MiB), (20 * MiB, b"\x01" * 512, 512)], depth=4
            )
            client.flush()
    finally:
        srv.stop()
    assert written == len(payload) + MiB + 512
    raw = _raw_bytes(image, tmp_path)
    assert raw[: len(payload)] == payload
    assert raw[8 * MiB : 9 * MiB] == bytes(MiB)
    assert raw[20 * MiB : 20 * MiB + 512] == b"\x01" * 512
    mapping = json.loads(_run("qemu-img", "map", "--output=json", str(image)))
    zeroed = [m for m in mapping if m["start"] <= 8 * MiB < m["start"] + m["length"]]
    assert zeroed and zeroed[0]["zero"] is True and zeroed[0]["data"] is False


def test_write_window_keeps_writes_in_flight_across_calls_and_the_last_overlap_wins(tmp_path: Path) -> None:
    image = tmp_path / "win.qcow2"
    _make_image(image)
    srv = _Server(image, tmp_path / "win.sock")
    first, second = os.urandom(2 * MiB), os.urandom(MiB)
    try:
        with NbdClient.connect_unix(str(srv.sock), "disk") as client:
            window = client.write_window(depth=4)
            window.write(0, first, len(first))
            window.write(4 * MiB, b"\x05" * 4096, 4096)
            assert window.in_flight == 2  # nothing waited for yet
            window.write(MiB, second, len(second))  # overlaps the first: it waits for it, then wins
            window.write(4 * MiB, None, 4096)  # zeros over the earlier data
            for index in range(8):  # more than the depth: the oldest replies are taken as it fills
                window.write((10 + index) * MiB, bytes([index + 1]) * 65536, 65536)
                assert window.in_flight < 4
            window.drain()
            assert window.in_flight == 0
            assert window.written == len(first) + len(second) + 2 * 4096 + 8 * 65536
            client.flush()
    finally:
        srv.stop()
    raw = _raw_bytes(image, tmp_path)
    assert raw[:MiB] == first[:MiB]
    assert raw[MiB : 2 * MiB] == second
    assert raw[4 * MiB : 4 * MiB + 4096] == bytes(4096)
    for index in range(8):
        assert raw[(10 + index) * MiB : (10 + index) * MiB + 65536] == bytes([index + 1]) * 65536


def test_write_window_raises_the_servers_error(tmp_path: Path) -> None:
    image = tmp_path / "eio.qcow2"
    _make_image(image)
    # QEMU's blkdebug driver under the qcow2 fails every write with EIO; the export itself is writable.
    rules = tmp_path / "eio.cfg"
    rules.write_text('[inject-error]\nevent = "pwritev"\nerrno = "5"\n')
    srv = _Server(Path(f"blkdebug:{rules}:{image}"), tmp_path / "eio.sock")
    try:
        with NbdClient.connect_unix(str(srv.sock), "disk") as client:
            window = client.write_window(depth=4)
            with pytest.raises(StandbyError, match="failed: error"):
                for offset in range(0, 8 * MiB, MiB):
                    window.write(offset, b"\x01" * MiB, MiB)
                window.drain()
    finally:
        srv.stop()


def test_bad_requests_get_clear_errors(server: _Server) -> None:
    with NbdClient.connect_unix(str(server.sock), "disk") as client:
        with pytest.raises(InvalidParameter, match="outside the export"):
            client.read(64 * MiB - 10, 20)
        with pytest.raises(InvalidParameter, match="read-only"):
            client.write(0, b"x")
        with pytest.raises(InvalidParameter, match="not negotiated"):
            client.block_status("base:allocation")
        assert client.read(0, 16) == bytes([0x11]) * 16  # the connection is still usable


def test_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot connect"):
        NbdClient.connect_unix(str(tmp_path / "nothing.sock"), "disk")
