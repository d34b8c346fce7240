"""The pid/lock file that keeps two daemons off one data directory.

An ``flock`` on ``<data-dir>/standby.pid`` is held for the daemon's lifetime; the kernel drops it when the
process dies (even by SIGKILL), so a stale file never blocks a restart. The file holds the owner's pid for
humans and for the error message a second daemon prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from standby.domain.errors import InUse


class DataDirLocked(InUse):
    """Another daemon already uses this data directory."""


class PidLock:
    """Exclusive, non-blocking lock on a pid file; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; raises ``DataDirLocked`` naming the other pid."""
        for _ in range(5):
            fd = self._lock_once()
            # A daemon that just exited unlinks the file it held: if ours was that one, open the new file.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise DataDirLocked(f"cannot settle the lock file {self.path}", message_id="DataDirLocked",
                                pid="?", data_dir=str(self.path.parent))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def _lock_once(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            who = f" (pid {other})" if other else ""
            raise DataDirLocked(
                f"another standby daemon{who} is using {self.path.parent}",
                message_id="DataDirLocked",
                pid=other or "?",
                data_dir=str(self.path.parent),
            ) from None
        return fd

    def release(self) -> None:
        """Remove the file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        # Unlink while still holding the lock so a starting daemon never sees our pid after we let go.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
