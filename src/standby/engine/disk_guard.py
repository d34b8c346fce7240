"""The file side of ``domain.disk_paths``: the candidate's real path and chain, and what standby protects.

``vet`` turns the path a caller named into the image a new disk may use, or raises: a path that is not
absolute or holds NUL (``InvalidParameter``), a file or backing file that is not there (``FileNotFound``),
not a regular file or a chain that cannot be read (``InvalidParameter`` ``BadImage``), and whatever the
pure rule refuses. ``protected`` reads the store (authorization entries, replica roots, recovery points,
every VM's disks) and follows each image's backing chain from the qcow2 headers
(``storage.chain.backing_file``: one small read per link, no qemu-img process and no lock, so images a
running VM holds are read too). A chain followed once is not followed again: recovery points share their
older points, and a chain hundreds of points deep costs one read per image, not per point.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from standby.domain.disk_paths import ImageFile, ProtectedStorage, VmImage, check_disk
from standby.domain.errors import FileNotFound, InvalidParameter, StandbyError
from standby.storage import chain
from standby.store.port import Store

#: The backing file an image names (joined to its folder), or None; ``storage.chain.backing_file``.
BackingOf = Callable[[Path], Path | None]
#: Deeper than any chain standby makes (retention keeps 24 hours of points); a longer one is refused.
MAX_CHAIN = 100_000


@dataclass(frozen=True, slots=True)
class VettedDisk:
    """An image a new disk may use: its real path and its chain, top first."""

    path: Path
    chain: tuple[ImageFile, ...]


def real(path: Path) -> PurePosixPath:
    """``path`` with symlinks and ``..`` resolved (as far as it exists)."""
    return PurePosixPath(os.path.realpath(path))


def identity(path: PurePosixPath) -> tuple[int, int] | None:
    """(device, inode) of the file, None when it is not there."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


@dataclass(slots=True)
class _Chains:
    """Backing chains of the store's images, each link read once."""

    backing_of: BackingOf
    next_of: dict[PurePosixPath, PurePosixPath | None] = field(default_factory=dict)

    def images(self, top: str) -> Iterator[ImageFile]:
        """``top`` and its backing images; a link that cannot be read ends the chain (protection of other
        VMs' files is best effort: their broken chain must not block defining a new VM)."""
        path: PurePosixPath | None = real(Path(top))
        seen: set[PurePosixPath] = set()
        while path is not None and path not in seen:
            seen.add(path)
            yield ImageFile(path, identity(path))
            if path not in self.next_of:
                try:
                    backing = self.backing_of(Path(path))
                except (StandbyError, OSError):
                    backing = None
                self.next_of[path] = real(backing) if backing is not None else None
            path = self.next_of[path]


class DiskGuard:
    """Decides whether an existing image may become a disk (``domain.disk_paths``) from the store and
    the files."""

    def __init__(self, db: Store, *, data_dir: Path, backing_of: BackingOf = chain.backing_file) -> None:
        self._db = db
        self._data_dir = data_dir
        self._backing_of = backing_of

    def protected(self) -> ProtectedStorage:
        """Everything no new disk may be or read through, as the store and the files stand now."""
        chains = _Chains(self._backing_of)
        folders = [entry.storage_location for entry in self._db.auth_entries.list()]
        folders += [site.storage_root for site in self._db.replicas.list()]
        points = [image for point in self._db.recovery_points.list() for _, top in point.images if top
                  for image in chains.images(top)]
        used = []
        for vm in self._db.vms.list():
            for disk in vm.disks:
                if disk.path:
                    used += [VmImage(image, vm.name, top=n == 0) for n, image in
                             enumerate(chains.images(disk.path))]
        return ProtectedStorage(
            data_dirs=(real(self._data_dir),),
            replica_folders=tuple(real(Path(f)) for f in folders if f.strip() and Path(f).is_absolute()),
            point_images=tuple(points),
            vm_images=tuple(used),
        )

    def vet(self, given: str, protected: ProtectedStorage) -> VettedDisk:
        """The image ``given`` names when it may be a new disk; the refusal's error otherwise."""
        if not given.strip() or "\x00" in given:
            raise InvalidParameter("a disk path must be a non-empty path without NUL characters",
                                   message_id="BadDiskPath")
        if not Path(given).is_absolute():
            raise InvalidParameter(f"disk path {given!r} must be absolute: the daemon's working directory "
                                   "is not the caller's", message_id="DiskPathNotAbsolute", path=given)
        images: list[ImageFile] = []
        try:
            self._chain(given, images)
        except StandbyError:
            # A point linked elsewhere names its backing file relative to its own folder, which is then
            # missing: that the file is a point is the answer, not the broken chain.
            if images:
                check_disk(images, protected, given=given)
            raise
        check_disk(images, protected, given=given)
        return VettedDisk(Path(images[0].path), tuple(images))

    def _chain(self, given: str, images: list[ImageFile]) -> None:
        seen: set[tuple[int, int]] = set()
        path: Path | None = Path(given)
        while path is not None:
            resolved = real(path)
            try:
                found = os.stat(resolved)
            except OSError:
                named = given if not images else str(path)
                raise FileNotFound(f"{named} does not exist", message_id="DiskFileMissing",
                                   path=named) from None
            if not stat.S_ISREG(found.st_mode):
                raise InvalidParameter(f"{path} is not a disk image file", message_id="BadImage",
                                       path=str(path))
            key = (found.st_dev, found.st_ino)
            if key in seen or len(images) >= MAX_CHAIN:
                raise InvalidParameter(f"the backing chain of {given} loops at {path}", message_id="BadImage",
                                       path=given)
            seen.add(key)
            images.append(ImageFile(resolved, key))
            path = self._next(given, resolved)

    def _next(self, given: str, image: PurePosixPath) -> Path | None:
        try:
            return self._backing_of(Path(image))
        except FileNotFound:
            raise
        except (StandbyError, OSError) as bad:
            # A header that does not parse is the caller's image, not a failure of the daemon.
            raise InvalidParameter(f"{given} is not a usable disk image: {bad}", message_id="BadImage",
                                   path=given) from None
