"""Group replication on the primary (hyperv-api §8.1, issue 7 item 1): every collection method as one job on
the collection that runs the per-VM use case of each member (``PrimaryReplication``) and waits for it.

- CreateReplicationRelationship: the settings (``Msvm_CollectionReplicationSettingData``: ElementName
  required, RecoveryHistory 0-16 as Hyper-V, up to 720 as our extension) are checked, every member gets its
  own relationship to the same replica host; a member that fails rolls back the ones already made. Mode 1,
  state 1.
- StartReplication: initial replication of every member (each VM's own; the first group cycle after it makes
  the first collection point), then state 3 and the group scheduler takes over the members' cycles.
- Modify, Suspend (7), Resume (3), Resynchronize (members in 9, and 7 with IncludeSuspended), Cancel*,
  Remove (every member; the collection stays, mode 0 / state 0), statistics (from the group cycles).

A member's failure ends the job with the member's name and its own reason and code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from standby.domain.clock import Clock
from standby.domain.entities import Collection, Job, ReplicationSettings
from standby.domain.enums import (
    CollectionReplicationState,
    JobState,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import InvalidParameter, InvalidState, StandbyError
from standby.domain.groups import GroupStatistics, error_class, group_health, group_statistics
from standby.domain.settings import validate_replication_settings
from standby.engine.collections import CollectionUseCases
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.operations import CollectionUseCase
from standby.engine.statistics import monitoring_window
from standby.store.port import Store

_C = CollectionReplicationState
#: How long one member's job may take inside a collection job (initial replication of a big disk).
MEMBER_JOB_TIMEOUT = 24 * 3600.0


class MemberUseCases(Protocol):
    """The per-VM use cases a collection runs for each member (``engine.replication.PrimaryReplication``)."""

    def submit_create(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """CreateReplicationRelationship."""
        ...

    def submit_start(self, vm_id: str, initial_type: int, export_location: str | None,
                     start_time: datetime | None) -> Job:
        """StartReplication."""
        ...

    def submit_modify(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """ModifyReplicationSettings."""
        ...

    def submit_remove(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        """RemoveReplicationRelationship."""
        ...

    def submit_resynchronize(self, vm_id: str, start_time: datetime | None) -> Job:
        """Resynchronize."""
        ...

    def submit_state_change(self, vm_id: str, requested: int,
                            index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        """RequestReplicationStateChange."""
        ...


async def wait_member(jobs: JobManager, job: Job, vm_name: str, timeout: float = MEMBER_JOB_TIMEOUT) -> Job:
    """Wait for a member's job; a failed one is raised as its own error class, naming the member."""
    ended = await jobs.wait(job.job_id, timeout)
    if ended.state is JobState.COMPLETED:
        return ended
    if not ended.state.is_terminal:
        jobs.cancel(ended.job_id, True)
    reason = ended.error_description or f"its job ended in state {int(ended.state)}"
    cls = error_class(ended.error_code)
    raise cls(f"member {vm_name} failed: {reason}", message_id="GroupMemberFailed", vm=vm_name,
              reason=reason)


class GroupReplication:
    """The primary side's collection methods (see the module docstring)."""

    def __init__(self, db: Store, clock: Clock, jobs: JobManager, guards: CollectionUseCases,
                 members: MemberUseCases) -> None:
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._guards = guards
        self._members = members

    # -- create / modify / remove --------------------------------------------------------------------------

    def submit_create(self, collection_id: str, settings: ReplicationSettings, element_name: str) -> Job:
        """CreateReplicationRelationship (91) of a collection."""
        collection = self._guards.guard(CollectionUseCase.CREATE_REPLICATION_RELATIONSHIP, collection_id)
        name = _element_name(element_name)
        validate_replication_settings(settings, collection=True)
        vms = self._member_vms(collection)
        for vm in vms:
            if vm.replication_mode is not ReplicationMode.NONE:
                raise InvalidState(f"member {vm.name} already replicates (mode {int(vm.replication_mode)})",
                                   message_id="GroupMemberReplicates", vm=vm.name,
                                   mode=int(vm.replication_mode))

        async def work(handle: JobHandle) -> dict[str, str]:
            made: list[str] = []
            try:
                for position, vm in enumerate(vms):
                    await wait_member(self._jobs, self._members.submit_create(vm.vm_id, settings), vm.name)
                    made.append(vm.vm_id)
                    handle.progress(90 * (position + 1) // len(vms))
            except BaseException:
                await self._undo_created(made)
                raise
            with self._db.transaction():
                self._db.collection_settings.put(collection.collection_id, name, settings)
                self._set(collection.collection_id, mode=ReplicationMode.PRIMARY,
                          state=_C.READY_FOR_REPLICATION)
            return {"Members": str(len(vms))}

        return self._submit(JobType.CREATE_REPLICATION_RELATIONSHIP, collection, work)

    async def _undo_created(self, made: list[str]) -> None:
        for vm_id in reversed(made):
            with contextlib.suppress(StandbyError):
                await self._jobs.wait(self._members.submit_remove(vm_id).job_id, 600.0)

    def submit_modify(self, collection_id: str, settings: ReplicationSettings, element_name: str) -> Job:
        """ModifyReplicationSettings (92): every member's relationship, then the collection's settings."""
        collection = self._guards.guard(CollectionUseCase.MODIFY_REPLICATION_SETTINGS, collection_id)
        name = _element_name(element_name)
        validate_replication_settings(settings, collection=True)
        vms = self._member_vms(collection)

        async def work(handle: JobHandle) -> None:
            for vm in vms:
                await wait_member(self._jobs, self._members.submit_modify(vm.vm_id, settings), vm.name)
            self._db.collection_settings.put(collection.collection_id, name, settings)

        return self._submit(JobType.MODIFY_REPLICATION_RELATIONSHIP_SETTINGS, collection, work)

    def submit_remove(self, collection_id: str) -> Job:
        """RemoveReplicationRelationship (93): every member's relationship; the collection stays."""
        collection = self._guards.guard(CollectionUseCase.REMOVE_REPLICATION_RELATIONSHIP, collection_id)
        vms = self._member_vms(collection)

        async def work(handle: JobHandle) -> None:
            self._set(collection.collection_id, state=_C.PARTIALLY_DISABLED)
            for vm in vms:
                if self._db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY)) is not None:
                    await wait_member(self._jobs, self._members.submit_remove(vm.vm_id), vm.name)
            with self._db.transaction():
                self._db.collection_settings.delete(collection.collection_id)
                self._db.group_cycles.forget(collection.collection_id)
                self._set(collection.collection_id, mode=ReplicationMode.NONE, state=_C.DISABLED)

        return self._submit(JobType.REMOVE_REPLICATION_RELATIONSHIP, collection, work)

    # -- initial replication, state changes, resync ----------------------------------------------------------

    def submit_start(self, collection_id: str, initial_type: int, export_location: str | None,
                     start_time: datetime | None) -> Job:
        """StartReplication of every member; then Replicating (group cycles from then on)."""
        collection = self._guards.guard(CollectionUseCase.START_REPLICATION, collection_id)
        vms = self._member_vms(collection)
        # Each member's own checks (type, folder, start time) refuse at once, before any job starts.
        submitted: list[tuple[Any, Job]] = []
        self._set(collection.collection_id, state=_C.WAITING_TO_COMPLETE_INITIAL_REPLICATION)
        try:
            for vm in vms:
                submitted.append((vm, self._members.submit_start(vm.vm_id, initial_type, export_location,
                                                                 start_time)))
        except BaseException:
            self._set(collection.collection_id, state=_C.READY_FOR_REPLICATION)
            for _, job in submitted:
                self._jobs.cancel(job.job_id, True)
            raise

        async def work(handle: JobHandle) -> dict[str, str]:
            outcomes = await asyncio.gather(*(wait_member(self._jobs, job, vm.name) for vm, job in submitted),
                                            return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            if errors:
                started = len(outcomes) - len(errors)
                self._set(collection.collection_id,
                          state=_C.PARTIALLY_ENABLED if started else _C.READY_FOR_REPLICATION)
                raise errors[0]
            self._set(collection.collection_id, state=_C.REPLICATING)
            return {"Members": str(len(vms))}

        return self._submit(JobType.START_INBAND_INITIAL_REPLICATION, collection, work, cancellable=True)

    def submit_state_change(self, use_case: CollectionUseCase, collection_id: str) -> Job:
        """Suspend (7), Resume (3), CancelInitialReplication (1), CancelResynchronize (9) on every member."""
        collection = self._guards.guard(use_case, collection_id)
        requested, target = _STATE_CHANGES[use_case]
        vms = self._member_vms(collection)

        async def work(handle: JobHandle) -> dict[str, str]:
            for vm in vms:
                rel = self._db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY))
                if rel is None or rel.state is _MEMBER_TARGET.get(requested):
                    continue
                await wait_member(self._jobs, self._members.submit_state_change(vm.vm_id, requested), vm.name)
            self._set(collection.collection_id, state=target)
            return {"ReplicationState": str(int(target))}

        # Its own element: cancelling a resync or an initial replication must not wait for that job.
        return self._submit(JobType.REPLICATE_STATE_CHANGE, collection, work,
                            element=f"{collection.collection_id}:state")

    def submit_resynchronize(self, collection_id: str, start_time: datetime | None,
                             include_suspended: bool) -> Job:
        """Resynchronize (107): members waiting for a resync (and suspended ones with IncludeSuspended)."""
        collection = self._guards.guard(CollectionUseCase.RESYNCHRONIZE, collection_id)
        vms = self._member_vms(collection)
        wanted = {ReplicationState.WAITING_TO_START_RESYNCHRONIZATION}
        if include_suspended:
            wanted.add(ReplicationState.SUSPENDED)

        async def work(handle: JobHandle) -> dict[str, str]:
            self._set(collection.collection_id, state=_C.RESYNCHRONIZING)
            count = 0
            try:
                for vm in vms:
                    rel = self._db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY))
                    if rel is None or rel.state not in wanted:
                        continue
                    if rel.state is ReplicationState.SUSPENDED:  # resume first, then resync (hyperv-api §9.7)
                        await wait_member(self._jobs, self._members.submit_state_change(vm.vm_id, 3), vm.name)
                    await wait_member(self._jobs, self._members.submit_resynchronize(vm.vm_id, start_time),
                                      vm.name)
                    count += 1
            except BaseException:
                self._set(collection.collection_id, state=_C.WAITING_TO_START_RESYNCHRONIZATION)
                raise
            self._set(collection.collection_id, state=_C.REPLICATING)
            return {"Resynchronized": str(count)}

        return self._submit(JobType.RESYNCHRONIZING, collection, work, cancellable=True)

    # -- statistics ------------------------------------------------------------------------------------------

    def statistics(self, collection_id: str) -> tuple[GroupStatistics, list[str]]:
        """Msvm_CollectionReplicationStatistics (see ``collection_statistics``)."""
        return collection_statistics(self._db, self._clock, self._guards, collection_id)

    def reset_statistics(self, collection_id: str) -> None:
        """ResetReplicationStatistics (see ``reset_collection_statistics``)."""
        reset_collection_statistics(self._db, self._clock, self._guards, collection_id)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _member_vms(self, collection: Collection) -> list[Any]:
        if not collection.member_vm_ids:
            raise InvalidState(f"collection {collection.name} has no members", message_id="CollectionEmpty",
                               collection=collection.name)
        return [self._db.vms.get(vm_id) for vm_id in collection.member_vm_ids]

    def _set(self, collection_id: str, **changes: Any) -> Collection:
        return set_collection(self._db, collection_id, **changes)

    def _submit(self, job_type: JobType, collection: Collection,
                work: Callable[[JobHandle], Awaitable[dict[str, str] | None]], *,
                cancellable: bool = False, element: str | None = None) -> Job:
        label = job_type.name.replace("_", " ").capitalize()
        return self._jobs.submit(job_type, element_id=element or collection.collection_id,
                                 description=f"{label}: {collection.name}", work=work,
                                 cancellable=cancellable)


def collection_statistics(db: Store, clock: Clock, guards: CollectionUseCases,
                          collection_id: str) -> tuple[GroupStatistics, list[str]]:
    """Statistics of a collection's group cycles over the monitoring window (since the last reset), and
    its members' health issues (both sides of replication)."""
    collection = guards.guard(CollectionUseCase.GET_REPLICATION_STATISTICS, collection_id)
    now = clock()
    start, end = monitoring_window(db.service_settings.get(), now)
    reset = db.group_cycles.reset_at(collection.collection_id)
    if reset is not None and reset > start:
        start = reset
    records = db.group_cycles.list(collection.collection_id, since=start)
    healths, issues = [], []
    for vm_id in collection.member_vm_ids:
        rel = db.relationships.find(vm_id, int(RelationshipIndex.PRIMARY))
        if rel is None:
            continue
        healths.append(rel.health)
        if rel.health in (ReplicationHealth.WARNING, ReplicationHealth.CRITICAL):
            issues.append(f"{vm_id}: replication health {rel.health.name.lower()} (state {int(rel.state)})")
    tests = [db.test_failovers.last_time(vm) for vm in collection.member_vm_ids]
    last_test = max((t for t in tests if t is not None), default=None)
    stats = group_statistics(records, start, max(end, now), group_health(healths),
                             last_test_failover=last_test)
    return stats, issues


def reset_collection_statistics(db: Store, clock: Clock, guards: CollectionUseCases,
                                collection_id: str) -> None:
    """ResetReplicationStatistics of a collection: counting starts again now."""
    collection = guards.guard(CollectionUseCase.RESET_REPLICATION_STATISTICS, collection_id)
    db.group_cycles.reset(collection.collection_id, clock())


def set_collection(db: Store, collection_id: str, *, mode: ReplicationMode | None = None,
                   state: CollectionReplicationState | None = None, **changes: Any) -> Collection:
    """Change a stored collection (compare-and-swap, retried)."""
    from standby.store.errors import StaleWrite

    for _ in range(10):
        current = db.collections.get(collection_id)
        fields = dict(changes)
        if mode is not None:
            fields["replication_mode"] = mode
        if state is not None:
            fields["replication_state"] = state
        try:
            return db.collections.update(replace(current, **fields))
        except StaleWrite:
            continue
    raise StaleWrite("Collection", collection_id, 0)


def _element_name(name: str | None) -> str:
    clean = (name or "").strip()
    if not clean or len(clean) > 256:
        raise InvalidParameter("ElementName of the collection replication settings is required (1-256 "
                               "characters)", message_id="CollectionElementNameRequired")
    return clean


_STATE_CHANGES: dict[CollectionUseCase, tuple[int, CollectionReplicationState]] = {
    CollectionUseCase.SUSPEND_REPLICATION: (7, _C.SUSPENDED),
    CollectionUseCase.RESUME_REPLICATION: (3, _C.REPLICATING),
    CollectionUseCase.CANCEL_INITIAL_REPLICATION: (1, _C.READY_FOR_REPLICATION),
    CollectionUseCase.CANCEL_RESYNCHRONIZE: (9, _C.WAITING_TO_START_RESYNCHRONIZATION),
}
#: The member state a requested change leads to (members already there are skipped).
_MEMBER_TARGET = {7: ReplicationState.SUSPENDED, 3: ReplicationState.REPLICATING,
                  1: ReplicationState.READY_FOR_REPLICATION,
                  9: ReplicationState.WAITING_TO_START_RESYNCHRONIZATION}
