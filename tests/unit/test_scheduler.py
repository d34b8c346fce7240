"""The scheduler over the cycle fakes: tasks follow the relationship state, off VMs are skipped, overruns
count as misses, the auto-resync window and the export import are noticed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import time
from typing import Any

from standby.domain.cycles import CycleOutcome
from standby.domain.entities import ReplicationSettings
from standby.domain.enums import EnabledState, RelationshipIndex, ReplicationMode, ReplicationState
from standby.engine.cycle import HEARTBEAT
from standby.engine.scheduler import RELATIONSHIP, Plan, Scheduler
from tests.unit.test_cycle import VM_ID, World, make_world

P = RelationshipIndex.PRIMARY


class Resyncs:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def submit_auto_resync(self, vm_id: str, index: RelationshipIndex) -> None:
        self.calls.append(vm_id)


class Claims:
    """A kind of unit with no units of its own that claims one VM (as a collection claims its members)."""

    name = "claims"

    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id

    async def survey(self) -> list[str]:
        return []

    def plan(self, unit: str) -> Plan | None:
        return None

    async def run(self, unit: str) -> None:
        raise AssertionError("no units")

    def record_miss(self, unit: str, count: int) -> None:
        raise AssertionError("no units")

    def claims(self, vm_id: str) -> bool:
        return vm_id == self.vm_id


def scheduler(world: World, state: EnabledState = EnabledState.ENABLED, **kwargs: Any) -> Scheduler:
    async def no_sleep(seconds: float) -> None:
        world.clock.mono += seconds
        await asyncio.sleep(0)

    return Scheduler(world.db, world.runner, lambda vm_id: state, world.clock,
                     monotonic=world.clock.monotonic, sleep=no_sleep, poll=0.01, **kwargs)


async def _until_cycles(world: World, count: int) -> None:
    """Let the scheduler's task run (cycles read in worker threads) until ``count`` cycles are recorded."""
    for _ in range(2000):
        if len(world.db.cycles.list(VM_ID, 0)) >= count:
            return
        await asyncio.sleep(0.005)


def test_a_replicating_relationship_gets_a_task_that_runs_cycles() -> None:
    world = make_world()

    async def scenario() -> list[Any]:
        sched = scheduler(world)
        await sched.reconcile()
        assert sched.running == [(RELATIONSHIP, VM_ID)]
        await _until_cycles(world, 2)
        world.db.relationships.update(replace(world.rel(), state=ReplicationState.SUSPENDED))
        await sched.reconcile()
        assert sched.running == []
        await sched.stop()
        return world.db.cycles.list(VM_ID, 0)

    records = asyncio.run(scenario())
    assert len(records) >= 2 and all(r.outcome is CycleOutcome.SUCCESS for r in records)
    # Nothing was written: every cycle was a heartbeat, no cut, the acknowledged sequence stays.
    assert all(r.detail == HEARTBEAT for r in records) and world.capture.calls == []
    assert world.rel().sequence == 3 and len(world.peer.heartbeats) == len(records)


def test_a_task_ships_what_the_vm_wrote_before_each_cycle() -> None:
    world = make_world()
    real_run = world.runner.run
    written: list[int] = []

    async def write_then_run(*args: Any, **kwargs: Any) -> Any:
        written.append(len(written))
        world.capture.write(len(written) * 65536, b"\x42" * 65536)
        return await real_run(*args, **kwargs)

    world.runner.run = write_then_run  # type: ignore[method-assign]

    async def scenario() -> None:
        sched = scheduler(world)
        await sched.reconcile()
        await _until_cycles(world, 2)
        await sched.stop()

    asyncio.run(scenario())
    records = [r for r in world.db.cycles.list(VM_ID, 0) if r.outcome is CycleOutcome.SUCCESS]
    assert len(records) >= 2 and all(r.dirty_bytes == 65536 for r in records)
    assert world.rel().sequence == 3 + len(records)
    # each acknowledged cycle carried its write (a cycle cut short by ``stop`` leaves its write pending)
    assert all(world.peer.replica[i * 65536:(i + 1) * 65536] == b"\x42" * 65536
               for i in range(1, len(records) + 1))


def test_an_off_vm_is_skipped() -> None:
    world = make_world()

    async def scenario() -> None:
        sched = scheduler(world, EnabledState.DISABLED)
        await sched.reconcile()
        for _ in range(20):
            await asyncio.sleep(0.005)
        await sched.stop()

    asyncio.run(scenario())
    assert world.db.cycles.list(VM_ID, 0) == [] and world.capture.calls == []


def test_an_overrunning_cycle_counts_misses() -> None:
    world = make_world(settings=ReplicationSettings("replica.example", 8443, interval_seconds=5))
    real_run = world.runner.run

    async def slow_run(*args: Any, **kwargs: Any) -> Any:
        world.clock.mono += 12.0  # more than two intervals
        return await real_run(*args, **kwargs)

    world.runner.run = slow_run  # type: ignore[method-assign]

    async def scenario() -> None:
        sched = scheduler(world)
        await sched.reconcile()
        await _until_cycles(world, 3)
        await sched.stop()

    asyncio.run(scenario())
    outcomes = [r.outcome for r in world.db.cycles.list(VM_ID, 0)]
    assert outcomes[:3] == [CycleOutcome.SUCCESS, CycleOutcome.MISS, CycleOutcome.MISS]


def test_auto_resync_only_inside_its_window() -> None:
    for local, expected in ((time(19, 0), [VM_ID]), (time(12, 0), [])):
        settings = ReplicationSettings("replica.example", 8443, auto_resynchronize_enabled=True)
        world = make_world(ReplicationState.WAITING_TO_START_RESYNCHRONIZATION, settings=settings)
        resyncs = Resyncs()

        async def scenario(world: World = world, resyncs: Resyncs = resyncs, local: time = local) -> None:
            await scheduler(world, resyncer=resyncs, local_time=lambda: local).reconcile()

        asyncio.run(scenario())
        assert resyncs.calls == expected


def test_an_imported_export_switches_to_replicating() -> None:
    world = make_world(ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, sequence=1)
    world.db.relationships.update(replace(world.rel(), intent="export:1"))

    class Status:
        head = 0

        async def replica_status(self, vm_id: str) -> dict[str, int]:
            return {"head_sequence": self.head}

    status = Status()

    async def scenario() -> None:
        sched = scheduler(world, peers=lambda settings: status)  # type: ignore[arg-type,return-value]
        await sched.reconcile()
        assert world.rel().state is ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
        status.head = 1
        await sched.reconcile()
        await sched.stop()

    asyncio.run(scenario())
    assert world.rel().state is ReplicationState.REPLICATING and world.rel().intent is None


def test_reconcile_runs_only_this_hosts_ungrouped_primaries() -> None:
    world = make_world()
    other = "6E0D3C2A-1111-4222-8333-000000000002"
    grouped = "6E0D3C2A-1111-4222-8333-000000000003"
    vm = world.db.vms.get(VM_ID)
    world.db.vms.insert(replace(vm, vm_id=other, name="replica01", replication_mode=ReplicationMode.REPLICA,
                                version=0))
    world.db.vms.insert(replace(vm, vm_id=grouped, name="member01", version=0))
    for vm_id in (other, grouped):
        world.db.relationships.insert(replace(world.rel(), vm_id=vm_id, version=0))

    async def scenario() -> list[tuple[str, str]]:
        sched = scheduler(world)
        sched.add_kind(Claims(grouped))
        await sched.reconcile()
        running = sched.running
        await sched.stop()
        return running

    assert asyncio.run(scenario()) == [(RELATIONSHIP, VM_ID)]
