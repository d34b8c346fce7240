"""``domain.replica.check_startable``: who may start (hyperv-api §5.8), for every replication mode and
state."""

from __future__ import annotations

import pytest

from standby.domain.entities import Disk, Relationship, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReplicationMode, ReplicationState
from standby.domain.errors import InvalidState
from standby.domain.replica import STARTABLE_REPLICA_STATES, check_startable

VM_ID = "5C0FFEE0-0000-4000-8000-00000000AB01"
_S = ReplicationState
_M = ReplicationMode


def _vm(mode: ReplicationMode, *, locked: bool = False) -> VirtualMachine:
    return VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "/nonexistent/d0.qcow2", 1 << 20),),
                          replication_mode=mode, locked_from_start=locked)


@pytest.mark.parametrize(("mode", "state", "locked", "refusal"), [
    (_M.NONE, None, False, None),
    (_M.PRIMARY, _S.REPLICATING, False, None),
    (_M.PRIMARY, _S.SYNCED_REPLICATION_COMPLETE, True, "VmLockedForFailover"),  # prepared: locked
    (_M.NONE, None, True, "VmLockedForFailover"),
    (_M.TEST_REPLICA, None, False, None),
    (_M.REPLICA, _S.REPLICATING, False, "ReplicaNotFailedOver"),
    (_M.REPLICA, _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, False, "ReplicaNotFailedOver"),
    (_M.REPLICA, _S.FAILOVER_IN_PROGRESS, False, "ReplicaNotFailedOver"),
    (_M.REPLICA, _S.RECOVERED, False, None),
    (_M.REPLICA, _S.COMMITTED, False, None),
    (_M.REPLICA, _S.RECOVERED, True, "VmLockedForFailover"),
    (_M.REPLICA, None, False, "ReplicaNotFailedOver"),
    (_M.EXTENDED_REPLICA, _S.REPLICATING, False, "ReplicaNotFailedOver"),
    (_M.EXTENDED_REPLICA, _S.RECOVERED, False, None),
    (_M.EXTENDED_REPLICA, None, False, "ReplicaNotFailedOver"),
])
def test_who_may_start(mode: ReplicationMode, state: ReplicationState | None, locked: bool,
                       refusal: str | None) -> None:
    relationship = None if state is None else Relationship(VM_ID, RelationshipIndex.PRIMARY, state)
    if refusal is None:
        check_startable(_vm(mode, locked=locked), relationship)
        return
    with pytest.raises(InvalidState) as refused:
        check_startable(_vm(mode, locked=locked), relationship)
    assert refused.value.code == 32775
    assert refused.value.message_id == refusal


@pytest.mark.parametrize("state", list(ReplicationState))
def test_a_replica_starts_in_the_failed_over_states_only(state: ReplicationState) -> None:
    relationship = Relationship(VM_ID, RelationshipIndex.PRIMARY, state)
    if state in (_S.RECOVERED, _S.COMMITTED):
        check_startable(_vm(_M.REPLICA), relationship)
        assert state in STARTABLE_REPLICA_STATES
    else:
        with pytest.raises(InvalidState):
            check_startable(_vm(_M.REPLICA), relationship)
