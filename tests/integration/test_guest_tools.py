"""The guest tools against real programs: the C writer (gcc), the verifier on qcow2 (qemu-img), cpio."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from standby.domain.errors import FileNotFound, InvalidParameter
from standby.guest.cpio import Entry, parents, write_archive
from standby.guest.record import encode
from standby.guest.verify import scan, verify_image

WRITER_C = Path(__file__).parents[2] / "src/standby/guest/writer.c"


def stream(*blocks: bytes) -> bytes:
    return b"".join(blocks)


def test_c_writer_matches_the_python_format(tmp_path: Path) -> None:
    binary = tmp_path / "writer"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(WRITER_C)], check=True)
    target = tmp_path / "records.bin"
    cite = tmp_path / "cite"
    cite.write_text("9 41\n")
    run = [str(binary), "file", str(target), "id=4", "count=5", f"cite={cite}", f"status={tmp_path / 'st'}"]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "STANDBY-WRITER-START id=4 mode=file next=0" in out
    assert target.read_bytes() == stream(*(encode(4, i, cite=(9, 41)) for i in range(5)))
    assert (tmp_path / "st").read_text() == "4 4\n"
    # a torn tail is cut and the sequence continues after the valid prefix
    with target.open("ab") as f:
        f.write(b"garbage")
    out = subprocess.run(
        [str(binary), "file", str(target), "id=4", "count=2"], capture_output=True, text=True, check=True
    ).stdout
    assert "next=5" in out
    report = scan(iter([target.read_bytes()]))
    assert (report.records, report.exact_prefix) == (7, True)


def test_verify_image_reads_qcow2_and_refuses_bad_input(tmp_path: Path) -> None:
    raw = tmp_path / "d.raw"
    raw.write_bytes(stream(*(encode(0, i) for i in range(10))) + bytes(1 << 20))
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], check=True)
    report = verify_image(qcow)
    assert (report.records, report.exact_prefix) == (10, True)
    with pytest.raises(FileNotFound):
        verify_image(tmp_path / "missing.qcow2")
    with pytest.raises(InvalidParameter, match="mode"):
        verify_image(qcow, mode="xfs")


def test_cpio_archive_unpacks_with_cpio(tmp_path: Path) -> None:
    buf = io.BytesIO()
    entries = [
        Entry.directory("bin"),
        Entry.file("/bin/hello", b"#!/bin/sh\necho hi\n", executable=True),
        Entry.symlink("/bin/sh", "busybox"),
        Entry.file("/etc/x", b"abc"),
    ]
    write_archive(buf, [Entry.directory("etc"), *entries])
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=buf.getvalue(), cwd=out, check=True)
    assert (out / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "bin/hello").stat().st_mode & 0o111
    assert (out / "bin/sh").readlink() == Path("busybox")
    assert (out / "etc/x").read_text() == "abc"
    assert parents("/usr/lib/x/y.so") == ["usr", "usr/lib", "usr/lib/x"]


def test_verify_image_follows_a_qcow2_chain(tmp_path: Path) -> None:
    # base holds records 0..9; an overlay on top adds 10..14 at their slots, as a recovery-point chain would
    raw = tmp_path / "base.raw"
    raw.write_bytes(stream(*(encode(3, i) for i in range(10))) + bytes(1 << 20))
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(base)], check=True)
    top = tmp_path / "top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)], check=True
    )
    more = tmp_path / "more.bin"
    more.write_bytes(stream(*(encode(3, i) for i in range(10, 15))))
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -s {more} 5120 2560", str(top)],
        check=True,
        capture_output=True,
    )
    assert (verify_image(base).records, verify_image(top).records) == (10, 15)
    assert verify_image(top).exact_prefix
