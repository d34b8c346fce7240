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
