"""Which existing image may become a VM's disk (issue 13: a recovery point imported as a disk).

Three layers: the pure rule (``domain.disk_paths.judge_disk``) as a table; the engine entry over real files
in a temporary folder (symlinks, ``..``, hard links, backing chains through an injected header reader);
and both surfaces (CIM ``DefineSystem`` and REST ``POST /api/v1/vms``) refusing with the same code and
leaving nothing behind, never answering 500.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from fastapi.testclient import TestClient
from pywbem import Uint16

from standby.api.app import create_app
from standby.domain.disk_paths import (
    ImageFile,
    ProtectedStorage,
    Refusal,
    Verdict,
    VmImage,
    judge_disk,
    refusal_error,
)
from standby.domain.entities import AuthorizationEntry, Disk, RecoveryPoint, VirtualMachine
from standby.domain.enums import ReturnCode, VirtualSystemType
from standby.domain.errors import AccessDenied, FileNotFound, InUse, InvalidParameter, StandbyError
from standby.engine.vms import DiskRequest, VmRequest, VmUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.i18n import translate
from standby.storage.qemu_img import ImageInfo
from standby.store.sqlite import Database
from tests.unit.test_cim_support import World, embedded, make_world, service_path

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
P = PurePosixPath


def img(path: str, inode: int | None = None) -> ImageFile:
    return ImageFile(P(path), None if inode is None else (1, inode))


# -- the pure rule --------------------------------------------------------------------------------------

PROTECTED = ProtectedStorage(
    data_dirs=(P("/var/lib/standby"),),
    replica_folders=(P("/srv/replicas"), P("/var/lib/standby/replicas")),
    point_images=(img("/srv/replicas/web_1/disks/d0/rp-0000000002.qcow2", 20),
                  img("/srv/replicas/web_1/disks/d0/rp-0000000001.qcow2", 10),
                  img("/mnt/moved/base.qcow2", 30)),  # a point's chain may leave the storage location
    vm_images=(VmImage(img("/images/db.qcow2", 40), "db"),
               VmImage(img("/images/golden.qcow2", 50), "db", top=False),
               VmImage(img("/images/web.qcow2", 60), "web"),
               VmImage(img("/images/golden.qcow2", 50), "web", top=False)),
)


@dataclass(frozen=True)
class Row:
    name: str
    chain: tuple[ImageFile, ...]
    refusal: Refusal | None
    image: str = ""  # which image of the chain the verdict names (default: the top)
    folder: str | None = None
    vm: str = ""


ROWS = [
    Row("a plain image elsewhere", (img("/images/new.qcow2", 1),), None),
    Row("an overlay over a shared base", (img("/images/new.qcow2", 1), img("/images/golden.qcow2", 50)),
        None),
    Row("a name that only starts like a point", (img("/images/rp-web.qcow2", 1),), None),
    Row("a folder next to the replica storage", (img("/srv/replicas-old/x.qcow2", 1),), None),
    Row("inside a storage location", (img("/srv/replicas/web_1/disks/d0/rp-0000000002.qcow2", 20),),
        Refusal.REPLICA_STORAGE, folder="/srv/replicas"),
    Row("any file of a storage location", (img("/srv/replicas/notes.qcow2", 2),),
        Refusal.REPLICA_STORAGE, folder="/srv/replicas"),
    Row("the storage location itself", (img("/srv/replicas", 3),), Refusal.REPLICA_STORAGE,
        folder="/srv/replicas"),
    Row("the replica storage inside the data dir", (img("/var/lib/standby/replicas/a/rp-0000000001.qcow2"),),
        Refusal.REPLICA_STORAGE, folder="/var/lib/standby/replicas"),
    Row("a point copied out under its name", (img("/tmp/rp-0000000007.qcow2", 4),), Refusal.RECOVERY_POINT),
    Row("a partial point", (img("/tmp/rp-0000000008.qcow2.partial", 5),), Refusal.RECOVERY_POINT),
    Row("a hard link to a point", (img("/tmp/innocent.qcow2", 10),), Refusal.RECOVERY_POINT),
    Row("an image of a point's chain outside the storage", (img("/mnt/moved/base.qcow2", 30),),
        Refusal.RECOVERY_POINT),
    Row("another VM's disk", (img("/images/db.qcow2", 40),), Refusal.VM_DISK, vm="db"),
    Row("a hard link to another VM's disk", (img("/tmp/copy.qcow2", 40),), Refusal.VM_DISK, vm="db"),
    Row("another VM's disk by path without an inode", (img("/images/web.qcow2"),), Refusal.VM_DISK, vm="web"),
    Row("the base under other VMs' disks", (img("/images/golden.qcow2", 50),), Refusal.VM_BACKING, vm="db"),
    Row("a file of the data dir", (img("/var/lib/standby/vms/X/d0.qcow2", 6),), Refusal.DATA_DIR,
        folder="/var/lib/standby"),
    Row("the store", (img("/var/lib/standby/standby.db", 7),), Refusal.DATA_DIR, folder="/var/lib/standby"),
    Row("an overlay over a point", (img("/images/new.qcow2", 1),
                                    img("/srv/replicas/web_1/disks/d0/rp-0000000002.qcow2", 20)),
        Refusal.BACKED_BY_POINT, image="/srv/replicas/web_1/disks/d0/rp-0000000002.qcow2",
        folder="/srv/replicas"),
    Row("an overlay over a hard link to a point", (img("/images/new.qcow2", 1), img("/tmp/l.qcow2", 10)),
        Refusal.BACKED_BY_POINT, image="/tmp/l.qcow2"),
    Row("an overlay over a point-named copy", (img("/images/new.qcow2", 1), img("/tmp/rp-0000000003.qcow2")),
        Refusal.BACKED_BY_POINT, image="/tmp/rp-0000000003.qcow2"),
    Row("an overlay two links above a point", (img("/images/new.qcow2", 1), img("/images/mid.qcow2", 2),
                                               img("/mnt/moved/base.qcow2", 30)),
        Refusal.BACKED_BY_POINT, image="/mnt/moved/base.qcow2"),
    Row("an overlay over a file of the data dir", (img("/images/new.qcow2", 1),
                                                   img("/var/lib/standby/vms/X/d0.qcow2", 6)),
        Refusal.BACKED_BY_POINT, image="/var/lib/standby/vms/X/d0.qcow2", folder="/var/lib/standby"),
    Row("an overlay over another VM's disk", (img("/images/new.qcow2", 1), img("/images/db.qcow2", 40)),
        Refusal.BACKED_BY_VM_DISK, image="/images/db.qcow2", vm="db"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_the_rule(row: Row) -> None:
    verdict = judge_disk(row.chain, PROTECTED)
    if row.refusal is None:
        assert verdict is None
        return
    expected = Verdict(row.refusal, P(row.image) if row.image else row.chain[0].path,
                       P(row.folder) if row.folder else None, row.vm)
    assert verdict == expected


def test_nothing_protected_refuses_only_point_names() -> None:
    assert judge_disk((img("/a/b.qcow2"),), ProtectedStorage()) is None
    verdict = judge_disk((img("/a/rp-0000000001.qcow2"),), ProtectedStorage())
    assert verdict is not None and verdict.refusal is Refusal.RECOVERY_POINT


ERRORS: dict[Refusal, tuple[type[StandbyError], ReturnCode, str]] = {
    Refusal.DATA_DIR: (AccessDenied, ReturnCode.ACCESS_DENIED, "DiskInDataDir"),
    Refusal.REPLICA_STORAGE: (AccessDenied, ReturnCode.ACCESS_DENIED, "DiskInReplicaStorage"),
    Refusal.RECOVERY_POINT: (AccessDenied, ReturnCode.ACCESS_DENIED, "DiskIsRecoveryPoint"),
    Refusal.BACKED_BY_POINT: (AccessDenied, ReturnCode.ACCESS_DENIED, "DiskBackedByRecoveryPoint"),
    Refusal.VM_DISK: (InUse, ReturnCode.SYSTEM_IN_USE, "DiskInUse"),
    Refusal.VM_BACKING: (InUse, ReturnCode.SYSTEM_IN_USE, "DiskBacksVm"),
    Refusal.BACKED_BY_VM_DISK: (InUse, ReturnCode.SYSTEM_IN_USE, "DiskBackedByVmDisk"),
}


@pytest.mark.parametrize("refusal", list(Refusal))
def test_each_refusal_is_a_domain_error_with_a_catalog_text(refusal: Refusal) -> None:
    cls, code, message_id = ERRORS[refusal]
    error = refusal_error(Verdict(refusal, P("/b/x.qcow2"), P("/srv/replicas"), "db"), "/a/x.qcow2")
    assert type(error) is cls and error.code == code and error.message_id == message_id
    assert "/a/x.qcow2" in str(error)
    args = {key: str(value) for key, value in error.args_map.items()}
    for language in ("en", "de"):
        text = translate(message_id, language, **args)
        assert "/a/x.qcow2" in text and "{" not in text, (language, text)


# -- the engine entry over real files -------------------------------------------------------------------


@dataclass
class Files:
    """Placeholder images and the backing file each one names (the qcow2 header, as the test says)."""

    root: Path
    backing: dict[Path, Path] = field(default_factory=dict)

    def image(self, name: str, backing: Path | None = None) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")
        if backing is not None:
            self.backing[Path(os.path.realpath(path))] = backing
        return path

    def backing_of(self, path: Path) -> Path | None:
        if not path.is_file():
            raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path))
        return self.backing.get(Path(os.path.realpath(path)))

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        path.write_bytes(b"placeholder")

    def image_info(self, path: Path) -> ImageInfo:
        return ImageInfo(str(path), "qcow2", 1 << 30)


@dataclass
class Host:
    vms: VmUseCases
    db: Database
    files: Files
    storage: Path  # the authorization entry's location
    point: Path  # rp-0000000002.qcow2, over rp-0000000001.qcow2
    older: Path
    other_disk: Path  # the disk of VM "db"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    files = Files(tmp_path)
    db = Database.memory()
    vms = VmUseCases(db, FakeHypervisor(check_files=False), lambda: NOW, vm_dir=tmp_path / "data" / "vms",
                     images=files, data_dir=tmp_path / "data", backing_of=files.backing_of)
    storage = tmp_path / "replicas"
    older = files.image("replicas/web_1/disks/d0/rp-0000000001.qcow2")
    point = files.image("replicas/web_1/disks/d0/rp-0000000002.qcow2", older)
    db.auth_entries.insert(AuthorizationEntry("*", "", str(storage)))
    db.vms.insert(VirtualMachine("R", "web", 256, 1, disks=(Disk("d0", str(point), 1 << 30),)))
    db.recovery_points.insert(RecoveryPoint("R-2", "R", 2, NOW, VirtualSystemType.REPLICA_STANDARD,
                                            images=(("d0", str(point)),)))
    base = files.image("images/golden.qcow2")
    other = files.image("images/db.qcow2", base)
    db.vms.insert(VirtualMachine("D", "db", 256, 1, disks=(Disk("d0", str(other), 1 << 30),)))
    return Host(vms, db, files, storage, point, older, other)


def define(host: Host, *paths: str) -> VirtualMachine:
    return host.vms.define(VmRequest("new", disks=tuple(DiskRequest(path=p) for p in paths)))


def refused(host: Host, *paths: str) -> StandbyError:
    with pytest.raises(StandbyError) as caught:
        define(host, *paths)
    assert [vm.name for vm in host.db.vms.list()] == ["db", "web"]  # nothing was stored
    return caught.value


def test_a_point_by_its_path_through_a_symlink_and_through_dot_dot(host: Host, tmp_path: Path) -> None:
    assert refused(host, str(host.point)).message_id == "DiskInReplicaStorage"
    link = tmp_path / "looks-fine.qcow2"
    link.symlink_to(host.point)
    assert refused(host, str(link)).message_id == "DiskInReplicaStorage"
    dotted = tmp_path / "images" / ".." / "replicas" / "web_1" / "disks" / "d0" / host.older.name
    assert refused(host, str(dotted)).message_id == "DiskInReplicaStorage"
    linked_folder = tmp_path / "elsewhere"
    linked_folder.symlink_to(host.point.parent)
    assert refused(host, str(linked_folder / host.older.name)).message_id == "DiskInReplicaStorage"


def test_a_hard_link_to_a_point_and_an_overlay_over_one(host: Host, tmp_path: Path) -> None:
    hard = tmp_path / "images" / "copy.qcow2"
    os.link(host.older, hard)
    error = refused(host, str(hard))
    assert isinstance(error, AccessDenied) and error.message_id == "DiskIsRecoveryPoint"
    # A point names its backing file relative to its folder: beside the link that file is missing, and
    # the answer is still that the file is a point, not that its chain is broken.
    relative = tmp_path / "images" / "copy-of-newer.qcow2"
    os.link(host.point, relative)
    host.files.backing[Path(os.path.realpath(relative))] = relative.parent / host.older.name
    assert refused(host, str(relative)).message_id == "DiskIsRecoveryPoint"
    overlay = host.files.image("images/overlay.qcow2", host.point)
    error = refused(host, str(overlay))
    assert error.message_id == "DiskBackedByRecoveryPoint" and error.args_map["backing"] == str(host.point)


def test_what_other_vms_use(host: Host, tmp_path: Path) -> None:
    error = refused(host, str(host.other_disk))
    assert isinstance(error, InUse) and error.message_id == "DiskInUse"
    assert refused(host, str(tmp_path / "images" / "golden.qcow2")).message_id == "DiskBacksVm"
    over_disk = host.files.image("images/over-db.qcow2", host.other_disk)
    assert refused(host, str(over_disk)).message_id == "DiskBackedByVmDisk"
    # A linked clone of the same base is fine, stored under its real path.
    clone = host.files.image("images/clone.qcow2", tmp_path / "images" / "golden.qcow2")
    link = tmp_path / "clone-link.qcow2"
    link.symlink_to(clone)
    vm = define(host, str(link))
    assert vm.disks[0].path == os.path.realpath(clone)


def test_files_of_the_data_dir(host: Host, tmp_path: Path) -> None:
    stray = host.files.image("data/run/X/scratch.qcow2")
    assert refused(host, str(stray)).message_id == "DiskInDataDir"


def test_bad_paths_are_the_callers_mistake(host: Host, tmp_path: Path) -> None:
    missing = refused(host, str(tmp_path / "missing.qcow2"))
    assert isinstance(missing, FileNotFound) and missing.message_id == "DiskFileMissing"
    broken = host.files.image("images/broken.qcow2", tmp_path / "gone.qcow2")
    gone = refused(host, str(broken))
    assert isinstance(gone, FileNotFound) and gone.args_map["path"] == str(tmp_path / "gone.qcow2")
    for path, message_id in [("images/x.qcow2", "DiskPathNotAbsolute"), ("/a\x00b", "BadDiskPath"),
                             (" ", "BadDiskPath"), (str(tmp_path), "BadImage")]:
        error = refused(host, path)
        assert isinstance(error, InvalidParameter) and error.message_id == message_id, path
    looped = tmp_path / "images" / "loop.qcow2"
    host.files.image("images/loop.qcow2", looped)
    assert refused(host, str(looped)).message_id == "BadImage"


def test_one_image_for_two_disks(host: Host) -> None:
    image = host.files.image("images/twice.qcow2")
    assert refused(host, str(image), str(image)).message_id == "DiskListedTwice"


def test_the_guard_gives_the_real_path_and_its_chain(host: Host) -> None:
    guard = host.vms.disk_guard
    with pytest.raises(AccessDenied):
        guard.vet(str(host.point), guard.protected())
    image = host.files.image("images/later.qcow2")
    vetted = guard.vet(str(image), guard.protected())
    assert vetted.path == Path(os.path.realpath(image))
    assert [c.path for c in vetted.chain] == [P(str(vetted.path))]


# -- both surfaces ----------------------------------------------------------------------------------------

VSMS = service_path("Msvm_VirtualSystemManagementService", "vmms")


@pytest.fixture(scope="module")
def surfaces() -> Iterator[tuple[World, TestClient]]:
    world = make_world()
    with TestClient(create_app(world.services), raise_server_exceptions=True) as client:
        yield world, client
    world.services.close()


def _world_files(world: World) -> dict[str, str]:
    """A replica's point and disk, another VM's disk, and what else the cases name, under the world's
    data dir's siblings (placeholder files: every case is refused before qemu-img reads them)."""
    root = world.services.config.data_dir.parent / f"{world.services.config.data_dir.name}-files"
    storage = root / "replicas"
    point = storage / "web_R" / "disks" / "d0" / "rp-0000000003.qcow2"
    other = root / "images" / "db.qcow2"
    for path in (point, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")
    link = root / "images" / "innocent.qcow2"
    if not link.is_symlink():
        link.symlink_to(point)
    copied = root / "images" / "rp-0000000009.qcow2"
    copied.write_bytes(b"placeholder")
    world.reset()
    world.db.auth_entries.insert(AuthorizationEntry("*.example.com", "", str(storage)))
    world.db.vms.insert(VirtualMachine("4A0C2E6B-1111-4C3B-9D51-0000000000AA", "replica", 256, 1,
                                       disks=(Disk("d0", str(point), 1 << 30),)))
    world.db.vms.insert(VirtualMachine("4A0C2E6B-1111-4C3B-9D51-0000000000BB", "db", 256, 1,
                                       disks=(Disk("d0", str(other), 1 << 30),)))
    return {"point": str(point), "link": str(link), "other": str(other), "copied": str(copied),
            "missing": str(root / "missing.qcow2"), "folder": str(root), "relative": "images/db.qcow2"}


PARITY = [
    ("point", 32769, 403),
    ("link", 32769, 403),
    ("copied", 32769, 403),
    ("other", 32774, 409),
    ("missing", 32779, 404),
    ("folder", 32773, 400),
    ("relative", 32773, 400),
]


def _cim_define(world: World, path: str) -> int:
    disk = embedded("Msvm_StorageAllocationSettingData", ResourceType=Uint16(31), HostResource=[path])
    code, _ = world.invoke(VSMS, "DefineSystem", ResourceSettings=[disk],
                           SystemSettings=embedded("Msvm_VirtualSystemSettingData", ElementName="new"))
    return code


@pytest.mark.parametrize(("case", "code", "status"), PARITY, ids=[p[0] for p in PARITY])
def test_cim_and_rest_refuse_alike(surfaces: tuple[World, TestClient], case: str, code: int,
                                   status: int) -> None:
    world, client = surfaces
    path = _world_files(world)[case]
    before = sorted(vm.name for vm in world.db.vms.list())
    assert _cim_define(world, path) == code
    assert sorted(vm.name for vm in world.db.vms.list()) == before
    answer = client.post("/api/v1/vms", json={"name": "new", "disks": [{"path": path}]})
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and set(body) == {"code", "name", "message"}
    assert sorted(vm.name for vm in world.db.vms.list()) == before

