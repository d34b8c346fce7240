"""The one error map of qemu-img and qemu-nbd: what each kind of stderr becomes (QEMU 7.2's texts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from standby import i18n
from standby.domain.errors import (
    FileNotFound,
    InUse,
    InvalidParameter,
    OutOfMemory,
    StandbyError,
)
from standby.storage import qemu_img
from standby.storage.qemu_nbd import NbdExport

IMAGE = Path("/srv/disks/d0/rp-0000000003.qcow2")

#: (stderr, error class, message id, the path the error names)
CASES: list[tuple[str, type[StandbyError], str, str]] = [
    ("qemu-img: Could not open '/srv/x.qcow2': Could not open '/srv/x.qcow2': No such file or directory\n",
     FileNotFound, "DiskFileMissing", "/srv/x.qcow2"),
    ("qemu-img: Could not open 'top.qcow2': Could not open backing file: Could not open 'rp-2.qcow2': "
     "No such file or directory\n", FileNotFound, "DiskFileMissing", "rp-2.qcow2"),
    ("qemu-img: top.qcow2: Could not open 'missing.qcow2': No such file or directory\n"
     "Could not open backing image.\n", FileNotFound, "DiskFileMissing", "missing.qcow2"),
    ("qemu-nbd: Failed to blk_new_open 'm.qcow2': Could not open 'm.qcow2': No such file or directory\n",
     FileNotFound, "DiskFileMissing", "m.qcow2"),
    ("qemu-img: Could not open 'a.qcow2': Failed to get \"write\" lock\n"
     "Is another process using the image [a.qcow2]?\n", InUse, "ImageLocked", str(IMAGE)),
    ("qemu-img: Could not open 'a.qcow2': Failed to get shared \"write\" lock\n"
     "Is another process using the image [a.qcow2]?\n", InUse, "ImageLocked", str(IMAGE)),
    ("qemu-nbd: Failed to blk_new_open 'a.qcow2': Failed to get \"consistent read\" lock\n",
     InUse, "ImageLocked", str(IMAGE)),
    ("qemu-img: Failed to lock byte 100\n", InUse, "ImageLocked", str(IMAGE)),
    ("qemu-img: Could not open 'junk.qcow2': Image is not in qcow2 format\n",
     InvalidParameter, "BadImage", str(IMAGE)),
    ("qemu-img: Could not open 'd': 'file' driver requires 'd' to be a regular file\n",
     InvalidParameter, "BadImage", str(IMAGE)),
    ("qemu-img: Could not open 'x.qcow2': Permission denied\n", InvalidParameter, "BadImage", str(IMAGE)),
    ("qemu-img: Unknown file format 'qcow9'\n", InvalidParameter, "BadImage", str(IMAGE)),
    ("qemu-img: Could not open 'x.qcow2': qcow2: Image is corrupt; cannot be opened read/write\n",
     InvalidParameter, "BadImage", str(IMAGE)),
    ("qemu-img: /srv/x.qcow2: Could not create '/srv/x.qcow2': No space left on device\n",
     OutOfMemory, "NoSpace", str(IMAGE)),
    ("qemu-img: error while writing at byte 0: No space left on device\n",
     OutOfMemory, "NoSpace", str(IMAGE)),
    ("qemu-img: /proc/x.qcow2: Could not create '/proc/x.qcow2': No such file or directory\n",
     StandbyError, "ImageOperationFailed", str(IMAGE)),
    ("qemu-img: Operation remove on bitmap nope failed: Dirty bitmap 'nope' not found\n",
     StandbyError, "ImageOperationFailed", str(IMAGE)),
    ("", StandbyError, "ImageOperationFailed", str(IMAGE)),
]


@pytest.mark.parametrize(("stderr", "cls", "message_id", "named"), CASES)
def test_stderr_becomes_one_error(stderr: str, cls: type[StandbyError], message_id: str, named: str) -> None:
    error = qemu_img.failure("qemu-img commit", IMAGE, stderr, 1)
    assert type(error) is cls
    assert error.message_id == message_id
    assert error.args_map["path"] == named
    assert error.args_map["reason"] == qemu_img.reason_of(stderr, 1)
    assert i18n.has_message(message_id, "en") and i18n.has_message(message_id, "de")
    assert i18n.placeholders(i18n.catalog("en")[message_id]) <= set(error.args_map)


def test_the_first_matching_rule_wins_over_could_not_open() -> None:
    locked = "qemu-img: Could not open 'a': Failed to get \"write\" lock\n"
    missing = "qemu-img: Could not open 'a': Could not open 'a': No such file or directory\n"
    assert isinstance(qemu_img.failure("qemu-img info", IMAGE, locked, 1), InUse)
    assert isinstance(qemu_img.failure("qemu-img info", IMAGE, missing, 1), FileNotFound)


def test_the_reason_is_one_line_without_the_program_name() -> None:
    said = ("qemu-img: Could not open 'a': Failed to get \"write\" lock\n"
            "Is another process using the image [a]?\n")
    assert qemu_img.reason_of(said, 1) == ("Could not open 'a': Failed to get \"write\" lock "
                                           "Is another process using the image [a]?")
    assert qemu_img.reason_of("  \n", 3) == "exit 3"
    assert qemu_img.reason_of("qemu-nbd: Failed to bind socket\n", 1) == "Failed to bind socket"


def test_a_generic_failure_names_the_command_and_the_path() -> None:
    error = qemu_img.failure("qemu-img bitmap", IMAGE, "qemu-img: Dirty bitmap 'x' not found\n", 1)
    assert str(error) == f"qemu-img bitmap {IMAGE} failed: Dirty bitmap 'x' not found"
    assert error.code == 32768


def test_a_missing_program_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StandbyError) as caught:
        qemu_img.create_overlay(Path("/nonexistent/o.qcow2"), Path(__file__), size=1 << 20)
    assert caught.value.message_id == "ToolMissing" and caught.value.code == 32777


def test_refusals_before_any_process(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter) as caught:
        qemu_img.create(tmp_path / "a.qcow2", 0)
    assert caught.value.message_id == "InvalidDiskSize"
    (tmp_path / "b.qcow2").write_bytes(b"")
    with pytest.raises(InvalidParameter) as caught:
        qemu_img.create(tmp_path / "b.qcow2", 1 << 20)
    assert caught.value.message_id == "AlreadyExists"
    with pytest.raises(FileNotFound):
        qemu_img.create_overlay(tmp_path / "c.qcow2", tmp_path / "missing.qcow2")
    with pytest.raises(FileNotFound):
        qemu_img.info(tmp_path / "missing.qcow2")


def test_the_exports_keep_the_flags_their_callers_used() -> None:
    chain_export = NbdExport(IMAGE, Path("/run/s.sock"), "disk", writable=True, cache="writeback")
    assert chain_export.argv() == ["qemu-nbd", "-f", "qcow2", "-k", "/run/s.sock", "-x", "disk",
                                   "--persistent", "--cache=writeback", str(IMAGE)]
    off_vm = NbdExport(IMAGE, Path("/run/o.sock"), "d0", allocation_depth=True, clients=4, bitmap="rep-2")
    assert off_vm.argv() == ["qemu-nbd", "-f", "qcow2", "-k", "/run/o.sock", "-x", "d0", "--persistent",
                             "--read-only", "-A", "-e", "4", "-B", "rep-2", str(IMAGE)]
