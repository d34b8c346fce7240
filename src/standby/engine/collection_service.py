"""One engine entry per Msvm_CollectionReplicationService method (docs/hyperv-api.md §8.1).

The sending side (create, start, modify, suspend, resume, resync, cancel, remove) runs in
``GroupReplication``, the receiving side (failover, revert, commit, test, planned steps) in
``GroupFailover``; statistics work on either side. The CIM provider and the REST routes call these methods
only, so both answer alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from standby.domain.clock import Clock
from standby.domain.entities import CollectionRecoveryPoint, ReplicationSettings
from standby.domain.errors import InvalidParameter, NotSupported
from standby.domain.groups import GroupStatistics
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import PointAssembler
from standby.engine.group_failover import GroupFailover
from standby.engine.group_replication import (
    GroupReplication,
    collection_statistics,
    reset_collection_statistics,
)
from standby.engine.operations import CollectionUseCase
from standby.engine.service import DONE, InitialReplication, Outcome, started
from standby.store.port import Store

_U = CollectionUseCase
#: RequestReplicationStateChange-like methods of the collection service.
STATE_CHANGES = frozenset({_U.SUSPEND_REPLICATION, _U.RESUME_REPLICATION, _U.CANCEL_INITIAL_REPLICATION,
                           _U.CANCEL_RESYNCHRONIZE})
PLANNED_STEPS = frozenset({_U.INITIATE_PLANNED_FAILOVER, _U.REVERT_PLANNED_FAILOVER,
                           _U.PREPARE_FOR_REVERSE_REPLICATION, _U.REVERSE_REPLICATION_RELATIONSHIP})


@dataclass(frozen=True, slots=True)
class CollectionStatistics:
    """GetReplicationStatistics of a collection: the figures and the health issues (message texts)."""

    statistics: GroupStatistics
    issues: list[str]


@dataclass(eq=False)
class CollectionReplicationService:
    """Group replication and collection failover, one entry per Hyper-V method."""

    _db: Store
    _clock: Clock
    management: CollectionUseCases
    _replication: GroupReplication
    _failover: GroupFailover
    _assembler: PointAssembler

    def points(self, collection_id: str) -> list[CollectionRecoveryPoint]:
        """The collection's recovery points (those retention left whole)."""
        return self._assembler.points(collection_id)

    # -- the sending side ----------------------------------------------------------------------------------

    def create_relationship(self, collection_id: str, settings: ReplicationSettings,
                            element_name: str) -> Outcome:
        """CreateReplicationRelationship: every member replicates to one replica host."""
        return started(self._replication.submit_create(collection_id, settings, element_name))

    def modify_replication_settings(self, collection_id: str, settings: ReplicationSettings,
                                    element_name: str) -> Outcome:
        """ModifyReplicationSettings of every member."""
        return started(self._replication.submit_modify(collection_id, settings, element_name))

    def start_replication(self, collection_id: str, request: InitialReplication) -> Outcome:
        """StartReplication: initial replication of every member, one group point at its end."""
        return started(self._replication.submit_start(collection_id, request.kind, request.export_location,
                                                      request.start_time))

    def change_state(self, use_case: CollectionUseCase, collection_id: str) -> Outcome:
        """SuspendReplication, ResumeReplication, CancelInitialReplication or CancelResynchronize."""
        if use_case not in STATE_CHANGES:
            raise InvalidParameter(f"{use_case.value} is not a state change", message_id="GroupUnknownAction",
                                   action=use_case.value)
        return started(self._replication.submit_state_change(use_case, collection_id))

    def resynchronize(self, collection_id: str, start_time: datetime | None = None, *,
                      include_suspended: bool = False) -> Outcome:
        """Resynchronize every member (suspended ones too when asked)."""
        return started(self._replication.submit_resynchronize(collection_id, start_time, include_suspended))

    def remove_relationship(self, collection_id: str) -> Outcome:
        """RemoveReplicationRelationship of every member."""
        return started(self._replication.submit_remove(collection_id))

    def cancel_update_disk_set(self, collection_id: str) -> Outcome:
        """CancelUpdateDiskSet: standby never changes a replicating collection's disk set, so there is no
        update to cancel; refused after the precondition check."""
        self.management.guard(_U.CANCEL_UPDATE_DISK_SET, collection_id)
        raise NotSupported("standby does not update a collection's disk set while it replicates",
                           message_id="DiskSetUpdateUnsupported")

    # -- the receiving side --------------------------------------------------------------------------------

    def initiate_failover(self, collection_id: str, point_id: str | None = None, *,
                          force: bool = False) -> Outcome:
        """InitiateFailover of every member to one collection recovery point (None = the latest)."""
        return started(self._failover.submit_initiate(collection_id, point_id, force=force))

    def revert_failover(self, collection_id: str) -> Outcome:
        """RevertFailover of every member."""
        return started(self._failover.submit_revert(collection_id))

    def commit_failover(self, collection_id: str) -> Outcome:
        """CommitFailover of every member."""
        return started(self._failover.submit_commit(collection_id))

    def test_replica_collection(self, collection_id: str, point_id: str | None = None) -> Outcome:
        """TestReplicaCollection: a test collection of test VMs; ``resulting_system`` is its id."""
        job, test_id = self._failover.submit_test(collection_id, point_id)
        return started(job, test_id)

    def revert_test_replica_collection(self, collection_id: str) -> Outcome:
        """RevertTestReplicaCollection: remove the test collection and its VMs."""
        return started(self._failover.submit_revert_test(collection_id))

    def planned_step(self, use_case: CollectionUseCase, collection_id: str,
                     settings: ReplicationSettings | None = None) -> Outcome:
        """InitiatePlannedFailover, RevertPlannedFailover, PrepareForReverseReplication or
        ReverseReplicationRelationship (which takes the reversed settings)."""
        if use_case not in PLANNED_STEPS:
            raise InvalidParameter(f"{use_case.value} is not a planned step", message_id="GroupUnknownAction",
                                   action=use_case.value)
        return started(self._failover.submit_planned(use_case, collection_id, settings))

    # -- either side -------------------------------------------------------------------------------------

    def statistics(self, collection_id: str) -> CollectionStatistics:
        """GetReplicationStatistics of the collection."""
        figures, issues = collection_statistics(self._db, self._clock, self.management, collection_id)
        return CollectionStatistics(figures, list(issues))

    def reset_statistics(self, collection_id: str) -> Outcome:
        """ResetReplicationStatistics: a new monitoring window for every member."""
        reset_collection_statistics(self._db, self._clock, self.management, collection_id)
        return DONE

