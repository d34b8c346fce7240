"""The QEMU driver without QEMU: ``hold``/``release`` (a group cut's stop/cont is not a user's pause) over a
fake QMP channel that emits STOP/RESUME ahead of its answers as QEMU does, and ``_connect``'s retry of a
monitor socket that exists before it listens (a real unix socket bound, listening later)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import StandbyError, Unavailable
from standby.engine.group_cycle import QmpPauser
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.hypervisor.qemu.accel import HostFacts
from standby.hypervisor.qemu.cmdline import RunPaths
from standby.hypervisor.qemu.driver import QemuHypervisor, _Running
from standby.hypervisor.qemu.qmp import QmpChannel

FACTS = HostFacts(kvm_pvm_loaded=False, cpu_has_virt=False, dev_kvm_usable=False)
VM = VirtualMachine("11111111-2222-3333-4444-555555555555", "vm1", 64, 1,
                    disks=(Disk("d0", "/nonexistent.qcow2", 1 << 20),))


class FakeQmp:
    """QEMU's run state behind a QMP channel: ``stop``/``cont`` change it and send STOP/RESUME (only on a
    change, as QEMU) to the driver's event handler before answering."""

    def __init__(self) -> None:
        self.running = True
        self.commands: list[str] = []
        self.on_event: Callable[[str], None] = lambda name: None
        #: Runs inside a command, before its answer (a concurrent user request landing meanwhile).
        self.during: dict[str, Callable[[], Awaitable[None]]] = {}
        self.fail: set[str] = set()

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float | None = 30.0) -> Any:
        self.commands.append(command)
        hook = self.during.pop(command, None)
        if hook is not None:
            await hook()
        if command in self.fail:
            raise StandbyError(f"{command} failed", message_id="QmpCommandFailed")
        if command == "stop" and self.running:
            self.running = False
            self.on_event("STOP")
        elif command == "cont" and not self.running:
            self.running = True
            self.on_event("RESUME")
        elif command == "query-status":
            return {"running": self.running, "status": "running" if self.running else "paused"}
        return {}


class FakeProcess:
    returncode: int | None = None
    pid = 4242

    def log_tail(self, lines: int = 5) -> str:
        return "qemu: the log tail"


def driver(tmp_path: Path) -> tuple[QemuHypervisor, _Running, FakeQmp, list[VmEvent]]:
    hv = QemuHypervisor(tmp_path, accel="tcg", facts=FACTS)
    qmp = FakeQmp()
    run = _Running(VM, FakeProcess(), RunPaths(tmp_path), qmp, EnabledState.ENABLED)  # type: ignore[arg-type]
    qmp.on_event = lambda name: hv._on_event(run, name, {})
    hv._vms[VM.vm_id] = run
    events: list[VmEvent] = []
    hv.subscribe(events.append)
    return hv, run, qmp, events


def kinds(events: list[VmEvent]) -> list[VmEventKind]:
    return [event.kind for event in events]


def test_a_hold_and_release_report_nothing_and_keep_the_state(tmp_path: Path) -> None:
    hv, run, qmp, events = driver(tmp_path)

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        assert not qmp.running and run.held and hv.state(VM.vm_id) is EnabledState.ENABLED
        await hv.release(VM.vm_id)

    asyncio.run(cut())
    assert qmp.commands == ["stop", "cont"] and qmp.running
    assert events == [] and hv.state(VM.vm_id) is EnabledState.ENABLED and not run.held


def test_a_late_resume_after_the_release_changes_nothing(tmp_path: Path) -> None:
    hv, run, qmp, events = driver(tmp_path)
    qmp.on_event = lambda name: None  # the events are handled after the answers this time

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        await hv.release(VM.vm_id)

    asyncio.run(cut())
    hv._on_event(run, "RESUME", {})
    assert events == [] and hv.state(VM.vm_id) is EnabledState.ENABLED


def test_outside_a_hold_stop_and_resume_events_are_reported(tmp_path: Path) -> None:
    hv, run, _, events = driver(tmp_path)
    hv._on_event(run, "STOP", {})
    assert hv.state(VM.vm_id) is EnabledState.QUIESCE
    hv._on_event(run, "RESUME", {})
    assert kinds(events) == [VmEventKind.PAUSED, VmEventKind.RESUMED]
    assert hv.state(VM.vm_id) is EnabledState.ENABLED


def test_a_user_pause_during_the_hold_stands(tmp_path: Path) -> None:
    hv, _, qmp, events = driver(tmp_path)

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        await hv.pause(VM.vm_id)  # the user's: its answer reports it, the vCPUs are stopped already
        await hv.release(VM.vm_id)

    asyncio.run(cut())
    assert kinds(events) == [VmEventKind.PAUSED]
    assert qmp.commands == ["stop", "stop"] and not qmp.running  # no cont: the user's pause stands
    assert hv.state(VM.vm_id) is EnabledState.QUIESCE


def test_a_user_pause_answered_while_the_cont_is_in_flight_is_put_back(tmp_path: Path) -> None:
    hv, run, qmp, events = driver(tmp_path)

    async def user_pause_reaches_qemu_first() -> None:
        qmp.running = False  # the user's stop ran before our cont; its answer reported the pause
        hv._paused(run)

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        qmp.during["cont"] = user_pause_reaches_qemu_first
        await hv.release(VM.vm_id)

    asyncio.run(cut())
    assert qmp.commands == ["stop", "cont", "stop"] and not qmp.running
    assert kinds(events) == [VmEventKind.PAUSED] and hv.state(VM.vm_id) is EnabledState.QUIESCE
    assert not run.held


def test_a_user_resume_during_the_hold_waits_for_the_release(tmp_path: Path) -> None:
    hv, _, qmp, events = driver(tmp_path)

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        await hv.pause(VM.vm_id)
        await hv.resume(VM.vm_id)  # only the state: the cut still needs the vCPUs stopped
        assert not qmp.running
        await hv.release(VM.vm_id)

    asyncio.run(cut())
    assert qmp.commands == ["stop", "stop", "cont"] and qmp.running
    assert kinds(events) == [VmEventKind.PAUSED, VmEventKind.RESUMED]
    assert hv.state(VM.vm_id) is EnabledState.ENABLED


def test_a_failed_release_reports_the_vm_paused(tmp_path: Path) -> None:
    hv, run, qmp, events = driver(tmp_path)
    qmp.fail.add("cont")

    async def cut() -> None:
        await hv.hold(VM.vm_id)
        with pytest.raises(StandbyError):
            await hv.release(VM.vm_id)

    asyncio.run(cut())
    assert qmp.commands == ["stop", "cont", "query-status"]
    assert kinds(events) == [VmEventKind.PAUSED] and hv.state(VM.vm_id) is EnabledState.QUIESCE
    assert not run.held


def test_the_qmp_pauser_holds_and_releases(tmp_path: Path) -> None:
    hv, _, qmp, events = driver(tmp_path)
    pauser = QmpPauser(hv)

    async def cut() -> bool:
        runs = await pauser.running(VM.vm_id)
        await pauser.stop(VM.vm_id)
        await pauser.cont(VM.vm_id)
        return runs

    assert asyncio.run(cut())
    assert qmp.commands == ["query-status", "stop", "cont"] and events == []


# -- _connect: the socket file exists before QEMU listens on it ---------------------------------------------


def bound_socket(path: Path) -> socket.socket:
    """A unix socket bound at ``path`` but not listening yet: connects to it are refused."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.setblocking(False)
    return server


async def serve_qmp(server: socket.socket, *, greet: bool = True) -> int:
    """Listen, then answer one QMP client's greeting and negotiation (or close at once); the clients seen."""
    loop = asyncio.get_running_loop()
    server.listen(1)
    client, _ = await loop.sock_accept(server)
    with client:
        if not greet:
            return 1
        await loop.sock_sendall(client, json.dumps(
            {"QMP": {"version": {"qemu": {"major": 8, "minor": 2, "micro": 0}, "package": ""},
                     "capabilities": []}}).encode() + b"\r\n")
        request = b""
        while not request.endswith(b"\n") and b"}" not in request:
            request += await loop.sock_recv(client, 4096)
        answer: dict[str, Any] = {"return": {}}
        if b'"id"' in request:
            answer["id"] = json.loads(request)["id"]
        await loop.sock_sendall(client, json.dumps(answer).encode() + b"\r\n")
        await asyncio.sleep(0.05)  # let the client finish its side before the close
    return 1


def connect_driver(tmp_path: Path, timeout: float) -> tuple[QemuHypervisor, _Running]:
    hv = QemuHypervisor(tmp_path, accel="tcg", facts=FACTS, start_timeout=timeout)
    run = _Running(VM, FakeProcess(), RunPaths(tmp_path), QmpChannel(VM.name))  # type: ignore[arg-type]
    return hv, run


def test_a_refused_connect_is_retried_until_qemu_listens(tmp_path: Path) -> None:
    hv, run = connect_driver(tmp_path, timeout=30.0)
    server = bound_socket(run.paths.qmp)

    async def scenario() -> None:
        connecting = asyncio.create_task(hv._connect(run))
        await asyncio.sleep(0.3)  # several refused attempts
        assert not connecting.done()
        serving = asyncio.create_task(serve_qmp(server))
        await connecting
        assert run.qmp.connected
        await run.qmp.close()
        assert await serving == 1

    with server:
        asyncio.run(scenario())


def test_a_monitor_that_never_listens_fails_at_the_deadline_with_the_refusal_as_cause(tmp_path: Path) -> None:
    hv, run = connect_driver(tmp_path, timeout=0.3)
    with bound_socket(run.paths.qmp), pytest.raises(Unavailable) as caught:
        asyncio.run(hv._connect(run))
    assert caught.value.message_id == "QemuStartFailed"
    assert "did not open its monitor in time" in str(caught.value)
    assert isinstance(caught.value.__cause__, Unavailable)


def test_a_failure_other_than_a_refusal_is_not_retried(tmp_path: Path) -> None:
    hv, run = connect_driver(tmp_path, timeout=30.0)
    server = bound_socket(run.paths.qmp)

    async def scenario() -> None:
        serving = asyncio.create_task(serve_qmp(server, greet=False))  # accepts, then hangs up
        with pytest.raises(Unavailable) as caught:
            await hv._connect(run)
        assert caught.value.message_id == "QmpUnavailable"
        assert await serving == 1
        with contextlib.suppress(Exception):
            await run.qmp.close()

    with server:
        asyncio.run(scenario())


def test_qemu_exiting_while_refused_says_it_did_not_start(tmp_path: Path) -> None:
    hv, run = connect_driver(tmp_path, timeout=30.0)
    process = run.process

    async def scenario() -> None:
        connecting = asyncio.create_task(hv._connect(run))
        await asyncio.sleep(0.1)
        process.returncode = 1  # type: ignore[misc]
        await connecting

    with bound_socket(run.paths.qmp), pytest.raises(StandbyError) as caught:
        asyncio.run(scenario())
    assert caught.value.message_id == "QemuStartFailed" and "the log tail" in str(caught.value)


class ExitingProcess(FakeProcess):
    """A QEMU that exits when told to (the exit watcher awaits ``wait``)."""

    def __init__(self) -> None:
        self.exit = asyncio.Event()

    async def wait(self) -> int:
        await self.exit.wait()
        self.returncode = 1
        return 1


def test_qemu_exiting_during_a_refused_connect_ends_the_start_cleanly(tmp_path: Path) -> None:
    """The exit watcher closes the monitor while a connect attempt is still unwinding: the two must not
    overlap (the QMP library asserts, the watcher died and ``exited`` was never set: a start hung)."""
    hv, run = connect_driver(tmp_path, timeout=30.0)
    process = ExitingProcess()
    run.process = process  # type: ignore[assignment]
    real_connect = run.qmp.connect

    async def connect_then_exit(path: Path, timeout: float = 10.0) -> None:
        attempt = asyncio.ensure_future(real_connect(path, timeout))
        await asyncio.sleep(0)  # the attempt is refused and unwinding when QEMU's exit is noticed
        process.exit.set()
        await attempt

    run.qmp.connect = connect_then_exit  # type: ignore[method-assign]

    async def scenario() -> None:
        run.tasks.append(asyncio.create_task(hv._watch_exit(run)))
        with pytest.raises(StandbyError) as caught:
            await hv._connect(run)
        assert caught.value.message_id == "QemuStartFailed"
        await asyncio.wait_for(run.exited.wait(), 30)  # a guard against a hang, not a measurement

    with bound_socket(run.paths.qmp):
        asyncio.run(scenario())
    assert run.exited.is_set() and run.state is EnabledState.DISABLED
