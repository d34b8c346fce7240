"""Which existing image may become a disk of a VM being defined (or imported): one pure rule.

An imported disk is opened read-write by QEMU when its VM starts. If that file is a recovery point, or an
image some recovery point or another VM reads through its backing chain, the start rewrites what those
read: a point imported as a disk once silently corrupted every later point built on it. So the
rule refuses a candidate that, with symlinks and ``..`` resolved by the caller (checked in this order,
the first match names the reason):

- lies inside replica storage: an authorization entry's ``ReplicaStorageLocation`` or a replica's root;
- is a recovery point: named as one (``rp-<sequence>.qcow2``, ``.partial`` too) or any image of any
  recovery point's chain;
- is a disk of a VM in the store, or an image in the backing chain of one (a shared base under another
  VM's disk would change under that VM);
- lies inside standby's data directory (the VMs' own disks, run files, the store);
- is an overlay whose backing chain reaches replica storage, a recovery point, the data directory or
  another VM's disk itself: those images change under the overlay (retention merges points, a running
  VM writes its disk). A base image that other VMs' disks also read is fine: linked clones share
  read-only bases.

Images are compared by real path and, when the caller knows it, by file identity (device, inode), so a
hard link to a point is the point. Refusals are ``AccessDenied`` (32769) for standby's storage and
recovery points, ``InUse`` (32774) for what belongs to another VM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import TypeVar

from standby.domain.errors import AccessDenied, InUse, StandbyError
from standby.domain.replica import parse_point_file

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image as the rule sees it: its real path and its (device, inode), which hard links share."""

    path: PurePosixPath
    identity: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class VmImage:
    """An image a VM in the store uses: its disk (``top``) or an image under it."""

    image: ImageFile
    vm: str  # the VM's name, for the message
    top: bool = True


@dataclass(frozen=True, slots=True)
class ProtectedStorage:
    """What no new disk may be or read through; every path absolute and real."""

    data_dirs: tuple[PurePosixPath, ...] = ()
    replica_folders: tuple[PurePosixPath, ...] = ()
    point_images: tuple[ImageFile, ...] = ()
    vm_images: tuple[VmImage, ...] = ()


class Refusal(StrEnum):
    """Why a candidate image cannot be a disk."""

    DATA_DIR = "data-dir"
    REPLICA_STORAGE = "replica-storage"
    RECOVERY_POINT = "recovery-point"
    VM_DISK = "vm-disk"
    VM_BACKING = "vm-backing"
    BACKED_BY_POINT = "backed-by-point"
    BACKED_BY_VM_DISK = "backed-by-vm-disk"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A refusal: the reason and what it names (the folder, the backing image, the other VM)."""

    refusal: Refusal
    image: PurePosixPath  # the image of the candidate's chain that is refused
    folder: PurePosixPath | None = None
    vm: str = ""


@dataclass(slots=True)
class _Index:
    points_by_path: set[PurePosixPath] = field(default_factory=set)
    points_by_id: set[tuple[int, int]] = field(default_factory=set)
    vms_by_path: dict[PurePosixPath, VmImage] = field(default_factory=dict)
    vms_by_id: dict[tuple[int, int], VmImage] = field(default_factory=dict)

    @classmethod
    def of(cls, protected: ProtectedStorage) -> _Index:
        index = cls()
        for point in protected.point_images:
            index.points_by_path.add(point.path)
            if point.identity is not None:
                index.points_by_id.add(point.identity)
        for used in protected.vm_images:
            index._add(index.vms_by_path, used.image.path, used)
            if used.image.identity is not None:
                index._add(index.vms_by_id, used.image.identity, used)
        return index

    @staticmethod
    def _add(found: dict[_K, VmImage], key: _K, used: VmImage) -> None:
        # A VM's disk outranks the same file seen as a base under another VM's disk: it is the one written.
        known = found.get(key)
        if known is None or (used.top and not known.top):
            found[key] = used

    def is_point(self, image: ImageFile) -> bool:
        return image.path in self.points_by_path or (
            image.identity is not None and image.identity in self.points_by_id
        )

    def vm_use(self, image: ImageFile) -> VmImage | None:
        found = self.vms_by_path.get(image.path)
        if found is None and image.identity is not None:
            found = self.vms_by_id.get(image.identity)
        return found


def _inside(path: PurePosixPath, folders: Iterable[PurePosixPath]) -> PurePosixPath | None:
    for folder in folders:
        if path.is_relative_to(folder):
            return folder
    return None


def judge_disk(chain: Sequence[ImageFile], protected: ProtectedStorage) -> Verdict | None:
    """None when the image ``chain[0]`` (with its backing images ``chain[1:]``) may be a new disk, else
    the first reason it may not (see the module docstring for the order)."""
    if not chain:
        raise ValueError("a candidate disk has at least its own image")
    index = _Index.of(protected)
    top = chain[0]
    if (folder := _inside(top.path, protected.replica_folders)) is not None:
        return Verdict(Refusal.REPLICA_STORAGE, top.path, folder)
    if parse_point_file(top.path.name) is not None or index.is_point(top):
        return Verdict(Refusal.RECOVERY_POINT, top.path)
    if (used := index.vm_use(top)) is not None:
        return Verdict(Refusal.VM_DISK if used.top else Refusal.VM_BACKING, top.path, vm=used.vm)
    if (folder := _inside(top.path, protected.data_dirs)) is not None:
        return Verdict(Refusal.DATA_DIR, top.path, folder)
    for backing in chain[1:]:
        folder = _inside(backing.path, (*protected.replica_folders, *protected.data_dirs))
        if folder is not None or parse_point_file(backing.path.name) is not None or index.is_point(backing):
            return Verdict(Refusal.BACKED_BY_POINT, backing.path, folder)
        used = index.vm_use(backing)
        if used is not None and used.top:
            return Verdict(Refusal.BACKED_BY_VM_DISK, backing.path, vm=used.vm)
    return None


def refusal_error(verdict: Verdict, given: str) -> StandbyError:
    """The domain error for a refusal of the disk the caller named ``given``."""
    image, folder, vm = str(verdict.image), str(verdict.folder or ""), verdict.vm
    match verdict.refusal:
        case Refusal.DATA_DIR:
            return AccessDenied(f"{given} lies inside standby's data directory {folder}",
                                message_id="DiskInDataDir", path=given, folder=folder)
        case Refusal.REPLICA_STORAGE:
            return AccessDenied(f"{given} lies inside the replica storage {folder}",
                                message_id="DiskInReplicaStorage", path=given, folder=folder)
        case Refusal.RECOVERY_POINT:
            return AccessDenied(f"{given} is a recovery point, not a disk a VM may write",
                                message_id="DiskIsRecoveryPoint", path=given)
        case Refusal.VM_DISK:
            return InUse(f"{given} is already a disk of another VM ({vm})", message_id="DiskInUse",
                         path=given)
        case Refusal.VM_BACKING:
            return InUse(f"{given} is in the backing chain of a disk of VM {vm}", message_id="DiskBacksVm",
                         path=given, vm=vm)
        case Refusal.BACKED_BY_VM_DISK:
            return InUse(f"{given} reads through {image}, a disk of VM {vm}", message_id="DiskBackedByVmDisk",
                         path=given, backing=image, vm=vm)
        case Refusal.BACKED_BY_POINT:
            return AccessDenied(f"{given} reads through {image}, a recovery point or replica storage",
                                message_id="DiskBackedByRecoveryPoint", path=given, backing=image)


def check_disk(chain: Sequence[ImageFile], protected: ProtectedStorage, *, given: str) -> None:
    """``judge_disk`` as the engine uses it: raise the refusal's error, if any."""
    verdict = judge_disk(chain, protected)
    if verdict is not None:
        raise refusal_error(verdict, given)
