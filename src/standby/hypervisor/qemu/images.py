"""VM disks as the engine asks for them: create a qcow2 image, read an image's format and size.

``qemu-img`` runs, and its failures are translated, in ``storage.qemu_img``; this is the ``DiskImages``
face of it that ``engine.vms`` takes, and the scratch image a cut needs.
"""

from __future__ import annotations

from pathlib import Path

from standby.storage import qemu_img
from standby.storage.qemu_img import ImageInfo

__all__ = ["ImageInfo", "QemuImages", "create_qcow2"]


def create_qcow2(path: Path, size_bytes: int) -> None:
    """Create an empty qcow2 image of ``size_bytes`` at ``path`` (which must not exist)."""
    qemu_img.create(path, size_bytes)


class QemuImages:
    """``engine.vms``'s ``DiskImages``: creating and inspecting disk images."""

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        """See ``create_qcow2``."""
        qemu_img.create(path, size_bytes)

    def image_info(self, path: Path) -> ImageInfo:
        """Format, virtual size and backing file of the image at ``path`` (``-U``: also while a running VM
        holds it)."""
        return qemu_img.info(path)
