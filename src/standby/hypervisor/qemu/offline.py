"""Dirty bitmaps and NBD exports of a VM's images while its QEMU does not run (``qemu-img bitmap``,
``qemu-nbd``): the replication path of a VM that is off (planned-failover prepare, resync of an off VM).

Persistent bitmaps survive a clean QEMU exit in the qcow2 file; a bitmap flagged ``in-use`` was left by a QEMU
that did not exit cleanly and is inconsistent (it can only be removed). The bitmap calls are
``storage.qemu_img``'s and the export is a ``storage.qemu_nbd`` launcher, where failures become
``domain.errors``.
"""

from __future__ import annotations

from pathlib import Path

from standby.storage import qemu_img
from standby.storage.qemu_img import ImageBitmap, bitmap_add, bitmap_disable, bitmap_merge, bitmap_remove
from standby.storage.qemu_nbd import NbdExport, QemuNbd

__all__ = ["ImageBitmap", "QemuNbdExport", "bitmap_add", "bitmap_disable", "bitmap_merge", "bitmap_remove",
           "image_bitmaps"]

READERS = 4


def image_bitmaps(path: Path) -> list[ImageBitmap]:
    """The persistent bitmaps of a qcow2 image that no process holds open."""
    return qemu_img.bitmaps(path)


class QemuNbdExport(QemuNbd):
    """``qemu-nbd --read-only`` of one image on a unix socket, optionally exposing one dirty bitmap, with the
    allocation-depth context (``-A``) and ``READERS`` parallel readers.

    Use as ``async with``: the server runs until the block ends (then it is terminated and reaped).
    """

    def __init__(self, image: Path, socket_path: Path, export: str, *, bitmap: str | None = None) -> None:
        super().__init__(NbdExport(image, socket_path, export, allocation_depth=True, clients=READERS,
                                   bitmap=bitmap))

    @property
    def image(self) -> Path:
        """The exported image."""
        return self.spec.image

    @property
    def socket_path(self) -> Path:
        """Where it listens."""
        return self.spec.socket

    @property
    def export(self) -> str:
        """The export name."""
        return self.spec.name
