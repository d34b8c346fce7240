"""engine.vms over the in-memory hypervisor and store: sizes, definitions, state changes, events, recovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.enums import EnabledState, JobType
from standby.domain.errors import (
    FileNotFound,
    InUse,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
)
from standby.engine.vms import DiskRequest, VmRequest, VmUseCases, mac_for, parse_memory_mib, parse_size
from standby.hypervisor.fake import FakeHypervisor
from standby.store.sqlite import Database

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class FileImages:
    """Writes placeholder files instead of qcow2 images; ``fail_at`` makes the n-th create fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.created: list[Path] = []
        self.fail_at = fail_at

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        if self.fail_at is not None and len(self.created) == self.fail_at:
            raise StandbyError("disk full")
        path.write_bytes(b"qcow2")
        self.created.append(path)

    def image_info(self, path: Path) -> object:
        if not path.exists():
            raise FileNotFound(f"{path} does not exist")
        fmt = "qcow2" if path.suffix == ".qcow2" else "raw"

        class Info:
            format = fmt
            virtual_size = 1 << 30

        return Info()


def use_cases(
    tmp_path: Path, images: FileImages | None = None
) -> tuple[VmUseCases, FakeHypervisor, Database]:
    db = Database.memory()
    hv = FakeHypervisor()
    return VmUseCases(db, hv, lambda: NOW, vm_dir=tmp_path / "vms", images=images or FileImages()), hv, db


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", 4 << 30),
        ("256M", 256 << 20),
        ("512k", 512 << 10),
        ("1T", 1 << 40),
        ("1048576", 1 << 20),
        ("2GiB", 2 << 30),
        (" 3 M ", 3 << 20),
        (42, 42),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.5G", "4X", "0", "lots"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_size(text)


def test_memory_sizes() -> None:
    assert parse_memory_mib("256M") == 256
    assert parse_memory_mib("1G") == 1024
    assert parse_memory_mib("512") == 512
    with pytest.raises(InvalidParameter):
        parse_memory_mib("1536K")


def test_macs_are_stable_and_local() -> None:
    assert mac_for("A", 0) == mac_for("A", 0) != mac_for("A", 1)
    assert mac_for("A", 0).startswith("52:54:00:")


def test_define_creates_disks_and_stores_the_vm(tmp_path: Path) -> None:
    vms, _, db = use_cases(tmp_path)
    vm = vms.define(VmRequest("web", 512, 2, (DiskRequest(size_bytes=4 << 30),), ("user", "isolated:x")))
    assert db.vms.get(vm.vm_id) == vm
    assert vm.disks[0].path == str(tmp_path / "vms" / vm.vm_id / "d0.qcow2")
    assert Path(vm.disks[0].path).exists()
    assert [(n.nic_id, n.network) for n in vm.nics] == [("n0", "user"), ("n1", "isolated:x")]
    assert vm.enabled_state is EnabledState.DISABLED and vm.created_at == NOW
    assert [e.message_id for e in db.events.list(element_id=vm.vm_id)] == ["VmDefined"]
    assert vms.get("web") == vm == vms.get(vm.vm_id.lower())


def test_failed_definition_leaves_nothing(tmp_path: Path) -> None:
    vms, _, db = use_cases(tmp_path, FileImages(fail_at=1))
    request = VmRequest("web", disks=(DiskRequest(size_bytes=1 << 30), DiskRequest(size_bytes=1 << 30)))
    with pytest.raises(StandbyError, match="disk full"):
        vms.define(request)
    assert db.vms.list() == []
    assert list((tmp_path / "vms").iterdir()) == []


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (VmRequest("", disks=(DiskRequest(size_bytes=1 << 30),)), InvalidParameter),
        (VmRequest("x\ny", disks=(DiskRequest(size_bytes=1 << 30),)), InvalidParameter),
        (VmRequest("x", disks=(DiskRequest(size_bytes=100),)), InvalidParameter),
        (VmRequest("x", memory_mib=4, disks=(DiskRequest(size_bytes=1 << 30),)), InvalidParameter),
        (VmRequest("x", cpus=0, disks=(DiskRequest(size_bytes=1 << 30),)), InvalidParameter),
        (VmRequest("x"), InvalidParameter),  # nothing to boot
        (VmRequest("x", disks=(DiskRequest(path="/nonexistent.qcow2"),)), FileNotFound),
        (VmRequest("x", kernel="/nonexistent/vmlinux"), FileNotFound),
        (VmRequest("x", disks=(DiskRequest(size_bytes=1 << 30),), networks=("wifi",)), InvalidParameter),
    ],
)
def test_bad_definitions(tmp_path: Path, request_: VmRequest, error: type[Exception]) -> None:
    vms, _, db = use_cases(tmp_path)
    with pytest.raises(error):
        vms.define(request_)
    assert db.vms.list() == []
    assert not (tmp_path / "vms").exists() or list((tmp_path / "vms").iterdir()) == []


def test_name_clash_and_imports(tmp_path: Path) -> None:
    vms, _, _ = use_cases(tmp_path)
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"x")
    vms.define(VmRequest("a", disks=(DiskRequest(path=str(image)),)))
    with pytest.raises(InvalidParameter, match="already exists"):
        vms.define(VmRequest("a", disks=(DiskRequest(size_bytes=1 << 30),)))
    with pytest.raises(InUse, match="already a disk"):
        vms.define(VmRequest("b", disks=(DiskRequest(path=str(image)),)))
    raw = tmp_path / "b.img"
    raw.write_bytes(b"x")
    with pytest.raises(InvalidParameter, match="raw image"):
        vms.define(VmRequest("b", disks=(DiskRequest(path=str(raw)),)))
    vms.delete("a")
    assert image.exists()  # imported disks are never deleted
    with pytest.raises(NotFound):
        vms.get("a")


def test_power_changes_follow_the_hypervisor(tmp_path: Path) -> None:
    vms, hv, db = use_cases(tmp_path)
    vm = vms.define(VmRequest("web", disks=(DiskRequest(size_bytes=1 << 30),)))

    async def scenario() -> None:
        assert (await vms.start("web")).enabled_state is EnabledState.ENABLED
        with pytest.raises(InvalidState, match="already running"):
            await vms.start("web")
        with pytest.raises(InvalidState, match="stop it first"):
            vms.delete("web")
        assert (await vms.pause("web")).enabled_state is EnabledState.QUIESCE
        assert (await vms.resume("web")).enabled_state is EnabledState.ENABLED
        hv.crash(vm.vm_id)
        assert vms.get("web").enabled_state is EnabledState.DISABLED
        with pytest.raises(InvalidState, match="not running"):
            await vms.stop("web")
        await vms.start("web")
        assert (await vms.stop("web", graceful=False)).enabled_state is EnabledState.DISABLED

    asyncio.run(scenario())
    kinds = [e.kind for e in db.events.list(element_id=vm.vm_id)]
    assert kinds == [
        "vm.defined",
        "vm.started",
        "vm.paused",
        "vm.resumed",
        "vm.crashed",
        "vm.started",
        "vm.stopped",
    ]
    crash = next(e for e in db.events.list(element_id=vm.vm_id) if e.kind == "vm.crashed")
    assert crash.message_id == "VmProcessDied" and crash.args["status"] == "signal 9"


def test_state_change_table(tmp_path: Path) -> None:
    vms, hv, _ = use_cases(tmp_path)
    vm = vms.define(VmRequest("web", disks=(DiskRequest(size_bytes=1 << 30),)))
    # Checks that need no hypervisor call come before the job manager is needed.
    with pytest.raises(InvalidState):
        vms.submit_state_change("web", 3)  # off while off
    with pytest.raises(InvalidState):
        vms.submit_state_change("web", 9)
    with pytest.raises(NotSupported):
        vms.submit_state_change("web", 6)
    with pytest.raises(InvalidParameter):
        vms.submit_state_change("web", 7)
    with pytest.raises(NotFound):
        vms.submit_state_change("nope", 2)
    cases = {2: JobType.START_VM}
    for requested, job_type in cases.items():
        _work, got = vms._state_change_work(vm, requested, 60)
        assert got is job_type
    asyncio.run(hv.start(vm))
    for requested, job_type in {
        3: JobType.POWER_OFF_VM,
        4: JobType.POWER_OFF_VM,
        9: JobType.MODIFY_VM,
        11: JobType.MODIFY_VM,
    }.items():
        assert vms._state_change_work(vm, requested, 60)[1] is job_type
    with pytest.raises(InvalidState):
        vms._state_change_work(vm, 2, 60)
    with pytest.raises(NotSupported, match="job manager"):
        vms.submit_state_change("web", 11)


def test_recover_marks_vms_lost_while_the_daemon_was_down(tmp_path: Path) -> None:
    vms, hv, db = use_cases(tmp_path)
    vm = vms.define(VmRequest("web", disks=(DiskRequest(size_bytes=1 << 30),)))
    asyncio.run(vms.start("web"))
    fresh = VmUseCases(db, FakeHypervisor(), lambda: NOW, vm_dir=tmp_path / "vms", images=FileImages())
    assert fresh.recover() == [vm.vm_id]
    assert fresh.get("web").enabled_state is EnabledState.DISABLED
    assert db.events.list(element_id=vm.vm_id)[-1].args["status"] == "daemon restart"
    assert hv.state(vm.vm_id) is EnabledState.ENABLED
