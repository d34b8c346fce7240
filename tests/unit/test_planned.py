"""Planned failover, reverse and extended replication: the rules and refusals that need no disk or network.

Over an in-memory store: the prepare job's bookkeeping with a runner that succeeds or fails,
enable-as-replica, the old primary's refusals to become a replica, the reverse request's wire form, the
REST defaults of a reverse, and the extended settings rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from standby.api.planned import ReverseBody, reverse_settings
from standby.domain.cycles import CycleKind, CycleOutcome
from standby.domain.entities import (
    AuthorizationEntry,
    Disk,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.domain.errors import AccessDenied, InvalidParameter, InvalidState, StandbyError, Unavailable
from standby.engine.cycle import CycleResult
from standby.engine.extended import _merge, validate_extended
from standby.engine.planned import PlannedFailover
from standby.engine.replication import ReplicationUseCases
from standby.engine.reverse import BecomeReplica, ReverseTarget
from standby.store.sqlite import Database

VM_ID = "5C0FFEE0-0000-4000-8000-00000000AB01"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
_S = ReplicationState
_M = ReplicationMode


def clock() -> datetime:
    return NOW


def _vm(mode: ReplicationMode, *, locked: bool = False, on: bool = False) -> VirtualMachine:
    return VirtualMachine(VM_ID, "web", 256, 1, disks=(Disk("d0", "/nonexistent/d0.qcow2", 1 << 20),),
                          replication_mode=mode, locked_from_start=locked,
                          enabled_state=EnabledState.ENABLED if on else EnabledState.DISABLED)


def _rel(state: ReplicationState, **changes: Any) -> Relationship:
    return replace(Relationship(VM_ID, RelationshipIndex.PRIMARY, state), **changes)


def _store(mode: ReplicationMode, state: ReplicationState | None, **vm: Any) -> Database:
    db = Database.memory()
    db.vms.insert(_vm(mode, **vm))
    if state is not None:
        # The VM replicates to hvb.lab: the only host that may ask it to become a replica.
        db.relationships.insert(_rel(state, sequence=7,
                                     settings=ReplicationSettings(recovery_connection_point="hvb.lab")))
    return db


# -- prepare (RequestReplicationStateChange 4) ---------------------------------------------------------------


@dataclass
class Runner:
    """Stands in for the cycle runner: records the kind asked for, then succeeds or raises."""

    error: StandbyError | None = None
    leaves: ReplicationState | None = None
    db: Database | None = None
    calls: list[CycleKind] = field(default_factory=list)

    async def run(self, vm_id: str, index: RelationshipIndex, kind: CycleKind, **_: Any) -> CycleResult:
        self.calls.append(kind)
        assert self.db is not None
        seen = self.db.relationships.get(vm_id, 0)
        assert seen.state is _S.SYNCED_REPLICATION_COMPLETE and self.db.vms.get(vm_id).locked_from_start
        if self.error is not None:
            if self.leaves is not None:  # the runner itself marks lost tracking as state 9
                self.db.relationships.update(replace(seen, state=self.leaves))
            raise self.error
        return CycleResult(8, CycleOutcome.SUCCESS, 4096, 1024)


def _planned(db: Database, runner: Runner) -> PlannedFailover:
    runner.db = db
    return PlannedFailover(ReplicationUseCases(db, clock), None, runner, db=db, clock=clock)  # type: ignore[arg-type]


def test_prepare_locks_ships_a_planned_log_and_stays_in_4() -> None:
    db = _store(_M.PRIMARY, _S.REPLICATING)
    runner = Runner()
    result = asyncio.run(_planned(db, runner).prepare(VM_ID))
    assert runner.calls == [CycleKind.PLANNED]
    assert result["ReplicationState"] == "4" and result["Sequence"] == "8"
    rel = db.relationships.get(VM_ID, 0)
    assert rel.state is _S.SYNCED_REPLICATION_COMPLETE
    assert rel.last_replication_type is ReplicationType.PLANNED
    assert db.vms.get(VM_ID).locked_from_start


@pytest.mark.parametrize(("leaves", "expected"), [(None, _S.REPLICATING),
                                                  (_S.WAITING_TO_START_RESYNCHRONIZATION,
                                                   _S.WAITING_TO_START_RESYNCHRONIZATION)])
def test_a_failed_prepare_unlocks_and_leaves_4(leaves: ReplicationState | None,
                                               expected: ReplicationState) -> None:
    db = _store(_M.PRIMARY, _S.REPLICATING)
    runner = Runner(Unavailable("replica unreachable", message_id="PeerUnreachable"), leaves)
    with pytest.raises(Unavailable):
        asyncio.run(_planned(db, runner).prepare(VM_ID))
    assert db.relationships.get(VM_ID, 0).state is expected
    assert not db.vms.get(VM_ID).locked_from_start


@pytest.mark.parametrize(("mode", "state", "on", "code"), [
    (_M.PRIMARY, _S.REPLICATING, True, 32775),  # the VM must be off
    (_M.PRIMARY, _S.SUSPENDED, False, 32775),
    (_M.REPLICA, _S.REPLICATING, False, 32775),  # a replica prepares only its extended relationship
    (_M.NONE, None, False, 32775),
])
def test_prepare_refusals_come_from_the_table(mode: ReplicationMode, state: ReplicationState | None, on: bool,
                                              code: int) -> None:
    db = _store(mode, state, on=on)
    with pytest.raises(StandbyError) as refused:
        _planned(db, Runner()).submit_prepare(VM_ID)
    assert refused.value.code == code


def test_as_replica_makes_a_waiting_replica() -> None:
    db = _store(_M.NONE, None)
    result = _planned(db, Runner()).as_replica(VM_ID)
    assert result == {"ReplicationState": "2", "ReplicationMode": "2"}
    assert db.vms.get(VM_ID).replication_mode is _M.REPLICA
    assert db.relationships.get(VM_ID, 0).state is _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION
    with pytest.raises(InvalidState):  # only a plain VM
        _planned(db, Runner()).submit_as_replica(VM_ID)


# -- the old primary's refusals (before any file is touched) ------------------------------------------------


def _target(db: Database) -> ReverseTarget:
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry("hvb.lab", "lab", "/nonexistent/replicas"))
    return ReverseTarget(db, clock)


def _ask(target: ReverseTarget, request: BecomeReplica, caller: str = "hvb.lab") -> tuple[int, int]:
    return asyncio.run(target.become_replica(caller, VM_ID, request))


REQUEST = BecomeReplica(ReplicationSettings(recovery_connection_point="hva.lab", recovery_port=8443),
                        (("d0", 1 << 20),), planned_sequence=7, at_least=7)


def test_become_replica_refusals() -> None:
    db = _store(_M.PRIMARY, _S.SYNCED_REPLICATION_COMPLETE)
    target = _target(db)
    with pytest.raises(AccessDenied):
        _ask(target, REQUEST, caller="stranger.example")
    db.auth_entries.insert(AuthorizationEntry("hvc.lab", "lab", "/nonexistent/replicas"))
    with pytest.raises(AccessDenied, match=r"other end is hvb\.lab"):  # admitted, same group, not its replica
        _ask(target, REQUEST, caller="hvc.lab")
    with pytest.raises(InvalidState, match="point 6"):  # prepared at 7, not 6
        _ask(target, replace(REQUEST, planned_sequence=6))
    with pytest.raises(InvalidParameter, match="disks"):
        _ask(target, replace(REQUEST, disks=(("d0", 2 << 20),)))
    db.relationships.update(replace(db.relationships.get(VM_ID, 0), state=_S.REPLICATING))
    with pytest.raises(InvalidState, match="not prepared"):
        _ask(target, REQUEST)
    db.relationships.update(replace(db.relationships.get(VM_ID, 0), intent="cycle:8"))
    with pytest.raises(StandbyError, match="under way"):
        _ask(target, replace(REQUEST, planned_sequence=None))
    db.vms.update(replace(db.vms.get(VM_ID), enabled_state=EnabledState.ENABLED))
    with pytest.raises(InvalidState, match="running"):
        _ask(target, REQUEST)
    db.vms.update(replace(db.vms.get(VM_ID), replication_mode=_M.REPLICA))
    with pytest.raises(InvalidState, match="not a primary"):
        _ask(target, REQUEST)


def test_reverse_request_round_trip_and_malformed_bodies() -> None:
    again = BecomeReplica.from_json(REQUEST.to_json())
    assert again == REQUEST
    assert BecomeReplica.from_json({**REQUEST.to_json(), "planned_sequence": None}).planned_sequence is None
    for bad in ({"disks": [{"disk_id": "d0"}]}, {"planned_sequence": "seven"},
                {"settings": {"recovery_port": "x"}}, {"settings": {"recovery_connection_point": ""}}):
        with pytest.raises(InvalidParameter):
            BecomeReplica.from_json({**REQUEST.to_json(), **bad})


# -- REST defaults, extended rules ---------------------------------------------------------------------------


def test_reverse_defaults_to_the_old_primary_and_keeps_other_settings() -> None:
    current = ReplicationSettings(recovery_connection_point="hvb.lab", primary_connection_point="hva.lab",
                                  recovery_port=8443, interval_seconds=30, recovery_history=4)
    same = reverse_settings(current, ReverseBody())
    assert (same.recovery_connection_point, same.recovery_port, same.recovery_history) == ("hva.lab", 8443, 4)
    other = reverse_settings(current, ReverseBody(replica="hvc.lab", port=9443, interval=300, history=0))
    assert (other.recovery_connection_point, other.recovery_port, other.interval_seconds,
            other.recovery_history) == ("hvc.lab", 9443, 300, 0)


def test_extended_settings_rules() -> None:
    good = ReplicationSettings(recovery_connection_point="hvc.lab", recovery_port=8443, interval_seconds=300)
    validate_extended(good, 30)
    validate_extended(replace(good, interval_seconds=5), 5)  # standby's extension: faster than Hyper-V's
    for bad, primary in ((replace(good, interval_seconds=30), 300),
                         (replace(good, app_consistent_interval_hours=2), 30),
                         (replace(good, interval_seconds=301), 30)):
        with pytest.raises(InvalidParameter):
            validate_extended(bad, primary)


def test_merged_ranges() -> None:
    assert _merge([(10, 5), (0, 4), (4, 2), (30, 1), (12, 10)]) == [(0, 6), (10, 12), (30, 1)]
    assert _merge([]) == []
