"""The planned move of a redundancy set over fake per-VM steps: the order of the steps on each host, what a
failure rolls back (the prepare is cancelled; B's failover is reverted only while A is not its replica yet),
and Failover's codes and planned indications through ``RedundancyUseCases``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest

from standby.domain.entities import Host, RecoveryPoint, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    FailoverCode,
    FailoverIndicationType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.domain.errors import InvalidState, Unavailable
from standby.engine.group_planned import PlannedMove
from standby.engine.jobs import JobManager
from standby.engine.redundancy import RedundancyUseCases, peer_vm
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VM = "AAAAAAAA-0000-4000-8000-000000000001"
_S = ReplicationState


def clock() -> datetime:
    return NOW


def _set_state(db: Database, state: ReplicationState) -> None:
    db.relationships.update(replace(db.relationships.get(VM, 0), state=state))


@dataclass
class Steps:
    """Every per-VM step the move calls, recorded in order; ``fail`` names the step that raises."""

    db: Database
    calls: list[str] = field(default_factory=list)
    fail: str = ""
    reverse_moves_state: bool = False

    def __post_init__(self) -> None:
        self.guards = ReplicationUseCases(self.db, clock)

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise InvalidState(f"{name} failed", message_id="VmRunning", vm="web")

    async def prepare(self, vm_id: str) -> dict[str, str]:
        self._step("prepare")
        vm = self.db.vms.get(vm_id)
        self.db.vms.update(replace(vm, locked_from_start=True))
        _set_state(self.db, _S.SYNCED_REPLICATION_COMPLETE)
        return {"Sequence": "7"}

    async def initiate(self, vm_id: str, point_id: str | None) -> dict[str, str]:
        self._step("failover")
        _set_state(self.db, _S.RECOVERED)
        return {"RecoveryPoint": "RP-7"}

    async def revert(self, vm_id: str) -> dict[str, str]:
        self.calls.append("revert")
        _set_state(self.db, _S.REPLICATING)
        return {}

    def settings_for(self, vm: VirtualMachine, settings: ReplicationSettings) -> ReplicationSettings:
        self.calls.append(f"settings {settings.recovery_connection_point}:{settings.recovery_port}")
        return settings

    async def reverse(self, vm_id: str, settings: ReplicationSettings) -> dict[str, str]:
        if self.reverse_moves_state:  # A became the replica before the failure
            _set_state(self.db, _S.RESYNCHRONIZING)
        self._step("reverse")
        _set_state(self.db, _S.REPLICATING)
        return {"Planned": "true"}


@dataclass
class FakePeer:
    """The other host's planned-failover routes."""

    calls: list[str] = field(default_factory=list)
    fail: str = ""

    async def __aenter__(self) -> FakePeer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def _call(self, name: str) -> dict[str, Any]:
        self.calls.append(name)
        if name == self.fail:
            raise Unavailable("the peer failed", message_id="PeerUnreachable", target="peer", reason="test")
        return {"Planned": "true"}

    async def take_over(self, vm_id: str, body: dict[str, object]) -> dict[str, Any]:
        return self._call(f"take-over port={body['port']}")

    async def prepare_planned(self, vm_id: str) -> dict[str, Any]:
        return self._call("prepare")

    async def cancel_planned(self, vm_id: str) -> dict[str, Any]:
        return self._call("cancel")


def world(mode: ReplicationMode) -> Database:
    db = Database.memory()
    primary = mode is ReplicationMode.PRIMARY
    db.vms.insert(VirtualMachine(VM, "web", 128, 1, enabled_state=EnabledState.DISABLED,
                                 replication_mode=mode, created_at=NOW))
    settings = ReplicationSettings(recovery_connection_point="hostb" if primary else "",
                                   recovery_port=8443 if primary else 0,
                                   primary_connection_point="" if primary else "hosta")
    db.relationships.insert(Relationship(VM, RelationshipIndex.PRIMARY, _S.REPLICATING, ReplicationHealth.OK,
                                         settings, last_replication_time=NOW))
    if not primary:
        db.recovery_points.insert(RecoveryPoint("RP-1", VM, 1, NOW, VirtualSystemType.REPLICA_STANDARD))
    return db


def mover(db: Database, steps: Steps, peer: FakePeer) -> PlannedMove:
    def connect(host: str, port: int | None) -> FakePeer:
        peer.calls.append(f"connect {host}:{port}")
        return peer

    return PlannedMove(db, None, failover=steps, planned=steps, reverse=steps, peer=connect, peer_port=9443)


def test_from_the_primary_prepares_here_then_the_replica_takes_over() -> None:
    db = world(ReplicationMode.PRIMARY)
    steps, peer = Steps(db), FakePeer()
    result = asyncio.run(mover(db, steps, peer).from_primary(VM))
    assert steps.calls == ["prepare"]
    assert peer.calls == ["connect hostb:8443", "take-over port=9443"]
    assert result["Prepared"] == "7" and result["Planned"] == "true"


def test_a_failed_take_over_cancels_the_prepare_here() -> None:
    db = world(ReplicationMode.PRIMARY)
    steps, peer = Steps(db), FakePeer(fail="take-over port=9443")
    with pytest.raises(Unavailable):
        asyncio.run(mover(db, steps, peer).from_primary(VM))
    assert steps.calls == ["prepare", "revert"]
    assert db.relationships.get(VM, 0).state is _S.REPLICATING


def test_from_the_replica_the_primary_prepares_then_failover_and_reverse_run_here() -> None:
    db = world(ReplicationMode.REPLICA)
    steps, peer = Steps(db), FakePeer()
    asyncio.run(mover(db, steps, peer).from_replica(VM))
    assert peer.calls == ["connect hosta:None", "prepare"]
    # The reversed relationship points back at the old primary on this host's peer port.
    assert steps.calls == ["failover", "settings hosta:9443", "reverse"]


@pytest.mark.parametrize("failing", ["failover", "reverse"])
def test_a_failure_here_reverts_the_failover_and_cancels_the_prepare_there(failing: str) -> None:
    db = world(ReplicationMode.REPLICA)
    steps, peer = Steps(db, fail=failing), FakePeer()
    with pytest.raises(InvalidState):
        asyncio.run(mover(db, steps, peer).from_replica(VM))
    assert peer.calls[-1] == "cancel"
    assert ("revert" in steps.calls) is (failing == "reverse")  # a failed failover undid itself
    assert db.relationships.get(VM, 0).state is _S.REPLICATING


def test_once_the_old_primary_became_the_replica_nothing_is_reverted() -> None:
    db = world(ReplicationMode.REPLICA)
    steps = Steps(db, fail="reverse", reverse_moves_state=True)
    with pytest.raises(InvalidState):
        asyncio.run(mover(db, steps, FakePeer()).take_over(VM, port=8443))
    assert "revert" not in steps.calls and db.relationships.get(VM, 0).state is _S.RESYNCHRONIZING


def test_no_peer_client_is_a_clear_error() -> None:
    db = world(ReplicationMode.REPLICA)
    move = PlannedMove(db, None, failover=Steps(db), planned=None, reverse=None, peer=None)
    with pytest.raises(Unavailable, match="cannot be reached"):
        asyncio.run(move.from_replica(VM))


def _failover(db: Database, move: PlannedMove | None, source: str, target: str) -> FailoverCode:
    async def main() -> FailoverCode:
        jobs = JobManager(db, clock, loop=asyncio.get_running_loop())
        engine = RedundancyUseCases(db, clock, Host("H-1", "hosta", "hosta.example"), jobs=jobs,
                                    failover=Steps(db), planned=move)
        return await asyncio.to_thread(engine.failover_now, f"VM-{VM}", source, target, 10.0)

    return asyncio.run(main())


def test_redundancy_failover_of_a_primary_here_is_planned_and_leaves_a_planned_indication() -> None:
    db = world(ReplicationMode.PRIMARY)
    steps, peer = Steps(db), FakePeer()
    assert _failover(db, None, VM, peer_vm(VM, "hostb")) is FailoverCode.NOT_SUPPORTED  # no planned moves
    assert _failover(db, mover(db, steps, peer), VM, peer_vm(VM, "hostb")) is FailoverCode.COMPLETED
    (item,) = db.failover_indications.list()
    assert (item.failover_type, item.other_type) == (FailoverIndicationType.OTHER, "Planned")
    assert (item.hosting_system, item.previous_hosting_system, item.hosted_element) == ("hostb", "hosta", VM)


def test_a_failed_planned_move_answers_2_and_leaves_no_indication() -> None:
    db = world(ReplicationMode.PRIMARY)
    steps = Steps(db)
    code = _failover(db, mover(db, steps, FakePeer(fail="take-over port=9443")), VM, peer_vm(VM, "hostb"))
    assert code is FailoverCode.UNKNOWN_ERROR
    assert db.failover_indications.list() == [] and steps.calls == ["prepare", "revert"]
