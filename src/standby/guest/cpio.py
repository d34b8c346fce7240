"""A minimal, deterministic writer of ``newc`` cpio archives (the format the kernel unpacks as initramfs).

Every entry is owned by root with mtime 0, so the same inputs always give the same bytes (the build cache
compares hashes).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member: a directory, a regular file (``data``) or a symlink (``target``)."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def directory(name: str) -> Entry:
        """A directory with mode 0755."""
        return Entry(name, stat.S_IFDIR | 0o755)

    @staticmethod
    def file(name: str, data: bytes, executable: bool = False) -> Entry:
        """A regular file."""
        return Entry(name, stat.S_IFREG | (0o755 if executable else 0o644), data)

    @staticmethod
    def chardev(name: str, major: int, minor: int) -> Entry:
        """A character device node (``/dev/console`` must exist before devtmpfs is mounted)."""
        return Entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    @staticmethod
    def symlink(name: str, target: str) -> Entry:
        """A symbolic link to ``target``."""
        return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    major, minor = entry.rdev
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, major, minor, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write_archive(out: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` (parents before children) and the trailer to ``out``."""
    ino = 1
    for entry in [*entries, Entry(_TRAILER, 0)]:
        name = entry.name.lstrip("/").encode() or b"."
        head = _header(ino if entry.name != _TRAILER else 0, entry, name) + name + b"\0"
        out.write(head + _pad(len(head)))
        out.write(entry.data + _pad(len(entry.data)))
        ino += 1


def parents(path: str) -> list[str]:
    """Every ancestor directory of ``path`` (``/usr/lib/x`` -> ``usr``, ``usr/lib``)."""
    parts = Path(path.lstrip("/")).parts[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
