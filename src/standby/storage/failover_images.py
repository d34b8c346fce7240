"""Failover images: overlays over a recovery point (constant time, nothing copied) and their chains.

A failover disk, a test VM's disk and the seed disk are each a qcow2 overlay whose backing file is a
recovery point's top image (or the seed ISO), named by its absolute path: ``qemu_img.create_overlay`` with
the size writes only a header (``-u``), whatever the disk's size and the chain's depth, as opening the
chain takes time linear in its depth (5.4 s at 840 points, bench P7). ``chain.walk_chain`` checks the chain
first from the qcow2 headers (every file there, each a qcow2 or raw at the bottom, no loop) and gives the
size, so a broken chain is still refused before anything is made.
"""

from __future__ import annotations

from pathlib import Path

from standby.domain.errors import FileNotFound, StandbyError
from standby.storage import chain, qemu_img


def failover_overlay(path: Path, backing: Path, *, backing_format: str = "qcow2") -> Path:
    """A new qcow2 at ``path`` over ``backing`` (absolute path recorded); an old file there is replaced.

    The backing chain is checked from its headers first (``FileNotFound`` / ``ChainError`` when broken);
    the overlay gets the backing's virtual size, as qemu-img would give it after opening the chain.
    """
    backing = backing.absolute()
    if not backing.is_file():
        raise FileNotFound(f"{backing} does not exist", message_id="DiskFileMissing", path=str(backing))
    size = chain.walk_chain(backing, top_format=backing_format)[0].size
    path.parent.mkdir(parents=True, exist_ok=True)
    return qemu_img.create_overlay(path, backing, backing_format=backing_format, size=size, relative=False,
                                   replace=True)


def backing_chain(path: Path) -> list[Path]:
    """``path`` and every backing file under it, top first (absolute paths), read from the qcow2 headers
    (no lock is taken: a running VM may hold the image)."""
    if not path.is_file():
        raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path))
    return [link.path.absolute() for link in chain.walk_chain(path.absolute(), top_format=None)]


def remove(paths: list[Path]) -> None:
    """Delete these files (missing ones are fine); ``StandbyError`` when one cannot be deleted."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StandbyError(f"cannot delete {path}: {exc.strerror}", message_id="FileDeleteFailed",
                               path=str(path)) from exc
