"""One scheduler loop for relationships and collections (over the group-cycle fakes): a collection is a unit
whose members are not units of their own, its overruns count as missed cycles (ReplicationWALMissCount and
each member's own statistics), a collection of powered-off members gets its first cycle and then idles, a
start waits for a cycle that cuts the VM, and a cycle that raises keeps its schedule."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from standby.domain.cycles import CycleOutcome
from standby.domain.entities import ReplicationSettings
from standby.domain.enums import EnabledState, ReplicationHealth
from standby.domain.groups import CUT_TAG_KEY, GroupOutcome
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import COLLECTION_UNITS, CollectionUnits
from standby.engine.group_replication import collection_statistics
from standby.engine.scheduler import Scheduler
from tests.unit.test_group_cycle import GROUP, VMS, P, World, make_world

ON, OFF = EnabledState.ENABLED, EnabledState.DISABLED
KEY = (COLLECTION_UNITS, GROUP)


class Power:
    """Which members run (the hypervisor's ``state``), shared by the scheduler, the units and the capture."""

    def __init__(self, world: World, running: set[str]) -> None:
        self.world = world
        self.set(running)

    def set(self, running: set[str]) -> None:
        self.running = set(running)
        self.world.capture.off = set(VMS) - self.running

    def __call__(self, vm_id: str) -> EnabledState:
        return ON if vm_id in self.running else OFF


def _scheduler(world: World, power: Power, *, interval: int = 30) -> tuple[Scheduler, CollectionUnits]:
    world.db.collection_settings.put(GROUP, "web tier replication",
                                     ReplicationSettings("replica.example", 8443, interval_seconds=interval))

    async def no_sleep(seconds: float) -> None:
        world.clock.mono += seconds
        await asyncio.sleep(0)

    sched = Scheduler(world.db, world.runner, power, world.clock, monotonic=world.clock.monotonic,
                      sleep=no_sleep, poll=0.01)
    units = CollectionUnits(world.db, world.cycle, world.runner, power, world.clock)
    sched.add_kind(units)
    return sched, units


async def _until(probe: Any, what: str, turns: int = 2000) -> None:
    for _ in range(turns):
        if probe():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


async def _turns(count: int = 100) -> None:
    """Let the loop go round many times (each sleep of the fake clock only yields; cycles read in threads)."""
    for _ in range(count):
        await asyncio.sleep(0.002)


def _idle(units: CollectionUnits) -> bool:
    plan = units.plan(GROUP)
    return plan is not None and plan.idle


def test_a_collection_is_one_unit_and_its_members_are_not_units_of_their_own() -> None:
    world = make_world()

    async def scenario() -> list[tuple[str, str]]:
        sched, _ = _scheduler(world, Power(world, set(VMS)))
        await sched.reconcile()
        running = sched.running
        await _until(lambda: world.db.group_cycles.list(GROUP), "a group cycle")
        await sched.stop()
        return running

    assert asyncio.run(scenario()) == [KEY]
    [record, *_] = world.db.group_cycles.list(GROUP)
    assert record.outcome is GroupOutcome.SUCCESS
    # the members were cut together, never on their own: every member cycle carries the collection's tag
    assert all(CUT_TAG_KEY in header.extra for header in world.peer.headers.values())


def test_an_overrunning_group_cycle_counts_missed_cycles_for_the_collection_and_its_members() -> None:
    world = make_world()
    real_run = world.cycle.run

    async def slow_run(collection_id: str) -> Any:
        world.clock.mono += 12.0  # more than two intervals of 5 s
        return await real_run(collection_id)

    world.cycle.run = slow_run  # type: ignore[method-assign]

    async def scenario() -> None:
        sched, _ = _scheduler(world, Power(world, set(VMS)), interval=5)
        await sched.reconcile()
        await _until(lambda: len(world.db.group_cycles.list(GROUP)) >= 4, "two group cycles and their misses")
        await sched.stop()

    asyncio.run(scenario())
    records = world.db.group_cycles.list(GROUP)
    assert [r.outcome for r in records[:4]] == [GroupOutcome.SUCCESS, GroupOutcome.MISS, GroupOutcome.MISS,
                                                GroupOutcome.SUCCESS]
    assert records[1].cut_id == records[0].cut_id  # the misses name the cycle that overran
    stats, _ = collection_statistics(world.db, world.clock, CollectionUseCases(world.db, world.clock), GROUP)
    assert stats.miss_count >= 2 and stats.success_count >= 2  # ReplicationWALMissCount / SuccessCount
    assert stats.health is ReplicationHealth.WARNING  # more than 20 % of its members' cycles were missed
    for vm_id in VMS:  # each member missed those cycles too (its own statistics and health)
        outcomes = [r.outcome for r in world.db.cycles.list(vm_id, int(P))]
        assert outcomes[:3] == [CycleOutcome.SUCCESS, CycleOutcome.MISS, CycleOutcome.MISS]
        assert world.db.relationships.get(vm_id, int(P)).health is ReplicationHealth.WARNING


def test_a_collection_of_powered_off_members_gets_its_first_cycle_then_idles_until_one_runs() -> None:
    world = make_world()
    power = Power(world, set())
    world.db.disk_stamps.put(VMS[0], [("d0", 1, 1)])  # the tracking guard's stamps of a clean stop

    async def scenario() -> list[int]:
        sched, units = _scheduler(world, power)
        assert not _idle(units)  # never cut yet: the first turn cuts them, off as they are
        await sched.reconcile()
        await _until(lambda: _idle(units), "the first group cycle")
        await _turns()
        counts = [len(world.db.group_cycles.list(GROUP))]  # idle now: nothing can have changed
        power.set({VMS[1]})
        await _until(lambda: len(world.db.group_cycles.list(GROUP)) >= 3, "cycles while a member runs")
        power.set(set())
        await _until(lambda: _idle(units), "the cycle after the last member stopped")
        counts.append(len(world.db.group_cycles.list(GROUP)))
        await _turns()
        counts.append(len(world.db.group_cycles.list(GROUP)))
        await sched.stop()
        return counts

    first, later, last = asyncio.run(scenario())
    assert first == 1
    assert later == last  # the member stopped: one more cycle took its last writes, then idle again
    assert later >= 4
    records = world.db.group_cycles.list(GROUP)
    assert all(r.outcome is GroupOutcome.SUCCESS for r in records)
    assert set(world.peer.headers) == set(VMS)  # every member's log went out, tagged with the cut
    # the off members' cut rewrote their images' bitmaps: the clean-stop stamps were taken again
    assert world.db.disk_stamps.get(VMS[0]) == [("d0", -1, -1)]


def test_a_start_waits_for_a_collection_cycle_that_cuts_the_vm() -> None:
    world = make_world()
    real_run = world.cycle.run
    release = asyncio.Event()
    entered = asyncio.Event()

    async def held_run(collection_id: str) -> Any:
        entered.set()
        await release.wait()
        return await real_run(collection_id)

    world.cycle.run = held_run  # type: ignore[method-assign]

    async def scenario() -> tuple[bool, bool]:
        sched, _ = _scheduler(world, Power(world, set()))
        await sched.reconcile()
        await entered.wait()
        start = asyncio.create_task(sched.before_start(world.db.vms.get(VMS[2])))
        await _turns(20)
        waited = not start.done()
        release.set()
        await asyncio.wait_for(start, 5)
        recorded = bool(world.db.group_cycles.list(GROUP))
        await sched.stop()
        return waited, recorded

    waited, recorded = asyncio.run(scenario())
    assert waited and recorded  # the start went on only once the cycle had ended


def test_a_cycle_that_raises_keeps_the_units_schedule() -> None:
    world = make_world()
    calls: list[float] = []

    async def broken_run(collection_id: str) -> Any:
        calls.append(world.clock.mono)
        raise RuntimeError("a bug")

    world.cycle.run = broken_run  # type: ignore[method-assign]

    async def scenario() -> list[tuple[str, str]]:
        sched, _ = _scheduler(world, Power(world, set(VMS)), interval=30)
        await sched.reconcile()
        await _until(lambda: len(calls) >= 3, "three attempts")
        running = sched.running
        await sched.stop()
        return running

    assert asyncio.run(scenario()) == [KEY]
    # each failure waited for the next interval boundary, not restarted at once by the reconcile loop
    assert [round(b - a) for a, b in itertools.pairwise(calls)][:2] == [30, 30]
