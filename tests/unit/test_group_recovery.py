"""Start-up recovery of collections: the state a collection's members stand for, and the settling of
collections a stopped daemon left mid-operation (an interrupted collection failover is undone for every
member it had already moved; partial states are derived again; a running job's collection is left alone)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from standby.domain.entities import Collection, Job, Relationship, VirtualMachine
from standby.domain.enums import (
    CollectionReplicationState,
    CollectionReplicationType,
    EnabledState,
    JobState,
    JobType,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import FileNotFound
from standby.engine.group_recovery import collection_state, settle_collections
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
class RevertingFailover:
    """The one call recovery makes: revert a failed-over member (its relationship back to Replicating)."""

    db: Database
    fail: str | None = None
    reverted: list[str] = field(default_factory=list)

    async def revert(self, vm_id: str) -> dict[str, str]:
        if vm_id == self.fail:
            raise FileNotFound("the point's image is gone", message_id="PointImageMissing")
        rel = self.db.relationships.get(vm_id, 0)
        self.db.relationships.update(replace(rel, state=_S.REPLICATING))
        self.reverted.append(vm_id)
        return {}


def _store(states: tuple[ReplicationState | None, ...], state: CollectionReplicationState) -> Database:
    db = Database.memory()
    for vm_id, member in zip(VMS, states, strict=True):
        db.vms.insert(VirtualMachine(vm_id, f"vm-{vm_id[:1]}", 128, 1, enabled_state=EnabledState.DISABLED,
                                     replication_mode=ReplicationMode.REPLICA, created_at=NOW))
        if member is not None:
            db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY, member))
    db.collections.insert(Collection(GROUP, "app", VMS, ReplicationMode.REPLICA, state,
                                     CollectionReplicationType.REGULAR))
    return db


def _member_states(db: Database) -> list[ReplicationState]:
    return [db.relationships.get(vm_id, 0).state for vm_id in VMS]


@pytest.mark.parametrize(("members", "expected"), [
    ((_S.REPLICATING,) * 3, _C.REPLICATING),
    ((_S.RECOVERED,) * 3, _C.RECOVERED),
    ((_S.SYNCED_REPLICATION_COMPLETE,) * 3, _C.PLANNED_FAILOVER_INITIATED),
    ((_S.SUSPENDED,) * 3, _C.SUSPENDED),
    ((None, None, None), _C.DISABLED),
    ((_S.REPLICATING, None, _S.REPLICATING), _C.PARTIALLY_ENABLED),
    ((_S.REPLICATING, _S.RECOVERED, _S.REPLICATING), _C.PARTIALLY_RECOVERED),
    ((_S.REPLICATING, _S.SUSPENDED, _S.REPLICATING), _C.PARTIALLY_ENABLED),
    ((_S.CRITICAL, _S.SUSPENDED, _S.CRITICAL), _C.CRITICAL),
    ((_S.FAILOVER_IN_PROGRESS,) * 3, _C.CRITICAL),
    ((), _C.DISABLED),
])
def test_collection_state_from_members(members: tuple[ReplicationState | None, ...],
                                       expected: CollectionReplicationState) -> None:
    assert collection_state(members) is expected


def test_interrupted_collection_failover_reverts_every_member_it_had_moved() -> None:
    db = _store((_S.RECOVERED, _S.RECOVERED, _S.REPLICATING), _C.FAILOVER_INITIATED)
    failover = RevertingFailover(db)
    assert asyncio.run(settle_collections(db, clock, failover)) == [GROUP]
    assert failover.reverted == list(VMS[:2])
    assert _member_states(db) == [_S.REPLICATING] * 3
    collection = db.collections.get(GROUP)
    assert collection.replication_state is _C.REPLICATING
    assert collection.failed_over_type is CollectionReplicationType.NONE
    (event,) = [e for e in db.events.list() if e.kind == "collection.recovered"]
    assert event.args["before"] == 4 and event.args["state"] == 3 and event.args["reverted"] == 2


def test_a_member_that_cannot_be_reverted_leaves_the_collection_partially_recovered() -> None:
    db = _store((_S.RECOVERED, _S.RECOVERED, _S.REPLICATING), _C.FAILOVER_INITIATED)
    failover = RevertingFailover(db, fail=VMS[0])
    asyncio.run(settle_collections(db, clock, failover))
    assert failover.reverted == [VMS[1]]  # the failure did not stop the others
    assert db.collections.get(GROUP).replication_state is _C.PARTIALLY_RECOVERED


def test_interrupted_remove_is_disabled_when_every_member_lost_its_relationship() -> None:
    db = _store((None, None, None), _C.PARTIALLY_DISABLED)
    asyncio.run(settle_collections(db, clock, None))
    collection = db.collections.get(GROUP)
    assert (collection.replication_state, collection.replication_mode) == (_C.DISABLED, ReplicationMode.NONE)


def test_interrupted_remove_with_members_left_is_partially_enabled() -> None:
    db = _store((None, _S.REPLICATING, _S.REPLICATING), _C.PARTIALLY_DISABLED)
    asyncio.run(settle_collections(db, clock, None))
    assert db.collections.get(GROUP).replication_state is _C.PARTIALLY_ENABLED


def test_repurpose_and_partial_states_are_derived_again() -> None:
    for state in (_C.REPURPOSE_INITIATED, _C.PARTIALLY_ENABLED, _C.PARTIALLY_RECOVERED):
        db = _store((_S.REPLICATING,) * 3, state)
        assert asyncio.run(settle_collections(db, clock, None)) == [GROUP]
        assert db.collections.get(GROUP).replication_state is _C.REPLICATING


def test_settled_collections_and_running_jobs_are_left_alone() -> None:
    db = _store((_S.RECOVERED,) * 3, _C.RECOVERED)
    failover = RevertingFailover(db)
    assert asyncio.run(settle_collections(db, clock, failover)) == []
    assert _member_states(db) == [_S.RECOVERED] * 3 and failover.reverted == []

    busy = _store((_S.RECOVERED, _S.REPLICATING, _S.REPLICATING), _C.FAILOVER_INITIATED)
    busy.jobs.insert(Job("JOB-1", JobType.INITIATE_FAILOVER, JobState.RUNNING, element_id=GROUP,
                         submitted_at=NOW))
    assert asyncio.run(settle_collections(busy, clock, RevertingFailover(busy))) == []
    assert busy.collections.get(GROUP).replication_state is _C.FAILOVER_INITIATED
