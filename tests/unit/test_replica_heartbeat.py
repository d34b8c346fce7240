"""The replica side of an idle cycle (``ReplicaUseCases.heartbeat``) over an in-memory store: the head is
checked, LastReplicationTime and health move in one update, no point is added; out of sequence, suspended,
failed over and unauthorized callers get the answers a log would."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    RecoveryPoint,
    Relationship,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import AccessDenied, Unavailable
from standby.domain.replica import OutOfSequence, ReplicaSite
from standby.engine.apply import ReplicaApplier
from standby.engine.replica import ReplicaUseCases
from standby.store.sqlite import Database

VM_ID = "6E0D3C2A-1111-4222-8333-944455550001"
PRIMARY = "hv-a.test"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
P = RelationshipIndex.PRIMARY


def _replica(state: ReplicationState = ReplicationState.REPLICATING, head: int | None = 7) -> tuple[
        Database, ReplicaUseCases]:
    db = Database.memory()
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry(PRIMARY, "lab", "/srv/replicas"))
    db.vms.insert(VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "", 1 << 20),),
                                 replication_mode=ReplicationMode.REPLICA, created_at=NOW))
    db.replicas.insert(ReplicaSite(VM_ID, PRIMARY, "lab", "/srv/replicas/web", NOW))
    db.relationships.insert(Relationship(VM_ID, P, state, health=ReplicationHealth.WARNING,
                                         last_replication_time=NOW - timedelta(minutes=5)))
    if head is not None:
        db.recovery_points.insert(RecoveryPoint("P7", VM_ID, head, NOW - timedelta(minutes=5),
                                                VirtualSystemType.REPLICA_STANDARD))
    clock = lambda: NOW  # noqa: E731 - a fixed clock
    return db, ReplicaUseCases(db, clock, ReplicaApplier(db, clock))


def test_a_heartbeat_for_the_head_marks_it_current_without_a_point() -> None:
    db, replica = _replica()
    assert asyncio.run(replica.heartbeat(PRIMARY, VM_ID.lower(), 7)) == 7
    rel = db.relationships.get(VM_ID, int(P))
    assert (rel.last_replication_time, rel.health, rel.state, rel.sequence) == (
        NOW, ReplicationHealth.OK, ReplicationState.REPLICATING, 0)
    assert [p.sequence for p in db.recovery_points.list(vm_id=VM_ID)] == [7]


@pytest.mark.parametrize(("head", "sequence"), [(7, 6), (7, 8), (None, 1)])
def test_a_heartbeat_not_for_the_head_is_out_of_sequence(head: int | None, sequence: int) -> None:
    db, replica = _replica(head=head)
    with pytest.raises(OutOfSequence) as info:
        asyncio.run(replica.heartbeat(PRIMARY, VM_ID, sequence))
    assert info.value.head_sequence == (head or 0) and info.value.message_id == "LogOutOfSequence"
    assert db.relationships.get(VM_ID, int(P)).last_replication_time == NOW - timedelta(minutes=5)


def test_a_suspended_replica_refuses_and_a_failed_over_one_only_reports_its_head() -> None:
    _, suspended = _replica(ReplicationState.SUSPENDED)
    with pytest.raises(Unavailable):
        asyncio.run(suspended.heartbeat(PRIMARY, VM_ID, 7))
    db, failed_over = _replica(ReplicationState.RECOVERED)
    assert asyncio.run(failed_over.heartbeat(PRIMARY, VM_ID, 3)) == 7  # logs are kept aside then: no check
    rel = db.relationships.get(VM_ID, int(P))
    assert (rel.last_replication_time, rel.health) == (NOW - timedelta(minutes=5), ReplicationHealth.WARNING)


def test_another_host_may_not_send_heartbeats() -> None:
    _, replica = _replica()
    with pytest.raises(AccessDenied):
        asyncio.run(replica.heartbeat("hv-x.test", VM_ID, 7))


def test_a_concurrent_write_is_retried_not_lost() -> None:
    db, replica = _replica()
    real_get = db.relationships.get
    raced: list[Relationship] = []
    earlier = NOW - timedelta(hours=1)

    def get_then_someone_writes(*key: object) -> Relationship:
        found = real_get(*key)
        if not raced:  # another writer updates the row between our read and our update, once
            raced.append(db.relationships.update(replace(found, last_apply_time=earlier)))
        return found

    db.relationships.get = get_then_someone_writes  # type: ignore[method-assign]
    asyncio.run(replica.heartbeat(PRIMARY, VM_ID, 7))
    rel = real_get(VM_ID, int(P))
    assert raced and (rel.last_replication_time, rel.last_apply_time) == (NOW, earlier)
