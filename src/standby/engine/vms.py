"""VM life-cycle use cases: define (new qcow2 disks or imported ones), start, stop, kill, pause, resume,
reset, delete, list, show, and the state bookkeeping of exits and crashes.

The CIM providers (``cim/providers/vm_*.py``), the REST routes (``api/vms.py``) and the CLI (through REST)
all call these. The VM's ``enabled_state`` in the store follows the hypervisor's events; a definition either
completes (files and row) or leaves nothing behind. Every surface's names pass ``domain.vm_names`` here, and
every imported disk ``engine.disk_guard`` (over the rule of ``domain.disk_paths``): no recovery
point, replica storage or other VM's image becomes a disk, whichever surface asked.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from standby.domain.clock import Clock
from standby.domain.disk_paths import ImageFile, ProtectedStorage
from standby.domain.entities import Disk, Job, Nic, VirtualMachine
from standby.domain.enums import EnabledState, JobType, RequestedVmState
from standby.domain.errors import (
    FileNotFound,
    InUse,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
)
from standby.domain.replica import check_startable
from standby.domain.vm_names import check_vm_name
from standby.engine.disk_guard import BackingOf, DiskGuard
from standby.engine.jobs import JobHandle, JobManager
from standby.hypervisor.port import Hypervisor, VmEvent, VmEventKind
from standby.storage import chain
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger(__name__)

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
MIN_DISK = 1 << 20
MAX_DISK = 64 << 40
#: An image's chain, top first, as ``domain.disk_paths`` sees it.
ImageChain = tuple[ImageFile, ...]
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
#: Event kinds written to ``db.events`` and their catalog ids.
_EVENT_MESSAGES = {
    VmEventKind.STARTED: "VmStarted",
    VmEventKind.PAUSED: "VmPaused",
    VmEventKind.RESUMED: "VmResumed",
    VmEventKind.RESET: "VmReset",
    VmEventKind.STOPPED: "VmStopped",
    VmEventKind.GUEST_SHUTDOWN: "VmGuestShutdown",
    VmEventKind.CRASHED: "VmProcessDied",
}


class ImageInfoLike(Protocol):
    """What the engine reads of an image (``hypervisor.qemu.images.ImageInfo``)."""

    @property
    def format(self) -> str:
        """``qcow2``, ``raw``, …"""
        ...

    @property
    def virtual_size(self) -> int:
        """Size the guest sees, in bytes."""
        ...


class DiskImages(Protocol):
    """Creating and inspecting disk images (``hypervisor.qemu.images.QemuImages``)."""

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        """Create an empty qcow2 image."""
        ...

    def image_info(self, path: Path) -> ImageInfoLike:
        """Format and size of an existing image."""
        ...


@dataclass(frozen=True, slots=True)
class DiskRequest:
    """One disk of a new VM: a new image of ``size_bytes``, or an existing qcow2 at ``path``."""

    size_bytes: int | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class VmRequest:
    """What ``define`` needs; ``networks`` holds one entry per NIC (``user``, ``bridge:br0``, …)."""

    name: str
    memory_mib: int = 256
    cpus: int = 1
    disks: tuple[DiskRequest, ...] = ()
    networks: tuple[str, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Bytes of ``4G``, ``256M``, ``512K``, ``1073741824`` (binary units); ``InvalidParameter`` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise InvalidParameter(
                f"bad {what} {text!r}: use a number with K, M, G or T", message_id="BadSize"
            )
        value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise InvalidParameter(f"{what} must be positive, not {text!r}", message_id="BadSize")
    return value


def parse_memory_mib(text: str | int) -> int:
    """MiB of ``256M``/``1G``; a bare number is MiB already."""
    if isinstance(text, int) or str(text).strip().isdigit():
        return parse_size(int(text), what="memory")
    size = parse_size(text, what="memory")
    if size % (1 << 20):
        raise InvalidParameter(f"memory must be a whole number of MiB, not {text!r}", message_id="BadSize")
    return size >> 20


def mac_for(vm_id: str, index: int) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range for NIC ``index`` of a VM."""
    digest = hashlib.sha256(f"{vm_id}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class VmUseCases:
    """The VM life-cycle over the store and the hypervisor port."""

    def __init__(
        self,
        db: Store,
        hypervisor: Hypervisor,
        clock: Clock,
        *,
        vm_dir: Path,
        images: DiskImages,
        jobs: JobManager | None = None,
        data_dir: Path | None = None,
        backing_of: BackingOf = chain.backing_file,
    ) -> None:
        self.db = db
        self.hypervisor = hypervisor
        self.clock = clock
        self.vm_dir = vm_dir
        self.images = images
        self.jobs = jobs
        # Without the data directory, the VMs' own folder is the part of it a disk is kept out of.
        self.disk_guard = DiskGuard(db, data_dir=data_dir or vm_dir, backing_of=backing_of)
        hypervisor.subscribe(self.on_event)

    # queries ---------------------------------------------------------------------------------------------
    def list(self) -> list[VirtualMachine]:
        """Every VM, by name."""
        return self.db.vms.list()

    def get(self, ref: str) -> VirtualMachine:
        """A VM by GUID (any case) or by its unique name; ``NotFound`` otherwise."""
        if _GUID.match(ref):
            vm = self.db.vms.find(ref.upper())
            if vm is not None:
                return vm
        named = self.db.vms.find_by_name(ref)
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise InvalidParameter(
                f"several VMs are named {ref!r}: use the GUID", message_id="VmNameAmbiguous"
            )
        raise NotFound(f"no virtual machine {ref!r}", message_id="VmNotFound", vm=ref)

    # definition ------------------------------------------------------------------------------------------
    def define(self, request: VmRequest) -> VirtualMachine:
        """Create the VM's new disks and store it (``DefineSystem``); nothing remains if any step fails."""
        name = check_vm_name(request.name)
        if self.db.vms.find_by_name(name):
            raise InvalidParameter(
                f"a virtual machine named {name!r} already exists", message_id="VmNameInUse", vm=name
            )
        vm_id = str(uuid.uuid4()).upper()
        for path in (request.kernel, request.initrd):
            if path is not None and not Path(path).is_file():
                raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=path)
        disks = self._plan_disks(vm_id, request.disks)
        nics = tuple(Nic(f"n{i}", mac_for(vm_id, i), net) for i, net in enumerate(request.networks))
        vm = VirtualMachine(
            vm_id=vm_id,
            name=name,
            memory_mib=request.memory_mib,
            cpus=request.cpus,
            disks=disks,
            nics=nics,
            kernel=request.kernel,
            initrd=request.initrd,
            append=request.append,
            created_at=self.clock(),
        )
        self.hypervisor.check(vm)
        own_dir = self.vm_dir / vm_id
        try:
            self._create_disks(vm, request.disks, own_dir)
            stored = self.db.vms.insert(vm)
        except BaseException:
            shutil.rmtree(own_dir, ignore_errors=True)
            raise
        self._record(stored.vm_id, "vm.defined", "VmDefined", vm=stored.name)
        return stored

    def _plan_disks(self, vm_id: str, requests: Sequence[DiskRequest]) -> tuple[Disk, ...]:
        disks = []
        protected = self.disk_guard.protected() if any(r.path is not None for r in requests) else None
        imported: set[tuple[int, int] | None] = set()
        for index, req in enumerate(requests):
            disk_id = f"d{index}"
            if req.path is not None:
                assert protected is not None
                disk, images = self._imported_disk(disk_id, req.path, protected)
                # One image as two disks of the new VM would be two writers of one file.
                if images[0].identity in imported:
                    raise InvalidParameter(f"{req.path} is named for two disks", message_id="DiskListedTwice",
                                           path=req.path)
                imported.add(images[0].identity)
                disks.append(disk)
                continue
            size = req.size_bytes or 0
            if not MIN_DISK <= size <= MAX_DISK:
                raise InvalidParameter(
                    f"disk size must be 1 MiB to 64 TiB, not {size} bytes", message_id="BadSize"
                )
            disks.append(Disk(disk_id, str(self.vm_dir / vm_id / f"{disk_id}.qcow2"), size))
        return tuple(disks)

    def _imported_disk(
        self, disk_id: str, given: str, protected: ProtectedStorage
    ) -> tuple[Disk, ImageChain]:
        vetted = self.disk_guard.vet(given, protected)  # refusals per ``domain.disk_paths``
        path, images = vetted.path, vetted.chain
        try:
            info = self.images.image_info(path)
        except StandbyError as failed:
            if type(failed) is not StandbyError:
                raise
            # What qemu-img could not read is the image the caller named, not a failure of the daemon.
            raise InvalidParameter(f"{given} is not a usable disk image: {failed}", message_id="BadImage",
                                   path=given) from None
        if info.format != "qcow2":
            raise InvalidParameter(
                f"{given} is a {info.format} image; standby runs qcow2 disks",
                message_id="BadImage",
                path=given,
            )
        return Disk(disk_id, str(path), info.virtual_size), images

    def _create_disks(self, vm: VirtualMachine, requests: Sequence[DiskRequest], own_dir: Path) -> None:
        new = [disk for disk, req in zip(vm.disks, requests, strict=True) if req.path is None]
        if not new:
            return
        own_dir.mkdir(parents=True, exist_ok=False)
        for disk in new:
            self.images.create_qcow2(Path(disk.path), disk.size_bytes)

    def delete(self, ref: str) -> VirtualMachine:
        """Remove a stopped VM (``DestroySystem``): its row and its own disks (imports stay)."""
        vm = self.get(ref)
        if self.hypervisor.state(vm.vm_id) is not EnabledState.DISABLED:
            raise InvalidState(
                f"virtual machine {vm.name} is running: stop it first", message_id="VmRunning", vm=vm.name
            )
        if self.db.relationships.list(vm_id=vm.vm_id):
            raise InvalidState(
                f"virtual machine {vm.name} is replicated: remove replication first",
                message_id="VmReplicated",
                vm=vm.name,
            )
        self.db.vms.delete(vm.vm_id)
        shutil.rmtree(self.vm_dir / vm.vm_id, ignore_errors=True)
        self._record(vm.vm_id, "vm.deleted", "VmDeleted", vm=vm.name)
        return vm

    # power -----------------------------------------------------------------------------------------------
    async def start(self, ref: str) -> VirtualMachine:
        """Start the VM; ``InvalidState`` when it already runs."""
        vm = self.get(ref)
        if self.hypervisor.state(vm.vm_id) is not EnabledState.DISABLED:
            raise InvalidState(
                f"virtual machine {vm.name} is already running", message_id="VmAlreadyRunning", vm=vm.name
            )
        self._check_startable(vm)
        self._set_state(vm.vm_id, EnabledState.STARTING)
        try:
            await self.hypervisor.start(vm)
        except BaseException:
            self._set_state(vm.vm_id, EnabledState.DISABLED)
            raise
        return self._set_state(vm.vm_id, self.hypervisor.state(vm.vm_id))

    async def stop(self, ref: str, *, graceful: bool = True, timeout: float = 60.0) -> VirtualMachine:
        """Shut down (graceful, then hard after ``timeout``) or power off (``graceful=False``)."""
        vm = self._running(ref)
        if graceful:
            self._set_state(vm.vm_id, EnabledState.SHUTTING_DOWN)
        await self.hypervisor.stop(vm.vm_id, graceful=graceful, timeout=timeout)
        return self._set_state(vm.vm_id, EnabledState.DISABLED)

    async def kill(self, ref: str) -> VirtualMachine:
        """Power off at once (SIGKILL)."""
        vm = self._running(ref)
        await self.hypervisor.kill(vm.vm_id)
        return self._set_state(vm.vm_id, EnabledState.DISABLED)

    async def pause(self, ref: str) -> VirtualMachine:
        """Pause the vCPUs (EnabledState 9)."""
        vm = self._running(ref)
        await self.hypervisor.pause(vm.vm_id)
        return self._set_state(vm.vm_id, self.hypervisor.state(vm.vm_id))

    async def resume(self, ref: str) -> VirtualMachine:
        """Resume a paused VM."""
        vm = self._running(ref)
        await self.hypervisor.resume(vm.vm_id)
        return self._set_state(vm.vm_id, self.hypervisor.state(vm.vm_id))

    async def reset(self, ref: str) -> VirtualMachine:
        """Reset the VM."""
        vm = self._running(ref)
        await self.hypervisor.reset(vm.vm_id)
        return self.get(vm.vm_id)

    def submit_state_change(self, ref: str, requested: int, *, timeout: float = 60.0) -> Job:
        """``RequestStateChange`` as a job: 2 start, 3 power off, 4 shut down, 9 pause, 11 reset.

        A paused VM asked for 2 resumes. Checks that need no hypervisor call (unknown VM, unsupported state,
        already in that state) raise at once, so callers answer them without a job.
        """
        vm = self.get(ref)
        work, job_type = self._state_change_work(vm, requested, timeout)
        return self._submit(vm, job_type, work)

    def submit_kill(self, ref: str) -> Job:
        """Power off at once (SIGKILL), as a job."""
        vm = self._running(ref)
        return self._submit(vm, JobType.POWER_OFF_VM, lambda: self.kill(vm.vm_id))

    def _submit(self, vm: VirtualMachine, job_type: JobType, work: Callable[[], Awaitable[object]]) -> Job:
        if self.jobs is None:
            raise NotSupported("no job manager: state changes need the daemon", message_id="JobsUnavailable")

        async def run(handle: JobHandle) -> dict[str, str]:
            handle.progress(10)
            await work()
            return {"EnabledState": str(int(self.get(vm.vm_id).enabled_state))}

        return self.jobs.submit(
            job_type,
            element_id=vm.vm_id,
            description=f"change state of {vm.name}",
            work=run,
            message_id="VmStateChangeJob",
            args={"vm": vm.name},
        )

    def _state_change_work(
        self, vm: VirtualMachine, requested: int, timeout: float
    ) -> tuple[Callable[[], Awaitable[object]], JobType]:
        try:
            wanted = RequestedVmState(requested)
        except ValueError:
            raise InvalidParameter(
                f"RequestedState {requested} is not one of 2, 3, 4, 9, 11", message_id="BadRequestedState"
            ) from None
        state = self.hypervisor.state(vm.vm_id)
        running = state is not EnabledState.DISABLED
        if wanted is RequestedVmState.OFFLINE:
            raise NotSupported(
                "saving a VM's state (6 Offline) is not supported", message_id="VmSaveUnsupported"
            )
        if wanted is RequestedVmState.ENABLED:
            if state is EnabledState.QUIESCE:
                return (lambda: self.resume(vm.vm_id)), JobType.START_VM
            if running:
                raise InvalidState(
                    f"virtual machine {vm.name} is already running", message_id="VmAlreadyRunning", vm=vm.name
                )
            self._check_startable(vm)
            return (lambda: self.start(vm.vm_id)), JobType.START_VM
        if not running:
            raise InvalidState(
                f"virtual machine {vm.name} is not running", message_id="VmNotRunning", vm=vm.name
            )
        actions: dict[RequestedVmState, tuple[Callable[[], Awaitable[object]], JobType]] = {
            RequestedVmState.DISABLED: (lambda: self.stop(vm.vm_id, graceful=False), JobType.POWER_OFF_VM),
            RequestedVmState.SHUT_DOWN: (lambda: self.stop(vm.vm_id, timeout=timeout), JobType.POWER_OFF_VM),
            RequestedVmState.QUIESCE: (lambda: self.pause(vm.vm_id), JobType.MODIFY_VM),
            RequestedVmState.RESET: (lambda: self.reset(vm.vm_id), JobType.MODIFY_VM),
        }
        return actions[wanted]

    # state bookkeeping -----------------------------------------------------------------------------------
    def on_event(self, event: VmEvent) -> None:
        """Hypervisor callback: store the VM's new state and log the event (crashes included)."""
        vm = self.db.vms.find(event.vm_id)
        if vm is None:
            return
        if event.kind is not VmEventKind.RESET:
            self._set_state(vm.vm_id, event.state)
        args: dict[str, object] = {"vm": vm.name, "detail": event.detail}
        if event.kind is VmEventKind.CRASHED:
            args["status"] = f"signal {event.signal}" if event.signal else str(event.exit_code)
        self._record(vm.vm_id, f"vm.{event.kind.value}", _EVENT_MESSAGES[event.kind], **args)

    def recover(self) -> builtins.list[str]:
        """At daemon start: VMs the store shows running but that have no process were lost; mark them off."""
        lost = []
        for vm in self.db.vms.list():
            if vm.enabled_state is not EnabledState.DISABLED and vm.vm_id not in self.hypervisor.running():
                self._set_state(vm.vm_id, EnabledState.DISABLED)
                self._record(
                    vm.vm_id,
                    "vm.crashed",
                    "VmProcessDied",
                    vm=vm.name,
                    status="daemon restart",
                    detail="no QEMU process after a daemon restart",
                )
                lost.append(vm.vm_id)
        return lost

    def _check_startable(self, vm: VirtualMachine) -> None:
        check_startable(vm, self.db.relationships.find(vm.vm_id, 0))

    def _running(self, ref: str) -> VirtualMachine:
        vm = self.get(ref)
        if self.hypervisor.state(vm.vm_id) is EnabledState.DISABLED:
            raise InvalidState(
                f"virtual machine {vm.name} is not running", message_id="VmNotRunning", vm=vm.name
            )
        return vm

    def _set_state(self, vm_id: str, state: EnabledState) -> VirtualMachine:
        # Events and use cases both write the state: re-read and retry when another write won.
        for _ in range(5):
            vm = self.db.vms.get(vm_id)
            if vm.enabled_state is state:
                return vm
            try:
                return self.db.vms.update(replace(vm, enabled_state=state))
            except StaleWrite:
                continue
        raise InUse(f"the state of VM {vm_id} keeps changing", message_id="StaleWrite", kind="VM", key=vm_id)

    def _record(self, vm_id: str, kind: str, message_id: str, **args: object) -> None:
        try:
            self.db.events.record(self.clock(), kind, message_id, element_id=vm_id, args=args)
        except StandbyError:
            log.exception("could not record event %s of VM %s", kind, vm_id)
