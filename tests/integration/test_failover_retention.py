"""Retention, applies and failover on one replica at the same time, over real qcow2 chains: a point is never
merged away between being chosen and being recorded as in use (the applier's chain guard), a merge plan
stops as soon as a failover or a test VM holds a point, and a log that finishes applying after a failover
records its point without taking the failed-over VM's disks."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from standby.domain.entities import RecoveryPoint, ReplicationSettings
from standby.domain.enums import ReplicationHealth, ReplicationState
from standby.domain.errors import NotFound
from standby.engine import apply as apply_module
from standby.engine.apply import ReplicaApplier
from standby.engine.failover import FailoverUseCases
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.storage import chain
from standby.storage.logformat import LogKind
from standby.store.sqlite import Database
from tests.integration.test_apply import DISKS as APPLY_DISKS
from tests.integration.test_apply import PRIMARY as APPLY_PRIMARY
from tests.integration.test_apply import VM_ID as APPLY_VM
from tests.integration.test_apply import (
    Rig,
    build_log,
    rig,  # noqa: F401 - the fixture
)
from tests.integration.test_chain import qemu_io
from tests.integration.test_failover_support import VM_ID, Replica, clock, images_identical, make_replica

WRITES = ((0x11, 0, 2 << 20), (0x22, 1 << 20, 2 << 20), (0x33, 512 << 10, 256 << 10),
          (0x44, 4 << 20, 1 << 20))


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    made = make_replica(tmp_path, Database.memory(), writes=WRITES)
    rel = made.db.relationships.get(VM_ID, 0)
    made.db.relationships.update(dataclasses.replace(
        rel, settings=dataclasses.replace(rel.settings, recovery_history=0)))  # every older point merges
    return made


class GatedMerges:
    """The real merge, but the first one waits until released (so a failover can arrive mid-merge)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.done: list[tuple[int, int]] = []
        self._real = apply_module._merge_images

    def __call__(self, older: RecoveryPoint, newer: RecoveryPoint) -> None:
        if not self.done:
            self.started.set()
            assert self.release.wait(30), "the test never released the merge"
        self._real(older, newer)
        self.done.append((older.sequence, newer.sequence))


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> GatedMerges:
    gated = GatedMerges()
    monkeypatch.setattr(apply_module, "_merge_images", gated)
    return gated


def _use_cases(replica: Replica) -> tuple[ReplicaApplier, FailoverUseCases]:
    applier = ReplicaApplier(replica.db, clock)
    guards = ReplicationUseCases(replica.db, clock)
    failover = FailoverUseCases(replica.db, clock, None, FakeHypervisor(), guards,
                                chain_guard=applier.chain_guard)
    return applier, failover


async def _while_merging(gate: GatedMerges, applier: ReplicaApplier, action: asyncio.Future[object]
                         ) -> tuple[int, object]:
    """Run retention; once its first merge is under way start ``action``; let the merge finish."""
    retaining = asyncio.create_task(applier.retain(VM_ID))
    assert await asyncio.to_thread(gate.started.wait, 30)
    acting = asyncio.ensure_future(action)
    await asyncio.sleep(0.2)
    assert not acting.done(), "the failover chose its point while a merge was under way"
    gate.release.set()
    merged = await retaining
    try:
        return merged, await acting
    except NotFound as gone:
        return merged, gone


def test_a_failover_to_a_point_being_merged_away_is_refused_cleanly(replica: Replica,
                                                                    gate: GatedMerges) -> None:
    applier, failover = _use_cases(replica)
    oldest = replica.points[0]
    merged, answer = asyncio.run(_while_merging(gate, applier, failover.initiate(VM_ID, oldest.point_id)))
    assert isinstance(answer, NotFound)  # it was merged away while the failover waited: gone, and said so
    assert merged == 3 and gate.done == [(1, 2), (2, 3), (3, 4)]
    rel = replica.db.relationships.get(VM_ID, 0)
    assert rel.state is ReplicationState.REPLICATING and rel.intent is None
    assert not (replica.folder / "failover").exists() or not any((replica.folder / "failover").iterdir())
    assert [p.sequence for p in replica.db.recovery_points.list(vm_id=VM_ID)] == [4]


def test_a_failover_arriving_mid_plan_stops_the_remaining_merges(replica: Replica, gate: GatedMerges,
                                                                 tmp_path: Path) -> None:
    applier, failover = _use_cases(replica)
    latest = replica.points[-1]
    before = tmp_path / "latest.raw"
    _flatten(replica.image(3), before)
    merged, answer = asyncio.run(_while_merging(gate, applier, failover.initiate(VM_ID, None)))
    assert isinstance(answer, dict) and answer["RecoveryPoint"] == latest.point_id
    assert merged == 1 and gate.done == [(1, 2)]  # the merge under way finished; the plan stopped there
    rel = replica.db.relationships.get(VM_ID, 0)
    assert rel.state is ReplicationState.RECOVERED
    assert [p.sequence for p in replica.db.recovery_points.list(vm_id=VM_ID)] == [2, 3, 4]
    disk = Path(replica.db.vms.get(VM_ID).disks[0].path)
    assert images_identical(disk, before)  # the failed-over disk shows the latest point, byte for byte
    assert asyncio.run(applier.retain(VM_ID)) == 0  # failed over: retention leaves the chain alone


def test_a_test_vm_arriving_mid_plan_keeps_its_point_and_older_chain(replica: Replica,
                                                                    gate: GatedMerges) -> None:
    applier, failover = _use_cases(replica)
    third = replica.points[2]
    merged, answer = asyncio.run(_while_merging(gate, applier, failover.drill.create(VM_ID, third.point_id)))
    assert isinstance(answer, dict) and answer["RecoveryPoint"] == third.point_id
    assert merged == 1 and gate.done == [(1, 2)]
    assert [p.sequence for p in replica.db.recovery_points.list(vm_id=VM_ID)] == [2, 3, 4]
    holds = replica.db.point_holds.list()
    assert [(h.point_id, h.reason) for h in holds] == [(third.point_id, "test")]  # the pending hold is gone


def _flatten(image: Path, out: Path) -> None:
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)


# -- a log still applying when the failover lands ---------------------------------------------------------


def test_a_log_applied_after_a_failover_leaves_the_failover_disks(rig: Rig) -> None:  # noqa: F811
    rig.db.relationships.update(dataclasses.replace(rig.db.relationships.get(APPLY_VM, 0),
                                                    settings=ReplicationSettings(recovery_history=24)))
    rig.apply(1, 0, LogKind.INITIAL, None)
    qemu_io(rig.sources["disk0"], "write -P 0x61 3M 1M")
    log = build_log(rig.sources, 2, 1, LogKind.DELTA, {"disk0": [(3 << 20, 1 << 20)]}, app=False, extra={},
                    cut_time=rig.clock.now)
    guards = ReplicationUseCases(rig.db, rig.clock)
    failover = FailoverUseCases(rig.db, rig.clock, None, FakeHypervisor(), guards,
                                chain_guard=rig.replica.applier.chain_guard)

    async def scenario() -> tuple[object, object]:
        release = asyncio.Event()

        async def held_back() -> AsyncIterator[bytes]:  # half the log, then the failover, then the rest
            data = b"".join(log)
            yield data[:len(data) // 2]
            await release.wait()
            yield data[len(data) // 2:]

        applying = asyncio.create_task(rig.replica.put_log(APPLY_PRIMARY, APPLY_VM, 2, held_back()))
        await asyncio.sleep(0.3)
        assert not applying.done()
        failed_over = await failover.initiate(APPLY_VM, None)  # the latest point: 1
        release.set()
        applied = await applying
        await rig.replica.applier.settled(APPLY_VM)
        return failed_over, applied

    failed_over, applied = asyncio.run(scenario())
    assert isinstance(failed_over, dict) and applied.applied  # type: ignore[attr-defined]
    first = rig.db.recovery_points.list(vm_id=APPLY_VM)[0]
    assert failed_over["RecoveryPoint"] == first.point_id
    assert rig.sequences() == [1, 2]  # the log that was already streaming in became a point
    rel = rig.db.relationships.get(APPLY_VM, 0)
    assert rel.state is ReplicationState.RECOVERED and rel.sequence == 2
    assert rel.health is ReplicationHealth.WARNING  # failed over, as the failover left it
    disks = [Path(d.path) for d in rig.db.vms.get(APPLY_VM).disks if d.disk_id in APPLY_DISKS]
    assert all(path.parent.name == "failover" for path in disks), disks  # still the failover's overlays
    assert chain.backing_file(disks[0]) == rig.point_images(1)["disk0"]
    asyncio.run(failover.revert(APPLY_VM))
    assert [d.path for d in rig.db.vms.get(APPLY_VM).disks if d.disk_id in APPLY_DISKS] == \
        [str(rig.point_images(2)[d]) for d in APPLY_DISKS]  # reverted: the head, point 2
