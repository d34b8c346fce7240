"""An in-memory hypervisor for unit tests of engine logic (never for integration tests).

It follows the same state rules as the QEMU driver (starting a running VM is ``InvalidState``, missing disk
files are ``FileNotFound``) and lets a test simulate a crash with ``crash(vm_id)``. Each VM's disks get a
``FakeBlockOps`` at its first start, kept across stops as persistent bitmaps are kept in the images; a kill
or crash leaves them inconsistent, as QEMU does. The guest agent answers unless ``agent`` is False.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import (
    FileNotFound,
    InvalidParameter,
    InvalidState,
    NotFound,
    StandbyError,
    Unavailable,
)
from standby.hypervisor.port import Bitmap, CutDisk, VmEvent, VmEventCallback, VmEventKind
from standby.hypervisor.qemu.cmdline import check_vm


class FakeBlockOps:
    """``BlockOps`` of one fake VM: its disks' bitmaps, fleecing nodes, jobs and exports in dicts.

    Every operation is recorded in ``calls`` as ``(operation, arguments)`` before it runs; ``fail`` makes the
    next call of an operation raise the error given (and change nothing). It refuses what QEMU refuses (a
    bitmap added twice, a cut without its fleecing nodes, an export of a bitmap that still records, removing
    an exported bitmap), all or nothing, so engine tests see the failures the real driver would raise.
    ``write`` marks bytes dirty as a guest's write would.
    """

    def __init__(self, sizes: dict[str, int]) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, StandbyError] = {}
        self.sizes = dict(sizes)
        self.disk_bitmaps: dict[str, dict[str, Bitmap]] = {disk_id: {} for disk_id in sizes}
        #: Fleecing nodes by name, with the size of their scratch image.
        self.nodes: dict[str, tuple[CutDisk, int]] = {}
        self.jobs: set[str] = set()
        #: Exported node -> the bitmap exported with it (or None).
        self.exports: dict[str, str | None] = {}
        self.nbd_socket: Path | None = None

    def operations(self) -> list[str]:
        """The names of the operations called, in order."""
        return [name for name, _ in self.calls]

    def write(self, disk_id: str, length: int) -> None:
        """A guest write of ``length`` bytes: every recording bitmap of the disk marks them."""
        marks = self._disk(disk_id)
        for name, bitmap in marks.items():
            if bitmap.recording:
                marks[name] = replace(bitmap, dirty_bytes=bitmap.dirty_bytes + length)

    def lose_tracking(self) -> None:
        """What a QEMU killed outright leaves: every bitmap inconsistent, no node, job or export."""
        for marks in self.disk_bitmaps.values():
            for name, bitmap in marks.items():
                marks[name] = replace(bitmap, inconsistent=True)
        self.process_ended()

    def process_ended(self) -> None:
        """The QEMU process went away: its nodes, jobs and exports with it (the bitmaps persist)."""
        self.nodes.clear()
        self.jobs.clear()
        self.exports.clear()
        self.nbd_socket = None

    async def bitmaps(self, disk_id: str) -> list[Bitmap]:
        """The disk's bitmaps, oldest added first."""
        self._record("bitmaps", disk_id=disk_id)
        return list(self._disk(disk_id).values())

    async def add_bitmaps(self, disk_ids: Sequence[str], name: str, *, granularity: int) -> None:
        """Add a recording bitmap to every disk; refused whole if one has it already."""
        self._record("add_bitmaps", disk_ids=list(disk_ids), name=name, granularity=granularity)
        for disk_id in disk_ids:
            self._refuse_existing(disk_id, name)
        for disk_id in disk_ids:
            self._disk(disk_id)[name] = Bitmap(name)

    async def drop_bitmaps(self, bitmaps: Mapping[str, Sequence[str]]) -> None:
        """Remove the bitmaps; refused whole when one is missing or exported."""
        self._record("drop_bitmaps", bitmaps={d: list(n) for d, n in bitmaps.items()})
        for disk_id, names in bitmaps.items():
            for name in names:
                self._require_removable(disk_id, name)
        for disk_id, names in bitmaps.items():
            for name in names:
                del self._disk(disk_id)[name]

    async def merge_back(self, bitmaps: Mapping[str, Sequence[str]], into: str) -> None:
        """Add each bitmap's dirty bytes to ``into`` (an upper bound of the union), then remove it."""
        self._record("merge_back", bitmaps={d: list(n) for d, n in bitmaps.items()}, into=into)
        for disk_id, names in bitmaps.items():
            if names and into not in self._disk(disk_id):
                raise NotFound(f"no bitmap {into} on disk {disk_id}", message_id="ObjectNotFound")
            for name in names:
                self._require_removable(disk_id, name)
        for disk_id, names in bitmaps.items():
            marks = self._disk(disk_id)
            for name in names:
                merged = marks[into].dirty_bytes + marks[name].dirty_bytes
                marks[into] = replace(marks[into], dirty_bytes=merged)
                del marks[name]

    async def add_fleecing(self, disk: CutDisk, size: int | None) -> None:
        """A fleecing node (no scratch file is written)."""
        self._record("add_fleecing", disk=disk, size=size)
        self._disk(disk.disk_id)
        if disk.node in self.nodes:
            raise InvalidParameter(f"duplicate node name {disk.node}", message_id="QmpCommandFailed")
        self.nodes[disk.node] = (disk, size or self.sizes[disk.disk_id])

    async def cut(self, disks: Sequence[CutDisk], *, new_bitmap: str | None, old_bitmap: str | None,
                  granularity: int) -> None:
        """Add ``new_bitmap``, disable ``old_bitmap``, start the jobs: all or nothing."""
        self._record("cut", disks=list(disks), new_bitmap=new_bitmap, old_bitmap=old_bitmap,
                     granularity=granularity)
        for disk in disks:
            if disk.node not in self.nodes:
                raise NotFound(f"no fleecing node {disk.node}", message_id="QmpCommandFailed")
            if disk.job in self.jobs:
                raise InvalidState(f"job {disk.job} exists", message_id="QmpCommandFailed")
            if new_bitmap is not None:
                self._refuse_existing(disk.disk_id, new_bitmap)
            if old_bitmap is not None and old_bitmap not in self._disk(disk.disk_id):
                raise NotFound(f"no bitmap {old_bitmap} on disk {disk.disk_id}",
                               message_id="QmpCommandFailed")
        for disk in disks:
            marks = self._disk(disk.disk_id)
            if new_bitmap is not None:
                marks[new_bitmap] = Bitmap(new_bitmap)
            if old_bitmap is not None:
                marks[old_bitmap] = replace(marks[old_bitmap], recording=False)
            self.jobs.add(disk.job)

    async def export_cut(self, socket: Path, disks: Sequence[CutDisk], *, bitmap: str | None) -> None:
        """Export the fleecing nodes; an exported bitmap must have stopped recording."""
        self._record("export_cut", socket=socket, disks=list(disks), bitmap=bitmap)
        for disk in disks:
            if disk.node not in self.nodes or disk.node in self.exports:
                raise InvalidState(f"cannot export {disk.node}", message_id="QmpCommandFailed")
            found = self._disk(disk.disk_id).get(bitmap or "")
            if bitmap is not None and (found is None or found.recording):
                raise InvalidState(f"bitmap {bitmap} must be disabled to export it",
                                   message_id="QmpCommandFailed")
        self.nbd_socket = self.nbd_socket or socket
        for disk in disks:
            self.exports[disk.node] = bitmap

    async def release_cut(self, disks: Sequence[CutDisk]) -> None:
        """Drop the exports, jobs and nodes that are there."""
        self._record("release_cut", disks=list(disks))
        for disk in disks:
            self.exports.pop(disk.node, None)
        for disk in disks:
            self.jobs.discard(disk.job)
        for disk in disks:
            self.nodes.pop(disk.node, None)
            disk.scratch.unlink(missing_ok=True)

    def _record(self, operation: str, **arguments: Any) -> None:
        self.calls.append((operation, arguments))
        error = self.fail.pop(operation, None)
        if error is not None:
            raise error

    def _disk(self, disk_id: str) -> dict[str, Bitmap]:
        if disk_id not in self.disk_bitmaps:
            raise NotFound(f"no block node for disk {disk_id}", message_id="ObjectNotFound", kind="disk",
                           key=disk_id)
        return self.disk_bitmaps[disk_id]

    def _refuse_existing(self, disk_id: str, name: str) -> None:
        if name in self._disk(disk_id):
            raise InvalidParameter(f"bitmap {name} exists on disk {disk_id}", message_id="QmpCommandFailed")

    def _require_removable(self, disk_id: str, name: str) -> None:
        if name not in self._disk(disk_id):
            raise NotFound(f"no bitmap {name} on disk {disk_id}", message_id="QmpCommandFailed")
        exported = {self.nodes[node][0].disk_id for node, b in self.exports.items() if b == name}
        if disk_id in exported:
            raise InvalidState(f"bitmap {name} is in use by an export", message_id="QmpCommandFailed")


class FakeFrozenGuest:
    """The fake agent's freeze: ``thaw`` records itself on the hypervisor."""

    def __init__(self, hypervisor: FakeHypervisor, vm_id: str) -> None:
        self._hypervisor = hypervisor
        self._vm_id = vm_id

    async def thaw(self, timeout: float = 10.0) -> None:
        """Record the thaw; ``thaw_error`` raises after it."""
        self._hypervisor.agent_calls.append(("thaw", self._vm_id))
        self._hypervisor.frozen.discard(self._vm_id)
        if self._hypervisor.thaw_error is not None:
            raise self._hypervisor.thaw_error


class FakeHypervisor:
    """VM states in a dict; events delivered synchronously to subscribers."""

    def __init__(self, *, check_files: bool = True) -> None:
        self.check_files = check_files
        self.states: dict[str, EnabledState] = {}
        self.started: dict[str, VirtualMachine] = {}
        self.disks: dict[str, FakeBlockOps] = {}
        #: Whether a guest agent answers; ``freeze_error``/``thaw_error`` make freezing or thawing fail.
        self.agent = True
        self.freeze_error: StandbyError | None = None
        self.thaw_error: StandbyError | None = None
        #: ("freeze" | "thaw", vm_id), in order; ``frozen`` the VMs frozen now.
        self.agent_calls: list[tuple[str, str]] = []
        self.frozen: set[str] = set()
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
        self.disks.setdefault(vm.vm_id, FakeBlockOps({d.disk_id: d.size_bytes for d in vm.disks}))
        self._set(vm.vm_id, EnabledState.ENABLED, VmEventKind.STARTED)

    async def stop(self, vm_id: str, *, graceful: bool = True, timeout: float = 60.0) -> None:
        """Mark the VM stopped."""
        self._require(vm_id)
        self._ended(vm_id, cleanly=True)
        self._set(vm_id, EnabledState.DISABLED, VmEventKind.STOPPED, "graceful" if graceful else "hard")

    async def kill(self, vm_id: str) -> None:
        """Mark the VM stopped (killed)."""
        self._require(vm_id)
        self._ended(vm_id, cleanly=False)
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

    async def vcpus_running(self, vm_id: str) -> bool:
        """Whether the VM is Enabled (not paused)."""
        self._require(vm_id)
        return self.states[vm_id] is EnabledState.ENABLED

    def block(self, vm_id: str) -> FakeBlockOps:
        """The VM's recording disk operations."""
        self._require(vm_id)
        return self.disks[vm_id]

    async def freeze_filesystems(self, vm_id: str, *, agent_timeout: float = 2.0,
                                 freeze_timeout: float = 10.0) -> FakeFrozenGuest:
        """Record the freeze; ``Unavailable`` without an agent, ``freeze_error`` when set."""
        self._require(vm_id)
        if not self.agent:
            raise Unavailable("the guest agent does not answer", message_id="AgentUnavailable")
        self.agent_calls.append(("freeze", vm_id))
        if self.freeze_error is not None:
            raise self.freeze_error
        self.frozen.add(vm_id)
        return FakeFrozenGuest(self, vm_id)

    def crash(self, vm_id: str, signal: int = 9) -> None:
        """Simulate QEMU dying on its own."""
        self._require(vm_id)
        self._ended(vm_id, cleanly=False)
        self.states[vm_id] = EnabledState.DISABLED
        event = VmEvent(
            vm_id, VmEventKind.CRASHED, EnabledState.DISABLED, f"killed by signal {signal}", None, signal
        )
        for callback in self._subscribers:
            callback(event)

    def _require(self, vm_id: str) -> None:
        if self.state(vm_id) is EnabledState.DISABLED:
            raise InvalidState("the VM is not running", message_id="VmNotRunning", vm=vm_id)

    def _ended(self, vm_id: str, *, cleanly: bool) -> None:
        disks = self.disks.get(vm_id)
        if disks is not None:
            disks.process_ended() if cleanly else disks.lose_tracking()
        self.frozen.discard(vm_id)

    def _set(self, vm_id: str, state: EnabledState, kind: VmEventKind, detail: str = "") -> None:
        self.states[vm_id] = state
        event = VmEvent(vm_id, kind, state, detail)
        for callback in self._subscribers:
            callback(event)
