"""The hypervisor port: what the engine needs from a hypervisor, independent of QEMU.

``hypervisor.qemu.QemuHypervisor`` implements it with real QEMU processes, ``hypervisor.fake.FakeHypervisor``
in memory for unit tests of engine logic. Every method raises ``standby.domain.errors`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class Bitmap:
    """A dirty bitmap on a disk, as the hypervisor reports it; ``name`` is empty for a job's own bitmap."""

    name: str
    #: Bytes the bitmap has marked dirty.
    dirty_bytes: int = 0
    recording: bool = True
    #: Left so by a hypervisor that did not stop cleanly: it can only be removed (a resync follows).
    inconsistent: bool = False

    @property
    def counts_writes(self) -> bool:
        """Whether ``dirty_bytes`` tells what was written: a named bitmap that records and is consistent.

        A disabled or inconsistent bitmap would read 0 forever, which must not pass for "nothing written".
        """
        return bool(self.name) and self.recording and not self.inconsistent


@dataclass(frozen=True, slots=True)
class CutDisk:
    """One disk's part of a cut: the fleecing ``node`` over the ``scratch`` image shows the disk as it was at
    the cut (while the ``job`` copies every block the guest overwrites into it first); ``node`` is also the
    name it is exported under."""

    disk_id: str
    node: str
    job: str
    scratch: Path


class BlockOps(Protocol):
    """What capture does with the disks of one running VM: dirty bitmaps, consistent cuts and their export.

    Disks are named by their ``Disk.disk_id``. Every operation that changes several things does so all or
    none, in one request to the hypervisor, and ``release_cut`` is safe to repeat: after a daemon restart it
    settles whatever a half-done cut left behind.
    """

    async def bitmaps(self, disk_id: str) -> list[Bitmap]:
        """Every dirty bitmap of the disk."""
        ...

    async def add_bitmaps(self, disk_ids: Sequence[str], name: str, *, granularity: int) -> None:
        """Add the persistent, recording bitmap ``name`` to every disk at once."""
        ...

    async def drop_bitmaps(self, bitmaps: Mapping[str, Sequence[str]]) -> None:
        """Remove the named bitmaps (by disk id) at once; nothing to remove is no request at all."""
        ...

    async def merge_back(self, bitmaps: Mapping[str, Sequence[str]], into: str) -> None:
        """Merge the named bitmaps of each disk into its bitmap ``into``, then remove them, all at once: what
        they marked is shipped again by the cut after ``into``."""
        ...

    async def add_fleecing(self, disk: CutDisk, size: int | None) -> None:
        """Create ``disk.scratch`` (``size`` bytes, None: the disk's own size) and the fleecing node over it,
        backed by the disk; it shows the disk as it is until ``cut`` starts the job that keeps it so."""
        ...

    async def cut(self, disks: Sequence[CutDisk], *, new_bitmap: str | None, old_bitmap: str | None,
                  granularity: int) -> None:
        """The consistent cut of every disk in one step: add ``new_bitmap`` (None: ``add_bitmaps`` added it
        already), stop ``old_bitmap`` recording (None: a fresh start) and start each copy-before-write job."""
        ...

    async def export_cut(self, socket: Path, disks: Sequence[CutDisk], *, bitmap: str | None) -> None:
        """Serve the fleecing nodes read-only over NBD at ``socket`` (with allocation depth), each with the
        disk's ``bitmap`` (stopped by the cut) as a dirty-bitmap context when given."""
        ...

    async def release_cut(self, disks: Sequence[CutDisk]) -> None:
        """Tear a cut down in the order the hypervisor needs (exports, jobs, nodes, scratch images); whatever
        is not there is skipped. The bitmaps stay: ``drop_bitmaps`` or ``merge_back`` settle them."""
        ...


class FrozenGuest(Protocol):
    """A guest whose file systems its agent froze for a cut."""

    async def thaw(self, timeout: float = 10.0) -> None:
        """Thaw the file systems and let go of the agent (also when the thaw fails, which raises)."""
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

    async def vcpus_running(self, vm_id: str) -> bool:
        """Whether the VM's vCPUs run now, as the hypervisor itself says (a moment's hold included)."""
        ...

    def block(self, vm_id: str) -> BlockOps:
        """The disk operations of a running VM; ``InvalidState`` if it does not run."""
        ...

    async def freeze_filesystems(self, vm_id: str, *, agent_timeout: float = 2.0,
                                 freeze_timeout: float = 10.0) -> FrozenGuest:
        """Freeze the guest's file systems through its agent: ``Unavailable`` when no agent answers within
        ``agent_timeout``, another ``StandbyError`` when the freeze fails (then nothing stays frozen)."""
        ...
