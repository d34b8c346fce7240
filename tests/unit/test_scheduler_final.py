"""The last cycle at a clean stop: a replicating primary VM that stops cleanly gets one cycle at once (over
the cycle fakes), which ships what was written after the last cycle; crashes, stopped schedulers and
relationships that do not replicate get none; the clean-stop stamps are taken again afterwards."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from standby.domain.cycles import CycleOutcome
from standby.domain.enums import EnabledState, ReplicationState
from standby.domain.errors import Unavailable
from standby.engine.scheduler import Scheduler
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.storage.logformat import LogKind
from tests.unit.test_cycle import VM_ID, World, make_world
from tests.unit.test_scheduler import scheduler

OFF = EnabledState.DISABLED


def _stop(kind: VmEventKind = VmEventKind.STOPPED) -> VmEvent:
    return VmEvent(VM_ID, kind, OFF)


async def _settle(sched: Scheduler) -> None:
    """Let the final-cycle task (reads in worker threads) finish."""
    for _ in range(2000):
        # on_vm_event creates the task at once: none now means none comes.
        if all(t.done() for t in sched._finals.values()):
            return
        await asyncio.sleep(0.005)


def _run_with_event(world: World, event: VmEvent, *, started: bool = True) -> Scheduler:
    async def scenario() -> Scheduler:
        sched = scheduler(world, OFF)  # off: the interval loop would never cycle this VM
        if started:
            sched.start()
            await asyncio.sleep(0.02)
        sched.on_vm_event(event)
        await _settle(sched)
        await sched.stop()
        return sched

    return asyncio.run(scenario())


def test_a_clean_stop_ships_the_writes_after_the_last_cycle() -> None:
    world = make_world()
    world.capture.write(65536, b"\x5a" * 65536)  # written after cycle 3, before the stop
    world.db.disk_stamps.put(VM_ID, [("d0", 1, 1)])  # what the tracking guard stamped at the stop
    _run_with_event(world, _stop())
    [record] = world.db.cycles.list(VM_ID, 0)
    assert (record.outcome, record.sequence, record.dirty_bytes) == (CycleOutcome.SUCCESS, 4, 65536)
    assert world.peer.logs == [(4, 3, LogKind.DELTA, 1)]
    assert world.peer.replica == world.capture.content  # the replica's head equals the disk
    assert world.rel().sequence == 4
    # The fake image does not exist: the stamps were taken again (missing file → -1), not left as they were.
    assert world.db.disk_stamps.get(VM_ID) == [("d0", -1, -1)]


def test_a_guest_power_off_counts_as_a_clean_stop() -> None:
    world = make_world()
    world.capture.write(0, b"\x01" * 65536)
    _run_with_event(world, _stop(VmEventKind.GUEST_SHUTDOWN))
    assert [r.sequence for r in world.db.cycles.list(VM_ID, 0)] == [4]
    assert world.db.disk_stamps.get(VM_ID) == []  # nothing stamped (the VM started again): nothing to redo


def test_no_last_cycle_after_a_crash_before_start_or_when_not_replicating() -> None:
    crashed = make_world()
    _run_with_event(crashed, _stop(VmEventKind.CRASHED))
    stopping = make_world()  # the scheduler stopped (daemon exit powers VMs off): no new cycle
    _run_with_event(stopping, _stop(), started=False)
    suspended = make_world()
    suspended.db.relationships.update(replace(suspended.rel(), state=ReplicationState.SUSPENDED))
    _run_with_event(suspended, _stop())
    for world in (crashed, stopping, suspended):
        assert world.db.cycles.list(VM_ID, 0) == [] and world.peer.logs == []


def test_a_failed_last_cycle_is_recorded_and_the_stamps_still_follow_the_images() -> None:
    from standby.domain.errors import Unavailable

    world = make_world()
    world.capture.write(0, b"\x02" * 65536)
    world.peer.fail = Unavailable("replica down")
    world.db.disk_stamps.put(VM_ID, [("d0", 1, 1)])
    _run_with_event(world, _stop())
    [record] = world.db.cycles.list(VM_ID, 0)
    assert record.outcome is CycleOutcome.NETWORK and world.rel().sequence == 3
    assert world.db.disk_stamps.get(VM_ID) == [("d0", -1, -1)]


def _gated_start(world: World, fail: bool = False) -> tuple[bool, bool, list[tuple[int, int, LogKind, int]]]:
    """Stop cleanly, start again while the last cycle is held; whether the start waited, returned, and
    the logs shipped by the time it returned."""
    async def scenario() -> tuple[bool, bool, list[tuple[int, int, LogKind, int]]]:
        sched = scheduler(world, OFF)
        sched.start()
        release = asyncio.Event()
        run = sched._runner.run

        async def held(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            if fail:
                raise Unavailable("the replica went away")
            return await run(*args, **kwargs)

        sched._runner.run = held  # type: ignore[method-assign]
        sched.on_vm_event(_stop())
        starting = asyncio.create_task(sched.before_start(world.db.vms.get(VM_ID)))
        await asyncio.sleep(0.1)
        waited = not starting.done()
        release.set()
        await asyncio.wait_for(starting, 30)
        shipped = list(world.peer.logs)
        await sched.stop()
        return waited, starting.done(), shipped

    return asyncio.run(scenario())


def test_a_start_waits_for_the_last_cycle_then_finds_the_images_restamped() -> None:
    world = make_world()
    world.capture.write(0, b"\x07" * 65536)
    world.db.disk_stamps.put(VM_ID, [("d0", 1, 1)])
    waited, returned, shipped = _gated_start(world)
    assert waited and returned
    assert shipped == [(4, 3, LogKind.DELTA, 1)]  # the last cycle ran to its end before the start went on
    assert world.db.disk_stamps.get(VM_ID) == [("d0", -1, -1)]  # restamped before the guard compares


def test_a_failed_last_cycle_does_not_stop_the_start() -> None:
    world = make_world()
    world.capture.write(0, b"\x07" * 65536)
    waited, returned, shipped = _gated_start(world, fail=True)
    assert waited and returned and shipped == []


def test_a_start_without_a_last_cycle_does_not_wait() -> None:
    world = make_world()

    async def scenario() -> None:
        sched = scheduler(world, OFF)
        await asyncio.wait_for(sched.before_start(world.db.vms.get(VM_ID)), 1)

    asyncio.run(scenario())
    assert world.peer.logs == []
