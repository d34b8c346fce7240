"""Collection (VM group) use cases: management (hyperv-api §8.7) and group replication (§8.1).

Management works on stored data: define, add/remove members, rename, destroy. ``guard`` is the precondition
table's verdict (collection rows of ``domain.preconditions``) for a group replication use case; the use
cases themselves live in ``group_replication.py`` (primary), ``group_failover.py`` (replica) and
``group_cycle.py`` (group-consistent cuts), and surfaces reach them through ``collection_service.py``.

Facts for a collection: mode and state are the collection's; ``vm_state`` is Disabled only when every
member is off; ``replication_received`` means a group recovery point exists; ``test_system_exists`` means a
Test Replica collection named ``"<name> - Test"`` exists; ``point_valid`` means the named group point belongs
to the collection (or, when none is named, that it has one).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from standby.domain.clock import Clock
from standby.domain.entities import Collection
from standby.domain.enums import (
    CollectionReplicationState,
    CollectionType,
    EnabledState,
    ReplicationMode,
)
from standby.domain.errors import InUse, InvalidParameter, InvalidState, NotSupported
from standby.domain.preconditions import Operation, PreconditionFacts, require
from standby.engine.operations import CollectionUseCase
from standby.store.port import Store

_MAX_NAME = 256

#: Group replication use case → the precondition row that guards it.
GUARDS: dict[CollectionUseCase, Operation] = {
    CollectionUseCase.CREATE_REPLICATION_RELATIONSHIP: Operation.COLLECTION_CREATE_RELATIONSHIP,
    CollectionUseCase.START_REPLICATION: Operation.COLLECTION_START_REPLICATION,
    CollectionUseCase.MODIFY_REPLICATION_SETTINGS: Operation.COLLECTION_MODIFY_REPLICATION_SETTINGS,
    CollectionUseCase.INITIATE_FAILOVER: Operation.COLLECTION_INITIATE_FAILOVER,
    CollectionUseCase.REVERT_FAILOVER: Operation.COLLECTION_REVERT_FAILOVER,
    CollectionUseCase.COMMIT_FAILOVER: Operation.COLLECTION_COMMIT_FAILOVER,
    CollectionUseCase.INITIATE_PLANNED_FAILOVER: Operation.COLLECTION_INITIATE_PLANNED_FAILOVER,
    CollectionUseCase.REVERT_PLANNED_FAILOVER: Operation.COLLECTION_REVERT_PLANNED_FAILOVER,
    CollectionUseCase.PREPARE_FOR_REVERSE_REPLICATION: Operation.COLLECTION_PREPARE_FOR_REVERSE_REPLICATION,
    CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP: Operation.COLLECTION_REVERSE_REPLICATION,
    CollectionUseCase.REMOVE_REPLICATION_RELATIONSHIP: Operation.COLLECTION_REMOVE_RELATIONSHIP,
    CollectionUseCase.SUSPEND_REPLICATION: Operation.COLLECTION_SUSPEND_REPLICATION,
    CollectionUseCase.RESUME_REPLICATION: Operation.COLLECTION_RESUME_REPLICATION,
    CollectionUseCase.RESYNCHRONIZE: Operation.COLLECTION_RESYNCHRONIZE,
    CollectionUseCase.TEST_REPLICA_COLLECTION: Operation.COLLECTION_TEST_REPLICA,
    CollectionUseCase.REVERT_TEST_REPLICA_COLLECTION: Operation.COLLECTION_REVERT_TEST_REPLICA,
    CollectionUseCase.CANCEL_INITIAL_REPLICATION: Operation.COLLECTION_CANCEL_INITIAL_REPLICATION,
    CollectionUseCase.CANCEL_RESYNCHRONIZE: Operation.COLLECTION_CANCEL_RESYNCHRONIZE,
    CollectionUseCase.CANCEL_UPDATE_DISK_SET: Operation.COLLECTION_CANCEL_UPDATE_DISK_SET,
    CollectionUseCase.GET_REPLICATION_STATISTICS: Operation.COLLECTION_GET_REPLICATION_STATISTICS,
    CollectionUseCase.RESET_REPLICATION_STATISTICS: Operation.COLLECTION_RESET_REPLICATION_STATISTICS,
}
_WITH_POINT = frozenset({Operation.COLLECTION_INITIATE_FAILOVER, Operation.COLLECTION_TEST_REPLICA})


class CollectionUseCases:
    """Collections: management on stored data, and the guards of group replication."""

    def __init__(self, db: Store, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # -- group replication ----------------------------------------------------------------------------------

    def facts(
        self, operation: Operation, collection_id: str, *, point_id: str | None = None
    ) -> PreconditionFacts:
        """The facts the precondition table judges a collection operation on."""
        collection = self._db.collections.get(collection_id)
        members = [self._db.vms.find(vm_id) for vm_id in collection.member_vm_ids]
        all_off = all(vm is None or vm.enabled_state == EnabledState.DISABLED for vm in members)
        points = self._db.collection_points.list(collection_id=collection_id)
        if operation in _WITH_POINT:
            point_valid = bool(points) if point_id is None else any(p.point_id == point_id for p in points)
        else:
            point_valid = True
        return PreconditionFacts(
            mode=collection.replication_mode,
            vm_state=EnabledState.DISABLED if all_off else EnabledState.ENABLED,
            replication_received=bool(points),
            initial_replication_complete=bool(points),
            test_system_exists=self._test_collection_exists(collection),
            job_running=self._db.jobs.active_on(collection_id) is not None,
            point_valid=point_valid,
            collection_state=collection.replication_state,
        )

    def guard(
        self, use_case: CollectionUseCase, collection_id: str, *, point_id: str | None = None
    ) -> Collection:
        """The precondition table's verdict for a group use case: the collection when it may run."""
        operation = GUARDS.get(use_case)
        if operation is None:
            raise ValueError(f"{use_case.value} is not a group replication use case")
        require(operation, self.facts(operation, collection_id, point_id=point_id))
        return self._db.collections.get(collection_id)

    def _test_collection_exists(self, collection: Collection) -> bool:
        wanted = f"{collection.name} - Test"
        return any(c.name == wanted and c.replication_mode == ReplicationMode.TEST_REPLICA
                   for c in self._db.collections.list())

    # -- management (hyperv-api §8.7) ------------------------------------------------------------------------

    def define(self, name: str | None, collection_id: str | None, kind: int | None) -> Collection:
        """Define a collection of VMs; ``collection_id`` None makes up a GUID."""
        if kind is not None and kind != CollectionType.VIRTUAL_SYSTEMS:
            if kind == CollectionType.COLLECTIONS:
                raise NotSupported("Collections of collections are not supported",
                                   message_id="CollectionOfCollectionsNotSupported")
            raise InvalidParameter(f"Type must be 0 or 1; got {kind}", message_id="InvalidCollectionType",
                                   value=kind)
        clean = _name(name)
        new_id = (collection_id or str(uuid.uuid4())).strip().upper()
        if not new_id or len(new_id) > _MAX_NAME:
            raise InvalidParameter("Id must be 1-256 characters", message_id="InvalidCollectionId")
        return self._db.collections.insert(Collection(new_id, clean))

    def add_member(self, collection_id: str, vm_id: str) -> Collection:
        """Add a VM; adding a member twice changes nothing."""
        collection = self._unlocked(collection_id)
        vm = self._db.vms.get(vm_id)
        if vm.vm_id in collection.member_vm_ids:
            return collection
        members = (*collection.member_vm_ids, vm.vm_id)
        return self._db.collections.update(replace(collection, member_vm_ids=members))

    def remove_member(self, collection_id: str, vm_id: str, *, missing_ok: bool = False) -> Collection:
        """Remove a VM; 32773 when it is not a member unless ``missing_ok`` (RemoveMemberById)."""
        collection = self._unlocked(collection_id)
        if vm_id.upper() not in {m.upper() for m in collection.member_vm_ids}:
            if missing_ok:
                return collection
            raise InvalidParameter(
                f"virtual machine {vm_id} is not a member of collection {collection_id}",
                message_id="NotACollectionMember", vm=vm_id, collection=collection_id)
        members = tuple(m for m in collection.member_vm_ids if m.upper() != vm_id.upper())
        return self._db.collections.update(replace(collection, member_vm_ids=members))

    def rename(self, collection_id: str, new_name: str | None) -> Collection:
        """Give a collection a new name."""
        collection = self._unlocked(collection_id)
        return self._db.collections.update(replace(collection, name=_name(new_name)))

    def destroy(self, collection_id: str) -> None:
        """Destroy a collection (its VMs stay); refused (32775) while it replicates."""
        collection = self._unlocked(collection_id)
        if collection.replication_state != CollectionReplicationState.DISABLED:
            raise InvalidState(
                f"collection {collection_id} replicates (state {int(collection.replication_state)}); "
                "remove its replication first",
                message_id="CollectionReplicating", collection=collection_id)
        self._db.collections.delete(collection.collection_id)

    def _unlocked(self, collection_id: str) -> Collection:
        collection = self._db.collections.get(collection_id)
        if self._db.jobs.active_on(collection.collection_id) is not None:
            raise InUse(f"another job is still running on collection {collection_id}",
                        message_id="PreconditionJobRunning")
        return collection


def _name(name: str | None) -> str:
    clean = (name or "").strip()
    if not clean or len(clean) > _MAX_NAME:
        raise InvalidParameter("Name must be 1-256 characters", message_id="InvalidCollectionName")
    return clean
