"""``qemu-img`` for VM disks: create a qcow2 image, read an image's format and size.

Failures become ``standby.domain.errors`` here (a missing file is ``FileNotFound``, an unreadable or
non-qcow2 image ``InvalidParameter``, a missing qemu-img ``Unavailable``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import FileNotFound, InvalidParameter, OutOfMemory, StandbyError, Unavailable

QEMU_IMG = "qemu-img"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``qemu-img info`` says about an image."""

    path: str
    format: str
    virtual_size: int
    backing_file: str | None = None


def create_qcow2(path: Path, size_bytes: int) -> None:
    """Create an empty qcow2 image of ``size_bytes`` at ``path`` (which must not exist)."""
    if path.exists():
        raise InvalidParameter(
            f"{path} already exists", message_id="AlreadyExists", kind="image", key=str(path)
        )
    _run(["create", "-q", "-f", "qcow2", str(path), str(size_bytes)], path)


def image_info(path: Path) -> ImageInfo:
    """Format, virtual size and backing file of the image at ``path``."""
    if not path.is_file():
        raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path))
    # -U: read the header even when a running VM holds the image's lock.
    out = _run(["info", "-U", "--output=json", str(path)], path)
    data = json.loads(out)
    return ImageInfo(str(path), str(data["format"]), int(data["virtual-size"]), data.get("backing-filename"))


def _run(args: list[str], path: Path) -> str:
    if shutil.which(QEMU_IMG) is None:
        raise Unavailable("qemu-img is not installed", message_id="ToolMissing", tool=QEMU_IMG)
    proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if "No space left" in reason:
            raise OutOfMemory(f"no space for {path}: {reason}")
        if "Could not open" in reason or "Image is not in qcow2 format" in reason:
            raise InvalidParameter(
                f"{path} is not a usable disk image: {reason}", message_id="BadImage", path=str(path)
            )
        raise StandbyError(f"qemu-img {args[0]} {path} failed: {reason}")
    return proc.stdout


class QemuImages:
    """The functions above as an object (what ``engine.vms`` takes as its ``DiskImages``)."""

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        """See ``create_qcow2``."""
        create_qcow2(path, size_bytes)

    def image_info(self, path: Path) -> ImageInfo:
        """See ``image_info``."""
        return image_info(path)
