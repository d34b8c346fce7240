"""Dirty bitmaps and NBD exports of a VM's images while its QEMU does not run (``qemu-img bitmap``,
``qemu-nbd``): the replication path of a VM that is off (planned-failover prepare, resync of an off VM).

Persistent bitmaps survive a clean QEMU exit in the qcow2 file; a bitmap flagged ``in-use`` was left by a QEMU
that did not exit cleanly and is inconsistent (it can only be removed). Failures become ``domain.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import StandbyError, Unavailable
from standby.storage.children import bound_to_daemon

QEMU_IMG = "qemu-img"
QEMU_NBD = "qemu-nbd"


@dataclass(frozen=True, slots=True)
class ImageBitmap:
    """A persistent bitmap stored in a qcow2 image."""

    name: str
    granularity: int
    enabled: bool
    inconsistent: bool


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{argv[0]} is not installed", message_id="ToolMissing", tool=argv[0])
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise StandbyError(f"{' '.join(argv[:2])} failed: {reason}", message_id="ImageToolFailed",
                           tool=argv[0], reason=reason)
    return proc.stdout


def image_bitmaps(path: Path) -> list[ImageBitmap]:
    """The persistent bitmaps of a qcow2 image that no process holds open."""
    info = json.loads(_run([QEMU_IMG, "info", "--output=json", "-f", "qcow2", str(path)]))
    found = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return [ImageBitmap(str(b["name"]), int(b["granularity"]), "auto" in b.get("flags", []),
                        "in-use" in b.get("flags", [])) for b in found]


def bitmap_add(path: Path, name: str, granularity: int) -> None:
    """Add an enabled persistent bitmap (it records writes once a QEMU opens the image)."""
    _run([QEMU_IMG, "bitmap", "--add", "-g", str(granularity), "-f", "qcow2", str(path), name])


def bitmap_disable(path: Path, name: str) -> None:
    """Stop a bitmap from recording."""
    _run([QEMU_IMG, "bitmap", "--disable", "-f", "qcow2", str(path), name])


def bitmap_remove(path: Path, name: str) -> None:
    """Remove a bitmap (also an inconsistent one)."""
    _run([QEMU_IMG, "bitmap", "--remove", "-f", "qcow2", str(path), name])


def bitmap_merge(path: Path, source: str, target: str) -> None:
    """Merge bitmap ``source`` into ``target`` (same image)."""
    _run([QEMU_IMG, "bitmap", "--merge", source, "-f", "qcow2", str(path), target])


class QemuNbdExport:
    """``qemu-nbd --read-only`` of one image on a unix socket, optionally exposing one dirty bitmap.

    Use as ``async with``: the server runs until the block ends (then it is terminated and reaped).
    """

    def __init__(self, image: Path, socket_path: Path, export: str, *, bitmap: str | None = None) -> None:
        self.image = image
        self.socket_path = socket_path
        self.export = export
        self.bitmap = bitmap
        self._proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        """The command line (``-A`` adds the allocation-depth context, ``-e 4`` allows parallel readers)."""
        argv = [QEMU_NBD, "--read-only", "-f", "qcow2", "-A", "-t", "-e", "4", "-k", str(self.socket_path),
                "-x", self.export]
        if self.bitmap:
            argv += ["-B", self.bitmap]
        return [*argv, str(self.image)]

    async def __aenter__(self) -> QemuNbdExport:
        if shutil.which(QEMU_NBD) is None:
            raise Unavailable("qemu-nbd is not installed", message_id="ToolMissing", tool=QEMU_NBD)
        self.socket_path.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            *bound_to_daemon(self.argv()), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        while not self.socket_path.exists():
            if self._proc.returncode is not None or loop.time() > deadline:
                err = b""
                if self._proc.stderr is not None and self._proc.returncode is not None:
                    err = await self._proc.stderr.read()
                await self._stop()
                raise StandbyError(f"qemu-nbd did not serve {self.image}: {err.decode(errors='replace')}",
                                   message_id="ImageToolFailed", tool=QEMU_NBD, reason=err.decode())
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.socket_path.unlink(missing_ok=True)
        self._proc = None
