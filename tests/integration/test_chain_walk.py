"""The backing-chain walk from qcow2 headers (``chain.walk_chain``) against chains real qemu-img made, and
the failover overlay made with ``qemu-img create -u`` after it: same answers as qemu-img's own open, broken
chains refused with a clear error, nothing opened but one header per link."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
from pathlib import Path

import pytest

from standby.domain.errors import FileNotFound
from standby.storage import chain, failover_images

MiB = 1024 * 1024


def _img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _info_chain(top: Path) -> list[dict[str, object]]:
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(top)],
                         check=True, capture_output=True, text=True).stdout
    found: list[dict[str, object]] = json.loads(out)
    return found


def _chain(folder: Path, depth: int, *, raw_base: bool = False, compat: str = "1.1") -> list[Path]:
    """rp-1 .. rp-depth, rp-N backed by rp-(N-1) by relative name; rp-1 over base.raw when ``raw_base``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"rp-{n}.qcow2" for n in range(1, depth + 1)]
    if raw_base:
        _img("create", "-q", "-f", "raw", str(folder / "base.raw"), str(3 * MiB))
        _img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-b", "base.raw", "-F", "raw",
             str(paths[0]))
    else:
        _img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", str(paths[0]), str(3 * MiB))
    for previous, path in itertools.pairwise(paths):
        _img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-u", "-b", previous.name, "-F",
             "qcow2", str(path), str(3 * MiB))
    return paths


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_the_walk_matches_qemu_img(tmp_path: Path, compat: str) -> None:
    paths = _chain(tmp_path / "d0", 5, raw_base=True, compat=compat)
    links = chain.walk_chain(paths[-1])
    expected = _info_chain(paths[-1])
    assert [str(link.path) for link in links] == [str(item["filename"]) for item in expected]
    assert [link.format for link in links] == [str(item["format"]) for item in expected]
    assert [link.size for link in links] == [int(str(item["virtual-size"])) for item in expected]
    assert chain.chain_of(paths[-1]) == [link.path for link in links]
    assert chain.backing_file(paths[2]) == paths[1]
    assert chain.backing_file(paths[0]) == tmp_path / "d0" / "base.raw"
    assert chain.backing_file(tmp_path / "d0" / "base.raw") is None


def test_absolute_backing_names_and_the_header_fields(tmp_path: Path) -> None:
    base = tmp_path / "a" / "base.qcow2"
    base.parent.mkdir()
    _img("create", "-q", "-f", "qcow2", str(base), str(5 * MiB))
    top = tmp_path / "b" / "top.qcow2"
    top.parent.mkdir()
    _img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top))
    header = chain.read_header(top)
    assert (header.version, header.size, header.backing, header.backing_format) == (3, 5 * MiB, base, "qcow2")
    assert header.data_file is None
    assert [link.path for link in chain.walk_chain(top)] == [top, base]


def test_a_missing_middle_file_is_refused(tmp_path: Path) -> None:
    paths = _chain(tmp_path / "d0", 4)
    paths[1].unlink()
    with pytest.raises(FileNotFound, match=r"rp-2\.qcow2 in the backing chain of .*rp-4\.qcow2"):
        chain.walk_chain(paths[-1])
    with pytest.raises(FileNotFound):
        failover_images.failover_overlay(tmp_path / "failover" / "d0.qcow2", paths[-1])
    assert not any((tmp_path / "failover").glob("*"))


def test_a_file_that_is_not_qcow2_is_refused(tmp_path: Path) -> None:
    paths = _chain(tmp_path / "d0", 3)
    paths[1].write_bytes(b"not an image" * 100)  # the parent says -F qcow2
    with pytest.raises(chain.ChainError, match=r"rp-2\.qcow2 is not a qcow2 image"):
        chain.walk_chain(paths[-1])
    with pytest.raises(chain.ChainError):
        failover_images.failover_overlay(tmp_path / "o.qcow2", paths[-1])
    assert not (tmp_path / "o.qcow2").exists()


def test_a_format_other_than_qcow2_or_raw_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "d0"
    folder.mkdir()
    _img("create", "-q", "-f", "vmdk", str(folder / "base.vmdk"), str(MiB))
    _img("create", "-q", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk", str(folder / "top.qcow2"))
    with pytest.raises(chain.ChainError, match="is a vmdk image"):
        chain.walk_chain(folder / "top.qcow2")


def test_a_loop_is_refused(tmp_path: Path) -> None:
    paths = _chain(tmp_path / "d0", 3)
    _img("rebase", "-q", "-u", "-b", paths[2].name, "-F", "qcow2", str(paths[0]))  # rp-1 over rp-3
    with pytest.raises(chain.ChainError, match="loops"):
        chain.walk_chain(paths[-1])
    with pytest.raises(chain.ChainError, match="loops"):
        chain.chain_of(paths[0])


def _patch(path: Path, offset: int, fmt: str, *values: int) -> None:
    with path.open("r+b") as image:
        image.seek(offset)
        image.write(struct.pack(fmt, *values))


@pytest.mark.parametrize(("offset", "fmt", "value", "reason"), [
    (4, ">I", 4, "version 4"),
    (72, ">Q", 1 << 40, "unknown incompatible features"),
    (72, ">Q", 2, "marked it corrupt"),
    (16, ">I", 5000, "backing file name out of bounds"),
])
def test_malformed_headers_are_refused(tmp_path: Path, offset: int, fmt: str, value: int,
                                       reason: str) -> None:
    paths = _chain(tmp_path / "d0", 2)
    _patch(paths[0] if offset != 16 else paths[1], offset, fmt, value)
    with pytest.raises(chain.ChainError, match=reason):
        chain.walk_chain(paths[-1])


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    paths = _chain(tmp_path / "d0", 2)
    paths[0].write_bytes(paths[0].read_bytes()[:40])
    with pytest.raises(chain.ChainError, match="truncated header"):
        chain.walk_chain(paths[-1])
    paths[0].write_bytes(b"QFI")
    with pytest.raises(chain.ChainError, match="not a qcow2 image"):
        chain.walk_chain(paths[-1])


def test_a_backing_name_past_the_first_read_is_found(tmp_path: Path) -> None:
    # qemu-img puts the name right after the header; the spec allows anywhere in the first cluster.
    paths = _chain(tmp_path / "d0", 2)
    name = paths[0].name.encode()
    _patch(paths[1], 8, ">QI", 6000, len(name))
    with paths[1].open("r+b") as image:
        image.seek(6000)
        image.write(name)
    assert [link.path for link in chain.walk_chain(paths[-1])] == paths[::-1]
    assert subprocess.run(["qemu-img", "info", "--backing-chain", str(paths[1])], check=False,
                          capture_output=True).returncode == 0  # qemu agrees the header is valid


def test_the_failover_overlay_reads_like_its_backing(tmp_path: Path) -> None:
    paths = _chain(tmp_path / "d0", 3)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", str(paths[1])], check=True,
                   capture_output=True)
    overlay = failover_images.failover_overlay(tmp_path / "failover" / "d0.qcow2", paths[-1])
    info = _info_chain(overlay)
    assert info[0]["backing-filename"] == str(paths[-1]) and info[0]["virtual-size"] == 3 * MiB
    assert info[0]["backing-filename-format"] == "qcow2"
    same = subprocess.run(["qemu-img", "compare", "-q", str(overlay), str(paths[-1])], check=False)
    assert same.returncode == 0
    assert failover_images.backing_chain(overlay) == [overlay, *reversed(paths)]


def test_a_raw_backing_overlay_gets_the_file_size(tmp_path: Path) -> None:
    iso = tmp_path / "seed.iso"
    iso.write_bytes(b"\x01" * 12345)
    overlay = failover_images.failover_overlay(tmp_path / "seed.qcow2", iso, backing_format="raw")
    assert _info_chain(overlay)[0]["virtual-size"] == 12800  # qemu-img rounds up to 512 as without -u
