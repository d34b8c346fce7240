"""Pure helpers for the test guest's kernel: the ELF vmlinux inside a bzImage, and module load order.

Booting the ELF ``vmlinux`` through PVH is about twice as fast under TCG as booting the bzImage (DESIGN §7),
so the builder takes the xz-compressed payload out of Debian's bzImage.
"""

from __future__ import annotations

import lzma

from standby.domain.errors import InvalidParameter

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel from an xz-compressed bzImage; tries each xz magic until one decompresses to ELF."""
    start = bzimage.find(XZ_MAGIC)
    while start != -1:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            elf = decompressor.decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(ELF_MAGIC):
            return elf
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise InvalidParameter("no xz-compressed ELF kernel found in the bzImage", message_id="GuestKernelFormat")


def modules_from_show_depends(output: str, root: str) -> list[str]:
    """Module files in load order from ``modprobe --show-depends`` output, relative to ``root``.

    Built-in modules (``builtin NAME``) need no file; duplicates keep their first position.
    """
    seen: list[str] = []
    prefix = root.rstrip("/")
    for line in output.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "insmod":
            continue
        path = words[1]
        if path.startswith(prefix):
            path = path[len(prefix) :]
        if path not in seen:
            seen.append(path)
    return seen
