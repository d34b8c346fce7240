"""The QEMU implementation of the hypervisor port: one supervised ``qemu-system-x86_64`` per running VM.

Start: build the command line, spawn QEMU paused in its own process group, connect QMP (retrying while the
socket exists but QEMU does not listen on it yet), listen to its events, then ``cont``. A watcher task awaits
the process exit (reaping it) and reports why it ended: a stop we asked for, the guest powering itself off,
or a crash (any other exit). Subscribers get every ``VmEvent``.

``hold``/``release`` stop and continue the vCPUs for a moment that is not a pause of the VM (a group cut):
the STOP/RESUME events they cause are not reported, so the VM's state stays Enabled and no pause is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import FileNotFound, InvalidState, StandbyError, Unavailable
from standby.hypervisor.port import VmEvent, VmEventCallback, VmEventKind
from standby.hypervisor.qemu.accel import HostFacts, choose_accel, probe_host
from standby.hypervisor.qemu.agent import FrozenFilesystems, GuestAgent
from standby.hypervisor.qemu.block import QemuBlockOps, QemuBlockPort
from standby.hypervisor.qemu.cmdline import QEMU_BINARY, RunPaths, build_command, check_vm
from standby.hypervisor.qemu.process import AdoptedProcess, QemuProcess, qemu_alive
from standby.hypervisor.qemu.qmp import QmpChannel

log = logging.getLogger(__name__)

#: Runs before a start; may return an awaitable the start waits for (``add_pre_start``).
PreStartHook = Callable[[VirtualMachine], Awaitable[None] | None]


@dataclass(eq=False)
class _Running:
    vm: VirtualMachine
    process: QemuProcess | AdoptedProcess
    paths: RunPaths
    qmp: QmpChannel
    state: EnabledState = EnabledState.STARTING
    stop_requested: bool = False
    #: ``hold`` stopped the vCPUs and ``release`` has not been answered yet: STOP/RESUME are ours, not news.
    held: bool = False
    guest_shutdown: bool = False
    shutdown_reason: str = ""
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    #: Held by a connect attempt and by the exit watcher's close: the QMP library's connect and disconnect
    #: must not overlap on one client (its state machine asserts; the watcher would die before ``exited``).
    monitor: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class QemuHypervisor:
    """Runs VMs as QEMU processes; per-VM files live in ``run_root/<vm_id>/``."""

    def __init__(
        self,
        run_root: Path,
        *,
        accel: str = "auto",
        binary: str = QEMU_BINARY,
        facts: HostFacts | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.run_root = run_root
        self.accel = choose_accel(accel, facts or probe_host())
        self.binary = binary
        self.start_timeout = start_timeout
        self._vms: dict[str, _Running] = {}
        self._subscribers: list[VmEventCallback] = []
        self._pre_start: list[PreStartHook] = []

    # port ------------------------------------------------------------------------------------------------
    def check(self, vm: VirtualMachine) -> None:
        """Raise ``InvalidParameter`` for a definition QEMU could not run."""
        check_vm(vm)

    async def start(self, vm: VirtualMachine) -> None:
        """Start ``vm``; returns once its vCPUs run."""
        self._refuse_running(vm)
        check_vm(vm)
        for hook in list(self._pre_start):
            waited = hook(vm)
            if inspect.isawaitable(waited):
                await waited
                self._refuse_running(vm)  # another start may have won while this one waited
        for path in [d.path for d in vm.disks] + [p for p in (vm.kernel, vm.initrd) if p]:
            if not Path(path).is_file():
                raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=path)
        paths = RunPaths(self.run_root / vm.vm_id)
        paths.root.mkdir(parents=True, exist_ok=True)
        for stale in (paths.qmp, paths.agent):
            stale.unlink(missing_ok=True)
        process = QemuProcess(build_command(vm, paths, self.accel, self.binary), paths.root / "qemu.log")
        run = _Running(vm, process, paths, QmpChannel(vm.name))
        self._vms[vm.vm_id] = run
        try:
            await process.spawn()
            self._pid_file(vm.vm_id).write_text(f"{process.pid}\n", encoding="ascii")
            run.tasks.append(asyncio.create_task(self._watch_exit(run), name=f"qemu-exit-{vm.vm_id}"))
            await self._connect(run)
            run.tasks.append(asyncio.create_task(self._watch_events(run), name=f"qemu-events-{vm.vm_id}"))
            await run.qmp.execute("cont")
        except Exception as exc:
            run.stop_requested = True
            process.signal_group(signal.SIGKILL)
            await self._await_exit(run)
            exited_by_itself = process.returncode not in (None, -signal.SIGKILL)
            if exited_by_itself and getattr(exc, "message_id", None) != "QemuStartFailed":
                # QEMU died while we were connecting: its log says why, the socket error does not.
                raise StandbyError(
                    f"QEMU did not start: {process.log_tail()}", message_id="QemuStartFailed"
                ) from exc
            raise
        except BaseException:
            run.stop_requested = True
            process.signal_group(signal.SIGKILL)
            await self._await_exit(run)
            raise
        run.state = EnabledState.ENABLED
        self._emit(run, VmEventKind.STARTED, f"pid {process.pid}, accel {self.accel}")

    def _refuse_running(self, vm: VirtualMachine) -> None:
        if vm.vm_id in self._vms:
            raise InvalidState(f"VM {vm.name} is already running", message_id="VmAlreadyRunning", vm=vm.name)

    async def stop(self, vm_id: str, *, graceful: bool = True, timeout: float = 60.0) -> None:
        """Ask the guest to power off (agent, else ACPI) for up to ``timeout`` s, then quit QEMU hard."""
        run = self._running(vm_id)
        run.stop_requested = True
        if graceful:
            run.state = EnabledState.SHUTTING_DOWN
            await self._ask_guest_to_power_off(run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.exited.wait(), timeout)
        if not run.exited.is_set():
            await self._power_off(run)

    async def kill(self, vm_id: str) -> None:
        """SIGKILL QEMU's process group and wait until it is reaped."""
        run = self._running(vm_id)
        run.stop_requested = True
        run.process.signal_group(signal.SIGKILL)
        await self._await_exit(run)

    async def pause(self, vm_id: str) -> None:
        """``stop``: the vCPUs halt, the devices keep their state."""
        run = self._running(vm_id)
        await run.qmp.execute("stop")
        self._paused(run)

    async def resume(self, vm_id: str) -> None:
        """``cont`` (while held, only the state: ``release`` lets the vCPUs run)."""
        run = self._running(vm_id)
        if not run.held:
            await run.qmp.execute("cont")
        self._resumed(run)

    async def hold(self, vm_id: str) -> None:
        """``stop`` for a moment that is not a pause of the VM (a group cut): no PAUSED event, same state.

        Follow every ``hold`` with a ``release``, also when it raised (its ``stop`` may have landed anyway).
        """
        run = self._running(vm_id)
        run.held = True  # before the command: QEMU sends STOP ahead of the answer
        await run.qmp.execute("stop")

    async def release(self, vm_id: str) -> None:
        """``cont`` after ``hold``, unless the VM's user paused it meanwhile (no RESUMED event either way).

        A user's ``pause`` racing the hold is honoured: its own answer reports it as usual (the STOP event
        is not needed), and the vCPUs are left, or put back, stopped. ``resume`` while held only reports the
        state; this ``cont`` lets the vCPUs run. If ``cont`` fails, QEMU is asked whether the vCPUs run, and
        stopped ones are reported paused (the state must not say Enabled of a VM a cut left stopped).
        """
        run = self._running(vm_id)
        if _user_paused(run):  # paused by its user during the hold: that pause stands
            run.held = False
            return
        try:
            await run.qmp.execute("cont")
        except StandbyError:
            run.held = False
            await self._report_if_stopped(run)
            raise
        # Only after the answer: QEMU sends RESUME before it. A RESUME handled later still changes nothing
        # (the state is Enabled); a STOP from here on is news again.
        run.held = False
        if _user_paused(run):
            # A pause answered while our cont was in flight may have reached QEMU before it: stop again
            # (QEMU ignores ``stop`` of stopped vCPUs and sends no STOP event for it).
            await run.qmp.execute("stop")

    async def reset(self, vm_id: str) -> None:
        """``system_reset``."""
        await self._running(vm_id).qmp.execute("system_reset")

    def state(self, vm_id: str) -> EnabledState:
        """``DISABLED`` unless a process runs for the VM."""
        run = self._vms.get(vm_id)
        return run.state if run else EnabledState.DISABLED

    def running(self) -> Sequence[str]:
        """The ids of VMs with a live process."""
        return list(self._vms)

    def subscribe(self, callback: VmEventCallback) -> None:
        """Deliver every ``VmEvent`` to ``callback`` (called on the event loop; exceptions are logged)."""
        self._subscribers.append(callback)

    async def vcpus_running(self, vm_id: str) -> bool:
        """``query-status``: whether QEMU runs the vCPUs now (not the VM's recorded state)."""
        status = await self._running(vm_id).qmp.execute("query-status")
        return isinstance(status, dict) and bool(status.get("running"))

    def block(self, vm_id: str) -> QemuBlockPort:
        """The port's disk operations of a running VM."""
        return QemuBlockPort(self.qmp(vm_id))

    async def freeze_filesystems(self, vm_id: str, *, agent_timeout: float = 2.0,
                                 freeze_timeout: float = 10.0) -> FrozenFilesystems:
        """Connect the guest agent and freeze the guest's file systems (``GuestAgent.freeze_filesystems``)."""
        agent = await self.agent(vm_id, timeout=agent_timeout)
        return await agent.freeze_filesystems(freeze_timeout)

    # extras for tests and the engine --------------------------------------------------------------------
    def qmp(self, vm_id: str) -> QemuBlockOps:
        """The thin QMP block wrappers of a running VM."""
        return QemuBlockOps(self._running(vm_id).qmp)

    def run_paths(self, vm_id: str) -> RunPaths:
        """Where the VM's sockets and logs are (also after it stopped)."""
        return RunPaths(self.run_root / vm_id)

    def pid(self, vm_id: str) -> int:
        """The QEMU process id of a running VM."""
        return self._running(vm_id).process.pid

    async def agent(self, vm_id: str, timeout: float = 5.0) -> GuestAgent:
        """A connected guest agent (``Unavailable`` when the guest runs none); close it after use."""
        run = self._running(vm_id)
        agent = GuestAgent(run.paths.agent, run.vm.name)
        await agent.connect(timeout)
        return agent

    def add_pre_start(self, hook: PreStartHook) -> None:
        """Call ``hook(vm)`` (and await what it returns, if anything) before each start, in the order
        added, while the images are still closed: e.g. wait for the VM's last cycle, then compare the
        images with what was recorded at the last clean stop. A hook's exception stops the start."""
        self._pre_start.append(hook)

    def _pid_file(self, vm_id: str) -> Path:
        return self.run_root / vm_id / "qemu.pid"

    async def reattach(self, vms: Iterable[VirtualMachine]) -> list[str]:
        """After a daemon restart: take over every QEMU an earlier daemon left running (pid file, QMP
        socket, a pidfd to notice its exit). Returns the ids re-attached; others are left alone."""
        adopted = []
        for vm in vms:
            if vm.vm_id in self._vms:
                continue
            try:
                if await self._adopt(vm):
                    adopted.append(vm.vm_id)
            except StandbyError as exc:
                log.warning("could not re-attach to QEMU of %s: %s", vm.name, exc)
        return adopted

    async def _adopt(self, vm: VirtualMachine) -> bool:
        try:
            pid = int(self._pid_file(vm.vm_id).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return False
        if not qemu_alive(pid, vm.vm_id):
            return False
        paths = RunPaths(self.run_root / vm.vm_id)
        run = _Running(vm, AdoptedProcess(pid, paths.root / "qemu.log"), paths, QmpChannel(vm.name))
        await run.qmp.connect(paths.qmp, timeout=10.0)
        status = await run.qmp.execute("query-status")
        run.state = EnabledState.QUIESCE if status.get("status") == "paused" else EnabledState.ENABLED
        self._vms[vm.vm_id] = run
        run.tasks.append(asyncio.create_task(self._watch_exit(run), name=f"qemu-exit-{vm.vm_id}"))
        run.tasks.append(asyncio.create_task(self._watch_events(run), name=f"qemu-events-{vm.vm_id}"))
        log.info("re-attached to QEMU of %s (pid %s, %s)", vm.name, pid, status.get("status"))
        return True

    async def detach(self) -> None:
        """Stop supervising without stopping the VMs (daemon exit with ``stop_vms_on_exit = false``): the
        next daemon re-attaches."""
        for run in list(self._vms.values()):
            for task in run.tasks:
                task.cancel()
            for task in run.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await run.qmp.close()
        self._vms.clear()

    async def close(self) -> None:
        """Power off every running VM (QMP ``quit``, else SIGKILL): at daemon exit and test teardown."""
        for vm_id in list(self._vms):
            with contextlib.suppress(StandbyError):
                await self.stop(vm_id, graceful=False)

    # internals --------------------------------------------------------------------------------------------
    def _running(self, vm_id: str) -> _Running:
        run = self._vms.get(vm_id)
        if run is None or run.exited.is_set():
            raise InvalidState("the VM is not running", message_id="VmNotRunning", vm=vm_id)
        return run

    async def _connect(self, run: _Running) -> None:
        """Connect QMP once QEMU listens, until ``start_timeout``.

        QEMU creates the socket file (bind) before it listens on it: a connect in between is refused, and
        on a loaded host "in between" can last a while. A refusal is retried; any other failure is not.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        refused: Unavailable | None = None
        while True:
            if run.exited.is_set() or run.process.returncode is not None:
                raise StandbyError(
                    f"QEMU did not start: {run.process.log_tail()}", message_id="QemuStartFailed"
                )
            if loop.time() > deadline:
                raise Unavailable(
                    "QEMU did not open its monitor in time", message_id="QemuStartFailed"
                ) from refused
            if run.paths.qmp.exists():
                try:
                    async with run.monitor:
                        if run.exited.is_set():
                            continue  # the watcher closed the monitor: the check above says why
                        await run.qmp.connect(run.paths.qmp, timeout=max(1.0, deadline - loop.time()))
                    return
                except Unavailable as exc:
                    if not _not_listening(exc):
                        raise
                    refused = exc
            await asyncio.sleep(0.02)

    async def _ask_guest_to_power_off(self, run: _Running) -> None:
        try:
            agent = GuestAgent(run.paths.agent, run.vm.name)
            await agent.connect(timeout=2.0)
        except StandbyError:
            with contextlib.suppress(StandbyError):
                await run.qmp.execute("system_powerdown")
            return
        try:
            await agent.shutdown()
        finally:
            await agent.close()

    async def _power_off(self, run: _Running) -> None:
        # QMP quit is a clean QEMU exit: qcow2 metadata and persistent bitmaps are written.
        try:
            await run.qmp.execute("quit", timeout=10.0)
            await asyncio.wait_for(run.exited.wait(), 10.0)
        except (StandbyError, TimeoutError):
            run.process.signal_group(signal.SIGKILL)
        await self._await_exit(run)

    async def _await_exit(self, run: _Running) -> None:
        if run.tasks:  # the exit watcher reaps the process and cleans up
            await run.exited.wait()
            return
        self._vms.pop(run.vm.vm_id, None)  # spawn failed: there is no process
        run.exited.set()

    async def _watch_exit(self, run: _Running) -> None:
        code = await run.process.wait()
        run.state = EnabledState.DISABLED
        self._vms.pop(run.vm.vm_id, None)
        for task in run.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        try:
            async with run.monitor:
                await run.qmp.close()
        except Exception:  # whatever the library does, start/stop/kill wait for ``exited``: set it
            log.exception("closing the monitor of %s after its exit failed", run.vm.name)
        for sock in (run.paths.qmp, run.paths.agent, self._pid_file(run.vm.vm_id)):
            sock.unlink(missing_ok=True)
        kind, detail = self._exit_reason(run, code)
        run.exited.set()
        self._emit(run, kind, detail, exit_code=code if code >= 0 else None, sig=-code if code < 0 else None)

    @staticmethod
    def _exit_reason(run: _Running, code: int) -> tuple[VmEventKind, str]:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if run.stop_requested:
            return VmEventKind.STOPPED, how
        if run.guest_shutdown:
            return VmEventKind.GUEST_SHUTDOWN, f"the guest powered off ({run.shutdown_reason})"
        reason = f", {run.shutdown_reason}" if run.shutdown_reason else ""
        return VmEventKind.CRASHED, f"QEMU ended unexpectedly: {how}{reason}"

    async def _watch_events(self, run: _Running) -> None:
        async with run.qmp.listen() as events:
            while True:
                try:
                    event = await events.get()
                except StandbyError:
                    return
                self._on_event(run, event.get("event", ""), event.get("data", {}))

    def _on_event(self, run: _Running, name: str, data: dict[str, object]) -> None:
        if name == "SHUTDOWN":
            run.guest_shutdown = bool(data.get("guest"))
            run.shutdown_reason = str(data.get("reason", ""))
        elif name == "STOP" and not run.stop_requested and not run.held:
            self._paused(run)
        elif name == "RESUME" and not run.held:
            self._resumed(run)
        elif name == "RESET":
            self._emit(run, VmEventKind.RESET, "guest" if data.get("guest") else "host")

    async def _report_if_stopped(self, run: _Running) -> None:
        with contextlib.suppress(StandbyError):
            status = await run.qmp.execute("query-status", timeout=5.0)
            if isinstance(status, dict) and not status.get("running", True):
                self._paused(run)

    def _paused(self, run: _Running) -> None:
        # The STOP event and the command's return race; whichever comes first reports the change.
        if run.state is EnabledState.ENABLED:
            run.state = EnabledState.QUIESCE
            self._emit(run, VmEventKind.PAUSED)

    def _resumed(self, run: _Running) -> None:
        if run.state is EnabledState.QUIESCE:
            run.state = EnabledState.ENABLED
            self._emit(run, VmEventKind.RESUMED)

    def _emit(
        self,
        run: _Running,
        kind: VmEventKind,
        detail: str = "",
        *,
        exit_code: int | None = None,
        sig: int | None = None,
    ) -> None:
        event = VmEvent(run.vm.vm_id, kind, run.state, detail, exit_code, sig)
        log.info("VM %s (%s): %s %s", run.vm.name, run.vm.vm_id, kind.value, detail)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not stop supervision
                log.exception("VM event subscriber failed on %s", event)


def _user_paused(run: _Running) -> bool:
    """Whether the VM's state is Quiesce (a function: the state may change across an ``await``)."""
    return run.state is EnabledState.QUIESCE


def _not_listening(exc: BaseException) -> bool:
    """Whether a failed connect found no listener: refused, or the socket file gone again (the chain of
    causes holds the ``OSError``: ``QmpChannel`` and the QMP library both raise ``from`` it)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain; the bound only guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, (ConnectionRefusedError, FileNotFoundError)):
            return True
        seen = seen.__cause__
    return False
