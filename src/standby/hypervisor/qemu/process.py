"""One supervised QEMU process: its own process group, its output in a log file, always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from standby.domain.errors import Unavailable


class QemuProcess:
    """A ``qemu-system`` child in a new session (so a signal to its group reaches nothing of ours)."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        """Start the process; ``Unavailable`` when the binary cannot be run."""
        with self.log_path.open("ab") as log:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise Unavailable(
                    f"cannot run {self.argv[0]}: {exc.strerror}", message_id="QemuMissing"
                ) from exc

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        assert self._proc is not None, "spawn() first"
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; the exit code, or minus the signal number."""
        return None if self._proc is None else self._proc.returncode

    async def wait(self) -> int:
        """Wait for the exit (this reaps the child) and return ``returncode``."""
        assert self._proc is not None, "spawn() first"
        return await self._proc.wait()

    def signal_group(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group; a group that is already gone is fine."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines QEMU printed (its error when it refused to start)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class AdoptedProcess:
    """A QEMU started by an earlier daemon (now reparented away from us), watched through a pidfd.

    It is not our child, so its exit status cannot be read: ``wait`` returns 0 and the driver tells a stop
    it asked for from a crash by its own flags and QEMU's SHUTDOWN event.
    """

    def __init__(self, pid: int, log_path: Path) -> None:
        self.log_path = log_path
        self._pid = pid
        self._fd = os.pidfd_open(pid)
        self._done = False

    @property
    def pid(self) -> int:
        """The process id (also its process group id: QEMU runs in its own session)."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; 0 once it is gone (the real status belongs to its parent)."""
        return 0 if self._done else None

    async def wait(self) -> int:
        """Wait until the process has exited."""
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # a pidfd turns readable once the process has exited
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(self._fd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(self._fd)
        self._done = True
        with contextlib.suppress(OSError):
            os.close(self._fd)
        return 0

    def signal_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal QEMU's process group; a group that is already gone is fine."""
        if self._done:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines QEMU printed."""
        return QemuProcess.log_tail(self, lines)  # type: ignore[arg-type]


def qemu_alive(pid: int, uuid: str) -> bool:
    """Whether ``pid`` is a live QEMU running the VM with ``uuid`` (its ``-uuid`` argument)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and uuid.lower().encode() in argv
