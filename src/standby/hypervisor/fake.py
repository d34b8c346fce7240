"""An in-memory hypervisor for unit tests of engine logic (never for integration tests).

It follows the same state rules as the QEMU driver (starting a running VM is ``InvalidState``, missing disk
files are ``FileNotFound``) and lets a test simulate a crash with ``crash(vm_id)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import FileNotFound, InvalidState
from standby.hypervisor.port import VmEvent, VmEventCallback, VmEventKind
from standby.hypervisor.qemu.cmdline import check_vm


class FakeBlockOps:
    """Records every QMP command it is given; ``execute`` returns ``replies.get(command)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, Any] = {}

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Record the command."""
        self.calls.append((command, dict(arguments or {})))
        return self.replies.get(command, {})

    async def bitmap_add(self, node: str, name: str, *, persistent: bool = True) -> None:
        """Record ``block-dirty-bitmap-add``."""
        await self.execute("block-dirty-bitmap-add", {"node": node, "name": name, "persistent": persistent})

    async def bitmap_remove(self, node: str, name: str) -> None:
        """Record ``block-dirty-bitmap-remove``."""
        await self.execute("block-dirty-bitmap-remove", {"node": node, "name": name})

    async def transaction(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """Record ``transaction``."""
        await self.execute("transaction", {"actions": [dict(a) for a in actions]})

    async def query_block_jobs(self) -> list[dict[str, Any]]:
        """Record ``query-block-jobs``; the reply set in ``replies`` or none."""
        return list(await self.execute("query-block-jobs") or [])


class FakeHypervisor:
    """VM states in a dict; events delivered synchronously to subscribers."""

    def __init__(self, *, check_files: bool = True) -> None:
        self.check_files = check_files
        self.states: dict[str, EnabledState] = {}
        self.started: dict[str, VirtualMachine] = {}
        self.block = FakeBlockOps()
        self._subscribers: list[VmEventCallback] = []

    def check(self, vm: VirtualMachine) -> None:
        """The QEMU driver's definition rules (pure)."""
        check_vm(vm)

    async def start(self, vm: VirtualMachine) -> None:
        """Mark ``vm`` running."""
        if self.states.get(vm.vm_id, EnabledState.DISABLED) is not EnabledState.DISABLED:
            raise InvalidState(f"VM {vm.name} is already running", message_id="VmAlreadyRunning", vm=vm.name)
        if self.check_files:
            for disk in vm.disks:
                if not Path(disk.path).is_file():
                    raise FileNotFound(f"{disk.path} does not exist", message_id="DiskFileMissing")
        self.started[vm.vm_id] = vm
        self._set(vm.vm_id, EnabledState.ENABLED, VmEventKind.STARTED)

    async def stop(self, vm_id: str, *, graceful: bool = True, timeout: float = 60.0) -> None:
        """Mark the VM stopped."""
        self._require(vm_id)
        self._set(vm_id, EnabledState.DISABLED, VmEventKind.STOPPED, "graceful" if graceful else "hard")

    async def kill(self, vm_id: str) -> None:
        """Mark the VM stopped (killed)."""
        self._require(vm_id)
        self._set(vm_id, EnabledState.DISABLED, VmEventKind.STOPPED, "killed by signal 9")

    async def pause(self, vm_id: str) -> None:
        """Mark the VM paused."""
        self._require(vm_id)
        self._set(vm_id, EnabledState.QUIESCE, VmEventKind.PAUSED)

    async def resume(self, vm_id: str) -> None:
        """Mark the VM running."""
        self._require(vm_id)
        self._set(vm_id, EnabledState.ENABLED, VmEventKind.RESUMED)

    async def reset(self, vm_id: str) -> None:
        """Emit a reset event."""
        self._require(vm_id)
        self._set(vm_id, self.states[vm_id], VmEventKind.RESET, "host")

    def state(self, vm_id: str) -> EnabledState:
        """The VM's state (``DISABLED`` if never started)."""
        return self.states.get(vm_id, EnabledState.DISABLED)

    def running(self) -> Sequence[str]:
        """VMs not disabled."""
        return [v for v, s in self.states.items() if s is not EnabledState.DISABLED]

    def subscribe(self, callback: VmEventCallback) -> None:
        """Register an event callback."""
        self._subscribers.append(callback)

    def qmp(self, vm_id: str) -> FakeBlockOps:
        """The shared recording block ops."""
        self._require(vm_id)
        return self.block

    def crash(self, vm_id: str, signal: int = 9) -> None:
        """Simulate QEMU dying on its own."""
        self._require(vm_id)
        self.states[vm_id] = EnabledState.DISABLED
        event = VmEvent(
            vm_id, VmEventKind.CRASHED, EnabledState.DISABLED, f"killed by signal {signal}", None, signal
        )
        for callback in self._subscribers:
            callback(event)

    def _require(self, vm_id: str) -> None:
        if self.state(vm_id) is EnabledState.DISABLED:
            raise InvalidState("the VM is not running", message_id="VmNotRunning", vm=vm_id)

    def _set(self, vm_id: str, state: EnabledState, kind: VmEventKind, detail: str = "") -> None:
        self.states[vm_id] = state
        event = VmEvent(vm_id, kind, state, detail)
        for callback in self._subscribers:
            callback(event)
