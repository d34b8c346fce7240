"""A member of a collection failed over as a whole takes no failover operation of its own (Hyper-V: the
collection is the unit): the domain rule as a table (every operation x every collection state and mode),
the refusal's code, catalog id and texts, the engine's per-VM ``submit_*`` guards, and one call through the
object manager (the collection's own RevertFailover still starts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from standby import i18n
from standby.domain.entities import Collection, Job, RecoveryPoint, Relationship, VirtualMachine
from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    ReturnCode,
    VirtualSystemType,
)
from standby.domain.errors import InvalidState, Unavailable
from standby.domain.groups import COLLECTION_FAILOVER_STATES, failover_unit, require_member_failover
from standby.domain.preconditions import Operation
from standby.engine.failover import FailoverUseCases
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.store.sqlite import Database
from tests.unit.test_cim_support import (
    CLUSTER,
    NOW,
    collection_path,
    make_world,
    put_collection,
    put_vm,
    service_path,
    vm_path,
)

_C = CollectionReplicationState
MEMBER_OPERATIONS = (Operation.INITIATE_FAILOVER, Operation.REVERT_FAILOVER, Operation.COMMIT_FAILOVER)
REFUSING = {_C.FAILOVER_INITIATED, _C.RECOVERED, _C.COMMITTED, _C.PLANNED_FAILOVER_INITIATED,
            _C.PARTIALLY_RECOVERED}


def _collection(state: CollectionReplicationState, mode: ReplicationMode = ReplicationMode.REPLICA,
                name: str = "web tier") -> Collection:
    return Collection("GROUP-1", name, ("VM-1",), mode, state)


# -- the rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [ReplicationMode.REPLICA, ReplicationMode.PRIMARY])
@pytest.mark.parametrize("state", list(_C))
@pytest.mark.parametrize("operation", list(Operation))
def test_the_rule_for_every_operation_state_and_mode(operation: Operation,
                                                     state: CollectionReplicationState,
                                                     mode: ReplicationMode) -> None:
    collection = _collection(state, mode)
    refused = operation in MEMBER_OPERATIONS and state in REFUSING
    assert (failover_unit(operation, [collection]) == collection) is refused


def test_the_refusing_states_are_those_of_a_collection_failover() -> None:
    assert set(COLLECTION_FAILOVER_STATES) == REFUSING


@pytest.mark.parametrize("operation", MEMBER_OPERATIONS)
def test_no_collection_or_only_replicating_ones_refuse_nothing(operation: Operation) -> None:
    assert failover_unit(operation, []) is None
    assert failover_unit(operation, [_collection(_C.REPLICATING), _collection(_C.SUSPENDED)]) is None
    failed = _collection(_C.RECOVERED, name="db tier")
    assert failover_unit(operation, [_collection(_C.REPLICATING), failed]) is failed


@pytest.mark.parametrize(("operation", "method"), [(Operation.INITIATE_FAILOVER, "InitiateFailover"),
                                                   (Operation.REVERT_FAILOVER, "RevertFailover"),
                                                   (Operation.COMMIT_FAILOVER, "CommitFailover")])
def test_the_refusal_is_invalid_state_naming_the_collection(operation: Operation, method: str) -> None:
    with pytest.raises(InvalidState) as caught:
        require_member_failover(operation, "web01", [_collection(_C.RECOVERED)])
    error = caught.value
    assert error.code is ReturnCode.INVALID_STATE and int(error.code) == 32775
    assert error.message_id == "CollectionIsFailoverUnit"
    assert error.args_map == {"vm": "web01", "collection": "web tier", "state": 5, "method": method}
    assert "web tier" in str(error) and method in str(error)
    english = i18n.translate("CollectionIsFailoverUnit", "en", vm="web01", collection="web tier", state=5,
                             method=method)
    german = i18n.translate("CollectionIsFailoverUnit", "de", vm="web01", collection="web tier", state=5,
                            method=method)
    assert "collection web tier" in english and method in english
    assert "Sammlung web tier" in german and method in german
    require_member_failover(operation, "web01", [_collection(_C.REPLICATING)])  # allowed: nothing raised


# -- the engine's per-VM guards ---------------------------------------------------------------------------


def _replica_world(state: ReplicationState, collection_state: CollectionReplicationState) -> FailoverUseCases:
    db = Database.memory()
    db.vms.insert(VirtualMachine("VM-1", "web01", 128, 1, enabled_state=EnabledState.DISABLED,
                                 replication_mode=ReplicationMode.REPLICA, created_at=NOW))
    db.relationships.insert(Relationship("VM-1", RelationshipIndex.PRIMARY, state, last_replication_time=NOW,
                                         state_before_failover=ReplicationState.REPLICATING))
    db.recovery_points.insert(RecoveryPoint("VM-1-RP1", "VM-1", 1, NOW, VirtualSystemType.REPLICA_STANDARD))
    db.collections.insert(_collection(collection_state))
    # No job manager: a call the guards let through fails to start its job (Unavailable), after them.
    return FailoverUseCases(db, lambda: NOW, None, FakeHypervisor(check_files=False),
                            ReplicationUseCases(db, lambda: NOW))


def _calls(failover: FailoverUseCases) -> dict[Operation, Callable[[], Job]]:
    return {Operation.INITIATE_FAILOVER: lambda: failover.submit_initiate("VM-1", None),
            Operation.REVERT_FAILOVER: lambda: failover.submit_revert("VM-1"),
            Operation.COMMIT_FAILOVER: lambda: failover.submit_commit("VM-1")}


@pytest.mark.parametrize(("operation", "member_state"), [
    (Operation.REVERT_FAILOVER, ReplicationState.RECOVERED),
    (Operation.COMMIT_FAILOVER, ReplicationState.RECOVERED),
    (Operation.INITIATE_FAILOVER, ReplicationState.REPLICATING),
])
def test_per_vm_submits_refuse_a_member_of_a_failed_over_collection(operation: Operation,
                                                                   member_state: ReplicationState) -> None:
    refused = _replica_world(member_state, _C.RECOVERED)
    with pytest.raises(InvalidState) as caught:
        _calls(refused)[operation]()
    assert caught.value.message_id == "CollectionIsFailoverUnit"
    # The same member of a collection that only replicates passes the guards (and needs the job manager).
    allowed = _replica_world(member_state, _C.REPLICATING)
    with pytest.raises(Unavailable):
        _calls(allowed)[operation]()


# -- through the object manager -----------------------------------------------------------------------------


def test_revert_failover_of_one_member_through_cim_is_32775_and_the_collections_revert_starts() -> None:
    world = make_world(loop=asyncio.new_event_loop())
    collection = put_collection(world, mode=ReplicationMode.REPLICA, state=_C.RECOVERED, received=True)
    (member,) = collection.member_vm_ids
    rel = world.db.relationships.get(member, 0)
    assert rel.state is ReplicationState.RECOVERED
    code, _ = world.invoke(service_path(), "RevertFailover", ComputerSystem=vm_path(member))
    assert code == 32775
    code, _ = world.invoke(service_path(), "CommitFailover", ComputerSystem=vm_path(member))
    assert code == 32775
    assert world.db.relationships.get(member, 0).state is ReplicationState.RECOVERED  # untouched
    code, out = world.invoke(service_path("Msvm_CollectionReplicationService", "CollectionReplicationService",
                                          CLUSTER),
                             "RevertFailover", Collection=collection_path(collection.collection_id))
    assert code == 4096 and out["Job"] is not None
    # A failed-over VM in no collection reverts on its own as before.
    put_vm(world, mode=ReplicationMode.REPLICA, state=ReplicationState.RECOVERED, received=True,
           vm_id="LONE-VM", name="lone")
    code, _ = world.invoke(service_path(), "RevertFailover", ComputerSystem=vm_path("LONE-VM"))
    assert code == 4096
