"""Collection failover on the replica side (hyperv-api §8.1, §9.10; issue 7 item 3).

``InitiateFailover(Collection, CollectionRecoveryPoint)`` fails every member over to its own point of that
collection point (NULL = the latest complete one), all or nothing: every member's precondition is checked
first (nothing changes if one is refused), then the members fail over one after the other with F's per-VM
use case; if one fails, the members already failed over are reverted and the job's error names the member
and its reason (with that member's code). Revert, Commit, TestReplicaCollection (a Test Replica collection
``"<name> - Test"`` of the members' test VMs, ``Msvm_ReplicaCollectionDependency``) and
RevertTestReplicaCollection work the same way on every member.

The planned-failover steps (InitiatePlannedFailover / RevertPlannedFailover on the primary,
PrepareForReverseReplication / ReverseReplicationRelationship on the replica) run the per-VM use cases of
planned failover and reverse replication on every member when the daemon has them (``planned`` and
``reverse``); without them they answer "not implemented yet" after their guard.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from standby.domain.clock import Clock
from standby.domain.entities import Collection, CollectionRecoveryPoint, Job, ReplicationSettings
from standby.domain.enums import (
    CollectionReplicationState,
    CollectionReplicationType,
    JobType,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import InvalidParameter, InvalidState, NotFound, StandbyError
from standby.domain.groups import error_class
from standby.domain.preconditions import Operation
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import PointAssembler
from standby.engine.group_replication import set_collection, wait_member
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.operations import CollectionUseCase, not_implemented
from standby.store.port import Store

log = logging.getLogger("standby.groups")
_C = CollectionReplicationState


class MemberFailover(Protocol):
    """F's per-VM failover (``engine.failover.FailoverUseCases``) as a collection uses it."""

    guards: Any
    drill: Any

    async def initiate(self, vm_id: str, point_id: str | None, *, force: bool = False,
                       progress: Callable[[int], None] = ...) -> dict[str, str]:
        """InitiateFailover of one VM (no guard)."""
        ...

    async def revert(self, vm_id: str, *, progress: Callable[[int], None] = ...) -> dict[str, str]:
        """RevertFailover of one VM."""
        ...

    async def commit(self, vm_id: str, *, progress: Callable[[int], None] = ...) -> dict[str, str]:
        """CommitFailover of one VM."""
        ...


class GroupFailover:
    """Failover, revert, commit and test of a replica collection (see the module docstring)."""

    def __init__(self, db: Store, clock: Clock, jobs: JobManager, guards: CollectionUseCases, *,
                 failover: MemberFailover, assembler: PointAssembler, planned: Any = None,
                 reverse: Any = None) -> None:
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._guards = guards
        self._failover = failover
        self._assembler = assembler
        self.planned = planned
        self.reverse = reverse

    # -- InitiateFailover ------------------------------------------------------------------------------------

    def choose_point(self, collection_id: str, point_id: str | None) -> CollectionRecoveryPoint:
        """The collection point named (or the latest complete one)."""
        points = self._assembler.points(collection_id)
        if point_id is None:
            if not points:
                raise InvalidState(f"collection {collection_id} has no complete collection recovery point "
                                   "yet", message_id="CollectionPointMissing", collection=collection_id)
            return points[-1]
        for point in points:
            if point.point_id.upper() == point_id.upper():
                return point
        raise InvalidParameter(f"{point_id} is not a complete recovery point of collection {collection_id}",
                               message_id="CollectionPointNotOfCollection", point=point_id,
                               collection=collection_id)

    def submit_initiate(self, collection_id: str, point_id: str | None, *, force: bool = False) -> Job:
        """InitiateFailover (97) of a collection, after every member's precondition check."""
        collection = self._guards.guard(CollectionUseCase.INITIATE_FAILOVER, collection_id, point_id=point_id)
        point = self.choose_point(collection.collection_id, point_id)
        for vm_id, rp_id in point.members:
            self._member_guard(Operation.INITIATE_FAILOVER, vm_id, point_id=rp_id)

        async def work(handle: JobHandle) -> dict[str, str]:
            return await self.initiate(collection.collection_id, point, force=force, progress=handle.progress)

        return self._submit(JobType.INITIATE_FAILOVER, collection, work)

    async def initiate(self, collection_id: str, point: CollectionRecoveryPoint, *, force: bool = False,
                       progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        """Fail every member over to its point of ``point``; all or nothing."""
        before = self._db.collections.get(collection_id).replication_state
        set_collection(self._db, collection_id, state=_C.FAILOVER_INITIATED)
        done: list[str] = []
        try:
            for position, (vm_id, rp_id) in enumerate(point.members):
                await self._member(vm_id, self._failover.initiate(vm_id, rp_id, force=force))
                done.append(vm_id)
                progress(10 + 80 * (position + 1) // len(point.members))
        except BaseException as exc:
            await self._roll_back(done)
            set_collection(self._db, collection_id, state=before)
            if isinstance(exc, StandbyError) and done:
                raise type(exc)(f"{exc}; the members already failed over were reverted",
                                message_id="GroupFailoverRolledBack", reason=str(exc)) from exc
            raise
        planned = all(self._relationship_type(vm) == 2 for vm, _ in point.members)
        set_collection(self._db, collection_id, state=_C.RECOVERED,
                       failed_over_type=CollectionReplicationType.PLANNED if planned
                       else CollectionReplicationType.REGULAR)
        return {"CollectionRecoveryPoint": point.point_id, "Members": str(len(point.members))}

    async def _roll_back(self, done: list[str]) -> None:
        for vm_id in reversed(done):
            try:
                await self._failover.revert(vm_id)
            except StandbyError as exc:  # keep going: every other member must still go back
                log.error("rolling back the failover of %s failed: %s", vm_id, exc)

    def _relationship_state(self, vm_id: str) -> ReplicationState | None:
        rel = self._db.relationships.find(vm_id, 0)
        return rel.state if rel is not None else None

    def _relationship_type(self, vm_id: str) -> int:
        rel = self._db.relationships.find(vm_id, 0)
        return int(rel.failed_over_type) if rel is not None else 0

    # -- Revert / Commit -------------------------------------------------------------------------------------

    def submit_revert(self, collection_id: str) -> Job:
        """RevertFailover (98): every failed-over member goes back; the collection replicates again."""
        collection = self._guards.guard(CollectionUseCase.REVERT_FAILOVER, collection_id)
        members = self._failed_over(collection)

        async def work(handle: JobHandle) -> dict[str, str]:
            for vm_id in members:
                await self._member(vm_id, self._failover.revert(vm_id))
            set_collection(self._db, collection.collection_id, state=_C.REPLICATING,
                           failed_over_type=CollectionReplicationType.NONE)
            return {"Members": str(len(members))}

        return self._submit(JobType.REVERT_FAILOVER, collection, work)

    def submit_commit(self, collection_id: str) -> Job:
        """CommitFailover (99): every member keeps its failover point; the collection is Committed."""
        collection = self._guards.guard(CollectionUseCase.COMMIT_FAILOVER, collection_id)
        members = self._failed_over(collection)
        for vm_id in members:
            self._member_guard(Operation.COMMIT_FAILOVER, vm_id)

        async def work(handle: JobHandle) -> dict[str, str]:
            for vm_id in members:
                await self._member(vm_id, self._failover.commit(vm_id))
            set_collection(self._db, collection.collection_id, state=_C.COMMITTED)
            return {"Members": str(len(members))}

        return self._submit(JobType.COMMIT_FAILOVER, collection, work)

    def _failed_over(self, collection: Collection) -> list[str]:
        failed = (ReplicationState.RECOVERED, ReplicationState.FAILOVER_IN_PROGRESS)
        return [vm for vm in collection.member_vm_ids
                if (rel := self._db.relationships.find(vm, 0)) is not None and rel.state in failed]

    # -- test failover ---------------------------------------------------------------------------------------

    def test_collection_of(self, collection: Collection) -> Collection | None:
        """The Test Replica collection made from ``collection``, if any."""
        wanted = f"{collection.name} - Test"
        found = [c for c in self._db.collections.list()
                 if c.name == wanted and c.replication_mode is ReplicationMode.TEST_REPLICA]
        return found[0] if found else None

    def submit_test(self, collection_id: str, point_id: str | None) -> tuple[Job, str]:
        """TestReplicaCollection (102): a test VM per member from the point; returns the job and the test
        collection's id."""
        collection = self._guards.guard(CollectionUseCase.TEST_REPLICA_COLLECTION, collection_id,
                                        point_id=point_id)
        point = self.choose_point(collection.collection_id, point_id)
        for vm_id, rp_id in point.members:
            self._member_guard(Operation.TEST_REPLICA_SYSTEM, vm_id, point_id=rp_id)
        test_id = str(uuid.uuid4()).upper()

        async def work(handle: JobHandle) -> dict[str, str]:
            made: list[str] = []
            try:
                for vm_id, rp_id in point.members:
                    made_id = str(uuid.uuid4()).upper()
                    await self._member(vm_id, self._failover.drill.create(vm_id, rp_id, made_id))
                    made.append(made_id)
            except BaseException:
                for test_vm in made:
                    with contextlib.suppress(StandbyError):
                        await self._failover.drill.remove(test_vm)
                raise
            self._db.collections.insert(Collection(test_id, f"{collection.name} - Test", tuple(made),
                                                   ReplicationMode.TEST_REPLICA,
                                                   CollectionReplicationState.TEST_FAILOVER_INITIATED))
            return {"ResultingCollection": test_id}

        return self._submit(JobType.INITIATE_TEST_REPLICA, collection, work), test_id

    def submit_revert_test(self, collection_id: str) -> Job:
        """RevertTestReplicaCollection (103): the test VMs and the test collection go."""
        collection = self._guards.guard(CollectionUseCase.REVERT_TEST_REPLICA_COLLECTION, collection_id)
        test = self.test_collection_of(collection)
        if test is None:
            raise NotFound(f"collection {collection.name} has no test collection",
                           message_id="ObjectNotFound", kind="Msvm_VirtualSystemCollection",
                           key=f"{collection.name} - Test")

        async def work(handle: JobHandle) -> dict[str, str]:
            for test_vm in test.member_vm_ids:
                if self._db.vms.find(test_vm) is not None:
                    await self._member(test_vm, self._failover.drill.remove(test_vm))
            self._db.collections.delete(test.collection_id)
            return {"Removed": str(len(test.member_vm_ids))}

        return self._submit(JobType.REMOVE_TEST_REPLICA, collection, work)

    # -- planned failover and reverse replication ------------------------------------------------------------

    def submit_planned(self, use_case: CollectionUseCase, collection_id: str,
                       settings: ReplicationSettings | None = None) -> Job:
        """InitiatePlannedFailover / RevertPlannedFailover / PrepareForReverseReplication /
        ReverseReplicationRelationship on every member, with the per-VM use cases when the daemon has them."""
        collection = self._guards.guard(use_case, collection_id)
        step = self._planned_step(use_case, settings)
        if step is None:
            raise not_implemented(use_case)
        target = _PLANNED_TARGETS[use_case]

        async def work(handle: JobHandle) -> dict[str, str]:
            for vm_id in collection.member_vm_ids:
                vm = self._db.vms.get(vm_id)
                outcome = step(vm_id)
                if isinstance(outcome, Job):
                    await wait_member(self._jobs, outcome, vm.name)
                else:
                    await self._member(vm_id, outcome)
            changes: dict[str, Any] = {"state": target}
            if use_case is CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP:
                changes["mode"] = ReplicationMode.PRIMARY
            set_collection(self._db, collection.collection_id, **changes)
            return {"ReplicationState": str(int(target))}

        return self._submit(_PLANNED_JOBS[use_case], collection, work)

    def _planned_step(self, use_case: CollectionUseCase,
                      settings: ReplicationSettings | None) -> Callable[[str], Any] | None:
        planned, reverse = self.planned, self.reverse
        if use_case is CollectionUseCase.INITIATE_PLANNED_FAILOVER and hasattr(planned, "submit_prepare"):
            prepare: Callable[[str], Any] = planned.submit_prepare
            return prepare
        if use_case is CollectionUseCase.REVERT_PLANNED_FAILOVER:
            return self._failover.revert
        if use_case is CollectionUseCase.PREPARE_FOR_REVERSE_REPLICATION:
            # Reverse replication of a collection needs it Committed (hyperv-api §8.1): commit members still
            # in 5.
            return lambda vm_id: self._failover.commit(vm_id) if self._relationship_state(vm_id) \
                is ReplicationState.RECOVERED else _noop()
        if use_case is CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP and hasattr(reverse, "submit") \
                and settings is not None:
            return lambda vm_id: reverse.submit(vm_id, settings)
        return None

    # -- helpers ---------------------------------------------------------------------------------------------

    def _member_guard(self, operation: Operation, vm_id: str, **kwargs: Any) -> None:
        vm = self._db.vms.find(vm_id)
        name = vm.name if vm is not None else vm_id
        try:
            self._failover.guards.guard(operation, vm_id, **kwargs)
        except StandbyError as exc:
            raise type(exc)(f"member {name}: {exc}", message_id="GroupMemberRefused", vm=name,
                            reason=str(exc)) from exc

    async def _member(self, vm_id: str, step: Awaitable[Any]) -> Any:
        """Await one member's step; its failure names the member and keeps its code."""
        try:
            return await step
        except StandbyError as exc:
            vm = self._db.vms.find(vm_id)
            name = vm.name if vm is not None else vm_id
            raise error_class(int(exc.code))(f"member {name} failed: {exc}", message_id="GroupMemberFailed",
                                             vm=name, reason=str(exc)) from exc

    def _submit(self, job_type: JobType, collection: Collection,
                work: Callable[[JobHandle], Awaitable[dict[str, str] | None]]) -> Job:
        label = job_type.name.replace("_", " ").capitalize()
        return self._jobs.submit(job_type, element_id=collection.collection_id,
                                 description=f"{label}: {collection.name}", work=work)


async def _noop() -> dict[str, str]:
    return {}


_PLANNED_TARGETS = {
    CollectionUseCase.INITIATE_PLANNED_FAILOVER: _C.PLANNED_FAILOVER_INITIATED,
    CollectionUseCase.REVERT_PLANNED_FAILOVER: _C.REPLICATING,
    CollectionUseCase.PREPARE_FOR_REVERSE_REPLICATION: _C.COMMITTED,
    CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP: _C.REPLICATING,
}
_PLANNED_JOBS = {
    CollectionUseCase.INITIATE_PLANNED_FAILOVER: JobType.REPLICATE_STATE_CHANGE,
    CollectionUseCase.REVERT_PLANNED_FAILOVER: JobType.REVERT_FAILOVER,
    CollectionUseCase.PREPARE_FOR_REVERSE_REPLICATION: JobType.COMMIT_FAILOVER,
    CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP: JobType.REVERSE_REPLICATION,
}
