"""The hypervisor port: what the engine needs from a hypervisor, independent of QEMU.

``hypervisor.qemu.QemuHypervisor`` implements it with real QEMU processes, ``hypervisor.fake.FakeHypervisor``
in memory for unit tests of engine logic. Every method raises ``standby.domain.errors`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState


class VmEventKind(StrEnum):
    """What happened to a running VM."""

    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    RESET = "reset"
    #: QEMU exited after we asked it to stop (graceful stop, hard power-off, kill).
    STOPPED = "stopped"
    #: The guest powered itself off (or was powered off by a graceful stop we requested through ACPI/agent).
    GUEST_SHUTDOWN = "guest-shutdown"
    #: QEMU exited without being asked to: a signal from outside, an error, a crash.
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class VmEvent:
    """A state change of one VM, delivered to subscribers."""

    vm_id: str
    kind: VmEventKind
    state: EnabledState
    detail: str = ""
    exit_code: int | None = None
    signal: int | None = None


VmEventCallback = Callable[[VmEvent], None]


class BlockOps(Protocol):
    """One-call wrappers of the QMP block commands the engine uses (see ``hypervisor.qemu.block``)."""

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        ...

    async def bitmap_add(self, node: str, name: str, *, persistent: bool = True) -> None:
        """``block-dirty-bitmap-add``."""
        ...

    async def bitmap_remove(self, node: str, name: str) -> None:
        """``block-dirty-bitmap-remove``."""
        ...

    async def transaction(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """``transaction`` of ``{"type": ..., "data": ...}`` actions, all or nothing."""
        ...

    async def query_block_jobs(self) -> list[dict[str, Any]]:
        """``query-block-jobs``."""
        ...


class Hypervisor(Protocol):
    """The VM operations the engine needs."""

    def check(self, vm: VirtualMachine) -> None:
        """Raise ``InvalidParameter`` if ``vm`` could not run (ids, sizes, networks), without side effects."""
        ...

    async def start(self, vm: VirtualMachine) -> None:
        """Start ``vm`` (its disk images exist); returns when the guest runs. ``InvalidState`` if running."""
        ...

    async def stop(self, vm_id: str, *, graceful: bool = True, timeout: float = 60.0) -> None:
        """Stop the VM: ask the guest to power off (ACPI / agent) up to ``timeout``, then power off hard."""
        ...

    async def kill(self, vm_id: str) -> None:
        """Power off at once (SIGKILL to QEMU's process group)."""
        ...

    async def pause(self, vm_id: str) -> None:
        """Stop the vCPUs (``EnabledState`` 9 Quiesce)."""
        ...

    async def resume(self, vm_id: str) -> None:
        """Run the vCPUs again."""
        ...

    async def reset(self, vm_id: str) -> None:
        """Hard reset, as the reset button."""
        ...

    def state(self, vm_id: str) -> EnabledState:
        """The VM's current state; ``DISABLED`` when no process runs for it."""
        ...

    def running(self) -> Sequence[str]:
        """The ids of the VMs with a live process."""
        ...

    def subscribe(self, callback: VmEventCallback) -> None:
        """Call ``callback`` for every ``VmEvent`` (exits and crashes included), on the event loop."""
        ...

    def qmp(self, vm_id: str) -> BlockOps:
        """The block-operation wrappers of a running VM; ``InvalidState`` if it does not run."""
        ...
