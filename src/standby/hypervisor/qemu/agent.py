"""qemu-guest-agent over the VM's virtio-serial channel (through ``qmp.QmpChannel``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from pathlib import Path
from typing import Any

from standby.domain.errors import StandbyError, Unavailable
from standby.hypervisor.qemu.qmp import QmpChannel

log = logging.getLogger(__name__)


class GuestAgent:
    """One agent connection; ``sync()`` first drops stale replies left in the channel by an earlier client."""

    def __init__(self, socket_path: Path, name: str) -> None:
        self._path = socket_path
        self._channel = QmpChannel(f"{name}-agent", agent=True)

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect and synchronise; ``Unavailable`` when no agent answers within ``timeout``."""
        await self._channel.connect(self._path, timeout)
        try:
            await self.sync(timeout)
        except StandbyError:
            await self.close()
            raise

    async def sync(self, timeout: float = 5.0) -> None:
        """``guest-sync`` with a random token: the first reply that carries it ends the resync."""
        token = random.randrange(1, 2**31)
        try:
            got = await self._channel.execute("guest-sync", {"id": token}, timeout=timeout)
        except StandbyError as exc:
            raise Unavailable(
                f"the guest agent does not answer: {exc}", message_id="AgentUnavailable"
            ) from exc
        if got != token:
            raise Unavailable("the guest agent answered out of step", message_id="AgentUnavailable")

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Run an agent command."""
        return await self._channel.execute(command, arguments, timeout=timeout)

    async def shutdown(self, mode: str = "powerdown") -> None:
        """``guest-shutdown``: on success the agent never answers, so the channel simply closes."""
        # No reply is the expected outcome: the guest goes down before (or instead of) replying.
        with contextlib.suppress(StandbyError):
            await self._channel.execute("guest-shutdown", {"mode": mode}, timeout=3.0)

    async def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
        """``guest-exec`` a command and wait for it: (exit code, stdout + stderr)."""
        started = await self.execute("guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status = await self.execute("guest-exec-status", {"pid": started["pid"]})
            if status.get("exited"):
                out = base64.b64decode(status.get("out-data", "")) + base64.b64decode(
                    status.get("err-data", "")
                )
                return int(status.get("exitcode", -1)), out.decode(errors="replace")
            await asyncio.sleep(0.1)
        raise StandbyError(f"guest command {argv[0]} did not finish in {timeout} s")

    async def write_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` in the guest (replacing it)."""
        handle = await self.execute("guest-file-open", {"path": path, "mode": "w"})
        try:
            await self.execute(
                "guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(data).decode()}
            )
        finally:
            await self.execute("guest-file-close", {"handle": handle})

    async def close(self) -> None:
        """Disconnect; never raises."""
        await self._channel.close()

    async def freeze_filesystems(self, timeout: float = 10.0) -> FrozenFilesystems:
        """``guest-fsfreeze-freeze``; when it fails, whatever it froze is thawed, the agent let go, and the
        failure raised."""
        frozen = FrozenFilesystems(self)
        try:
            await self.execute("guest-fsfreeze-freeze", timeout=timeout)
        except BaseException:
            # A freeze that timed out may still have frozen some file systems: never leave them so.
            try:
                await frozen.thaw()
            except StandbyError as exc:
                log.warning("guest-fsfreeze-thaw after a failed freeze failed: %s", exc)
            raise
        return frozen


class FrozenFilesystems:
    """``hypervisor.port.FrozenGuest``: the guest's file systems frozen by its agent, until ``thaw``."""

    def __init__(self, agent: GuestAgent) -> None:
        self._agent = agent

    async def thaw(self, timeout: float = 10.0) -> None:
        """``guest-fsfreeze-thaw``, then disconnect the agent (whatever the thaw did)."""
        try:
            await self._agent.execute("guest-fsfreeze-thaw", timeout=timeout)
        finally:
            await self._agent.close()
