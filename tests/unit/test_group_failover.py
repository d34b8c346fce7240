"""Collection failover and group replication over a fake per-VM layer: all or nothing, member named in the
error, revert/commit/test of every member, and the collection states they leave."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from standby.domain.entities import (
    Collection,
    CollectionRecoveryPoint,
    Job,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    EnabledState,
    JobState,
    JobType,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import FileNotFound, InvalidParameter, InvalidState, StandbyError
from standby.domain.preconditions import Operation
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import PointAssembler
from standby.engine.group_failover import GroupFailover
from standby.engine.group_replication import GroupReplication
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VMS = ("AAAAAAAA-0000-4000-8000-000000000001", "BBBBBBBB-0000-4000-8000-000000000002",
       "CCCCCCCC-0000-4000-8000-000000000003")
GROUP = "GROUP-1"
_C = CollectionReplicationState
_S = ReplicationState


def clock() -> datetime:
    return NOW


@dataclass
class FakeDrill:
    made: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fail: str | None = None

    async def create(self, vm_id: str, point_id: str | None, test_id: str | None = None) -> dict[str, str]:
        if vm_id == self.fail:
            raise FileNotFound("the point's image is gone", message_id="PointImageMissing")
        self.made.append(test_id or "")
        return {}

    async def remove(self, test_vm_id: str) -> dict[str, str]:
        self.removed.append(test_vm_id)
        return {}


@dataclass
class FakeFailover:
    """F's per-VM use cases: failover/revert/commit change the relationship state like the real ones."""

    db: Database
    guards: ReplicationUseCases
    drill: FakeDrill = field(default_factory=FakeDrill)
    fail: str | None = None
    calls: list[str] = field(default_factory=list)

    def _state(self, vm_id: str, state: ReplicationState) -> None:
        rel = self.db.relationships.get(vm_id, 0)
        self.db.relationships.update(replace(rel, state=state))

    async def initiate(self, vm_id: str, point_id: str | None, *, force: bool = False,
                       progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        self.calls.append(f"failover {vm_id[:1]} {point_id}")
        if vm_id == self.fail:
            raise FileNotFound("the recovery point image rp-0000000009.qcow2 is missing",
                               message_id="PointImageMissing")
        self._state(vm_id, _S.RECOVERED)
        return {}

    async def revert(self, vm_id: str, *, progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        self.calls.append(f"revert {vm_id[:1]}")
        self._state(vm_id, _S.REPLICATING)
        return {}

    async def commit(self, vm_id: str, *, progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        self.calls.append(f"commit {vm_id[:1]}")
        self._state(vm_id, _S.COMMITTED)
        return {}


def replica_db() -> Database:
    db = Database.memory()
    for number, vm_id in enumerate(VMS):
        db.vms.insert(VirtualMachine(vm_id, f"vm{number}", 128, 1, enabled_state=EnabledState.DISABLED,
                                     replication_mode=ReplicationMode.REPLICA, created_at=NOW))
        db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY, _S.REPLICATING,
                                             last_replication_time=NOW))
    db.collections.insert(Collection(GROUP, "web tier", VMS, ReplicationMode.REPLICA, _C.REPLICATING))
    for cut in (1, 2):
        members = []
        for vm_id in VMS:
            point_id = f"{vm_id[:1]}-{cut}"
            db.recovery_points.insert(RecoveryPoint(point_id, vm_id, cut, NOW,
                                                    VirtualSystemType.REPLICA_STANDARD,
                                                    collection_point_id=f"CUT-{cut}"))
            members.append((vm_id, point_id))
        db.collection_points.insert(CollectionRecoveryPoint(
            f"CUT-{cut}", GROUP, NOW, ConsistencyLevel.GROUP_CRASH_CONSISTENT, tuple(members), 2.0))
    return db


def run_job(jobs: JobManager, job: Job) -> Job:
    return jobs.get(job.job_id)


def with_jobs(db: Database, body: Callable[[JobManager], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        jobs = JobManager(db, clock, loop=asyncio.get_running_loop())
        return await body(jobs)

    return asyncio.run(main())


def group_failover(db: Database, jobs: JobManager, fake: FakeFailover) -> GroupFailover:
    return GroupFailover(db, clock, jobs, CollectionUseCases(db, clock), failover=fake,
                         assembler=PointAssembler(db, clock))


def states(db: Database) -> list[ReplicationState]:
    return [db.relationships.get(vm, 0).state for vm in VMS]


def test_collection_failover_to_a_chosen_point_fails_every_member_over_to_its_point() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> Job:
        job = group_failover(db, jobs, fake).submit_initiate(GROUP, "CUT-1")
        return await jobs.wait(job.job_id, 10)

    job = with_jobs(db, body)
    assert job.state is JobState.COMPLETED and job.job_type is JobType.INITIATE_FAILOVER
    assert fake.calls == [f"failover {vm[:1]} {vm[:1]}-1" for vm in VMS]
    assert states(db) == [_S.RECOVERED] * 3
    assert db.collections.get(GROUP).replication_state is _C.RECOVERED


def test_null_point_is_the_latest_complete_collection_point() -> None:
    db = replica_db()
    db.recovery_points.delete("B-2")  # retention merged one member's point of CUT-2: CUT-2 is incomplete
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> Job:
        return await jobs.wait(group_failover(db, jobs, fake).submit_initiate(GROUP, None).job_id, 10)

    assert with_jobs(db, body).state is JobState.COMPLETED
    assert fake.calls[0] == "failover A A-1"


def test_one_member_failing_rolls_the_others_back_and_the_job_names_it() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock), fail=VMS[2])

    async def body(jobs: JobManager) -> Job:
        return await jobs.wait(group_failover(db, jobs, fake).submit_initiate(GROUP, "CUT-2").job_id, 10)

    job = with_jobs(db, body)
    assert job.state is JobState.EXCEPTION
    assert job.error_code == 32779  # the member's own code (file not found)
    assert "vm2" in job.error_description and "rp-0000000009.qcow2 is missing" in job.error_description
    assert "reverted" in job.error_description
    assert fake.calls == ["failover A A-2", "failover B B-2", "failover C C-2", "revert B", "revert A"]
    assert states(db) == [_S.REPLICATING] * 3
    assert db.collections.get(GROUP).replication_state is _C.REPLICATING


def test_a_member_refused_by_its_own_precondition_stops_everything_before_any_change() -> None:
    db = replica_db()
    rel = db.relationships.get(VMS[1], 0)
    db.relationships.update(replace(rel, state=_S.READY_FOR_REPLICATION))  # its own row refuses (32775)
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> None:
        with pytest.raises(InvalidState, match="vm1"):
            group_failover(db, jobs, fake).submit_initiate(GROUP, None)

    with_jobs(db, body)
    assert fake.calls == [] and states(db) == [_S.REPLICATING, _S.READY_FOR_REPLICATION, _S.REPLICATING]


def test_a_running_member_refuses_by_the_collection_row() -> None:
    db = replica_db()
    for vm_id in VMS:
        db.vms.update(replace(db.vms.get(vm_id), enabled_state=EnabledState.ENABLED))
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> None:
        with pytest.raises(InvalidState, match="turned off"):
            group_failover(db, jobs, fake).submit_initiate(GROUP, None)

    with_jobs(db, body)


def test_an_unknown_collection_point_is_an_invalid_parameter() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> None:
        with pytest.raises(InvalidParameter):
            group_failover(db, jobs, fake).submit_initiate(GROUP, "CUT-9")

    with_jobs(db, body)


def test_revert_then_failover_again_then_commit() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> list[Job]:
        engine = group_failover(db, jobs, fake)
        done = [await jobs.wait(engine.submit_initiate(GROUP, "CUT-2").job_id, 10)]
        done.append(await jobs.wait(engine.submit_revert(GROUP).job_id, 10))
        assert db.collections.get(GROUP).replication_state is _C.REPLICATING
        done.append(await jobs.wait(engine.submit_initiate(GROUP, "CUT-1").job_id, 10))
        done.append(await jobs.wait(engine.submit_commit(GROUP).job_id, 10))
        return done

    jobs_done = with_jobs(db, body)
    assert [j.state for j in jobs_done] == [JobState.COMPLETED] * 4
    assert states(db) == [_S.COMMITTED] * 3
    assert db.collections.get(GROUP).replication_state is _C.COMMITTED
    assert fake.calls[-3:] == ["commit A", "commit B", "commit C"]


def test_test_collection_is_made_of_every_members_test_vm_and_reverted_whole() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock))

    async def body(jobs: JobManager) -> tuple[Job, str]:
        engine = group_failover(db, jobs, fake)
        job, test_id = engine.submit_test(GROUP, None)
        return await jobs.wait(job.job_id, 10), test_id

    job, test_id = with_jobs(db, body)
    assert job.state is JobState.COMPLETED
    test = db.collections.get(test_id)
    assert (test.name, test.replication_mode) == ("web tier - Test", ReplicationMode.TEST_REPLICA)
    assert test.member_vm_ids == tuple(fake.drill.made) and len(fake.drill.made) == 3

    for vm_id in test.member_vm_ids:  # the drill's test VMs, as the real one stores them
        db.vms.insert(VirtualMachine(vm_id, f"test-{vm_id[:4]}", 128, 1,
                                     replication_mode=ReplicationMode.TEST_REPLICA))

    async def revert(jobs: JobManager) -> Job:
        return await jobs.wait(group_failover(db, jobs, fake).submit_revert_test(GROUP).job_id, 10)

    assert with_jobs(db, revert).state is JobState.COMPLETED
    assert fake.drill.removed == list(test.member_vm_ids) and db.collections.find(test_id) is None


def test_a_failing_test_vm_removes_those_made() -> None:
    db = replica_db()
    fake = FakeFailover(db, ReplicationUseCases(db, clock), drill=FakeDrill(fail=VMS[1]))

    async def body(jobs: JobManager) -> Job:
        job, _ = group_failover(db, jobs, fake).submit_test(GROUP, None)
        return await jobs.wait(job.job_id, 10)

    assert with_jobs(db, body).state is JobState.EXCEPTION
    assert fake.drill.removed == fake.drill.made[:1] and len(db.collections.list()) == 1


# -- group replication on the primary: one job per member, rolled back on failure ---------------------------


@dataclass
class FakeMembers:
    """PrimaryReplication's submit_* as jobs that succeed, or fail for ``fail``."""

    db: Database
    jobs: JobManager
    fail: str | None = None
    calls: list[str] = field(default_factory=list)

    def _job(self, what: str, vm_id: str, change: Callable[[], None]) -> Job:
        async def work(handle: JobHandle) -> None:
            self.calls.append(f"{what} {vm_id[:1]}")
            if vm_id == self.fail:
                raise StandbyError("the replica host refused the VM", message_id="UnexpectedError", error="x")
            change()

        return self.jobs.submit(JobType.CREATE_REPLICATION_RELATIONSHIP, element_id=vm_id, description=what,
                                work=work)

    def submit_create(self, vm_id: str, settings: ReplicationSettings) -> Job:
        def change() -> None:
            self.db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY,
                                                      _S.READY_FOR_REPLICATION, settings=settings))
            self.db.vms.update(replace(self.db.vms.get(vm_id), replication_mode=ReplicationMode.PRIMARY))

        return self._job("create", vm_id, change)

    def submit_remove(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        def change() -> None:
            self.db.relationships.delete(vm_id, 0)
            self.db.vms.update(replace(self.db.vms.get(vm_id), replication_mode=ReplicationMode.NONE))

        return self._job("remove", vm_id, change)

    def submit_state_change(self, vm_id: str, requested: int,
                            index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        def change() -> None:
            rel = self.db.relationships.get(vm_id, 0)
            self.db.relationships.update(replace(rel, state=ReplicationState(requested)))

        return self._job(f"state {requested}", vm_id, change)


def primary_db() -> Database:
    db = Database.memory()
    for number, vm_id in enumerate(VMS):
        db.vms.insert(VirtualMachine(vm_id, f"vm{number}", 128, 1, created_at=NOW))
    db.collections.insert(Collection(GROUP, "web tier", VMS))
    return db


SETTINGS = ReplicationSettings("replica.example", 8443, interval_seconds=30, recovery_history=16)


def test_create_makes_every_member_relationship_and_stores_the_settings() -> None:
    db = primary_db()

    async def body(jobs: JobManager) -> Job:
        members = FakeMembers(db, jobs)
        engine = GroupReplication(db, clock, jobs, CollectionUseCases(db, clock), members)  # type: ignore[arg-type]
        return await jobs.wait(engine.submit_create(GROUP, SETTINGS, "web tier replication").job_id, 10)

    assert with_jobs(db, body).state is JobState.COMPLETED
    collection = db.collections.get(GROUP)
    assert (collection.replication_mode, collection.replication_state) == (ReplicationMode.PRIMARY,
                                                                           _C.READY_FOR_REPLICATION)
    assert db.collection_settings.find(GROUP) == ("web tier replication", SETTINGS)
    assert all(db.vms.get(vm).replication_mode is ReplicationMode.PRIMARY for vm in VMS)


def test_create_failing_on_one_member_removes_the_relationships_already_made() -> None:
    db = primary_db()
    calls: list[str] = []

    async def body(jobs: JobManager) -> Job:
        members = FakeMembers(db, jobs, fail=VMS[2], calls=calls)
        engine = GroupReplication(db, clock, jobs, CollectionUseCases(db, clock), members)  # type: ignore[arg-type]
        return await jobs.wait(engine.submit_create(GROUP, SETTINGS, "g").job_id, 10)

    job = with_jobs(db, body)
    assert job.state is JobState.EXCEPTION and "vm2" in job.error_description
    assert calls == ["create A", "create B", "create C", "remove B", "remove A"]
    assert all(db.vms.get(vm).replication_mode is ReplicationMode.NONE for vm in VMS)
    assert db.collections.get(GROUP).replication_state is _C.DISABLED


@pytest.mark.parametrize(("history", "name", "ok"), [(16, "g", True), (720, "g", True), (721, "g", False),
                                                      (4, "", False)])
def test_create_checks_the_collection_settings(history: int, name: str, ok: bool) -> None:
    db = primary_db()

    async def body(jobs: JobManager) -> None:
        engine = GroupReplication(db, clock, jobs, CollectionUseCases(db, clock), FakeMembers(db, jobs))  # type: ignore[arg-type]
        settings = replace(SETTINGS, recovery_history=history)
        if ok:
            await jobs.wait(engine.submit_create(GROUP, settings, name).job_id, 10)
        else:
            with pytest.raises(InvalidParameter):
                engine.submit_create(GROUP, settings, name)

    with_jobs(db, body)


def test_suspend_and_resume_every_member() -> None:
    db = primary_db()

    async def body(jobs: JobManager) -> list[CollectionReplicationState]:
        members = FakeMembers(db, jobs)
        engine = GroupReplication(db, clock, jobs, CollectionUseCases(db, clock), members)  # type: ignore[arg-type]
        await jobs.wait(engine.submit_create(GROUP, SETTINGS, "g").job_id, 10)
        for vm in VMS:
            rel = db.relationships.get(vm, 0)
            db.relationships.update(replace(rel, state=_S.REPLICATING))
        db.collections.update(replace(db.collections.get(GROUP), replication_state=_C.REPLICATING))
        from standby.engine.operations import CollectionUseCase

        seen = []
        for use_case in (CollectionUseCase.SUSPEND_REPLICATION, CollectionUseCase.RESUME_REPLICATION):
            job = await jobs.wait(engine.submit_state_change(use_case, GROUP).job_id, 10)
            assert job.state is JobState.COMPLETED, job.error_description
            seen.append(db.collections.get(GROUP).replication_state)
            assert all(db.relationships.get(vm, 0).state is _S(int(seen[-1])) for vm in VMS)
        return seen

    assert with_jobs(db, body) == [_C.SUSPENDED, _C.REPLICATING]


def test_guard_of_the_member_is_the_per_vm_table() -> None:
    db = replica_db()
    guards = ReplicationUseCases(db, clock)
    guards.guard(Operation.INITIATE_FAILOVER, VMS[0], point_id="A-1")
