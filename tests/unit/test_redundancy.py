"""Redundancy sets derived from relationships, their status, and every Failover code (seed 000)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from standby.domain.entities import (
    Host,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    EnabledState,
    FailoverCode,
    FailoverIndicationType,
    JobType,
    RedundancyStatus,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    TypeOfSet,
    VirtualSystemType,
)
from standby.domain.errors import InUse, InvalidParameter, InvalidState, NotSupported
from standby.domain.groups import failover_code, redundancy_status
from standby.engine.jobs import JobManager
from standby.engine.redundancy import RedundancyUseCases, peer_vm
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOST = Host("H-1", "hostb", "hostb.example")
R1, R2, R3 = ("11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002",
              "33333333-0000-4000-8000-000000000003")
P1 = "44444444-0000-4000-8000-000000000004"
_S = ReplicationState


def clock() -> datetime:
    return NOW


@dataclass
class FakeFailover:
    db: Database
    guards: ReplicationUseCases
    calls: list[str] = field(default_factory=list)

    async def initiate(self, vm_id: str, point_id: str | None, **kwargs: Any) -> dict[str, str]:
        self.calls.append(f"failover {vm_id[:1]}")
        rel = self.db.relationships.get(vm_id, 0)
        self.db.relationships.update(replace(rel, state=_S.RECOVERED))
        return {}

    async def revert(self, vm_id: str, **kwargs: Any) -> dict[str, str]:
        self.calls.append(f"revert {vm_id[:1]}")
        return {}


def world() -> tuple[Database, FakeFailover]:
    db = Database.memory()

    def add(vm_id: str, name: str, mode: ReplicationMode, state: ReplicationState, peer: str) -> None:
        db.vms.insert(VirtualMachine(vm_id, name, 128, 1, enabled_state=EnabledState.DISABLED,
                                     replication_mode=mode, created_at=NOW))
        primary = mode is ReplicationMode.PRIMARY
        settings = ReplicationSettings(recovery_connection_point=peer if primary else "",
                                       primary_connection_point="" if primary else peer)
        db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY, state, ReplicationHealth.OK,
                                             settings, last_replication_time=NOW))
        if not primary:
            db.recovery_points.insert(RecoveryPoint(f"RP-{vm_id[:1]}", vm_id, 1, NOW,
                                                    VirtualSystemType.REPLICA_STANDARD))

    add(R1, "web", ReplicationMode.REPLICA, _S.REPLICATING, "hosta")
    add(R2, "db", ReplicationMode.REPLICA, _S.REPLICATING, "hosta")
    add(R3, "mail", ReplicationMode.REPLICA, _S.READY_FOR_REPLICATION, "hostc")
    add(P1, "app", ReplicationMode.PRIMARY, _S.REPLICATING, "hostc")
    return db, FakeFailover(db, ReplicationUseCases(db, clock))


def engine(db: Database, fake: FakeFailover, jobs: JobManager | None = None) -> RedundancyUseCases:
    return RedundancyUseCases(db, clock, HOST, jobs=jobs, failover=fake)


def test_one_set_per_replicated_vm_and_per_peer_host() -> None:
    db, fake = world()
    sets = {rs.set_id: rs for rs in engine(db, fake).sets()}
    assert set(sets) == {f"VM-{R1}", f"VM-{R2}", f"VM-{R3}", f"VM-{P1}", "HOSTS-hosta", "HOSTS-hostc"}
    web = sets[f"VM-{R1}"]
    assert (web.type_of_set, web.member_ids, web.active_member_id) == (
        TypeOfSet.SPARING, (peer_vm(R1, "hosta"), R1), peer_vm(R1, "hosta"))
    assert web.status is RedundancyStatus.FULLY_REDUNDANT
    app = sets[f"VM-{P1}"]
    assert (app.member_ids, app.active_member_id) == ((P1, peer_vm(P1, "hostc")), P1)
    hosts = sets["HOSTS-hostc"]
    assert (hosts.type_of_set, hosts.member_ids) == (TypeOfSet.N_PLUS_1, ("hostb", "hostc"))
    assert hosts.status is RedundancyStatus.DEGRADED_REDUNDANCY  # mail is not replicating yet
    assert {p.name for p in engine(db, fake).peer_systems()} >= {"hosta", "hostc", peer_vm(R1, "hosta")}
    assert db.redundancy_sets.get(f"VM-{R1}") == web  # written through for the associations


def test_sets_follow_the_relationships() -> None:
    db, fake = world()
    engine(db, fake).sets()
    db.relationships.delete(R3, 0)
    ids = {rs.set_id for rs in engine(db, fake).sets()}
    assert f"VM-{R3}" not in ids and "HOSTS-hostc" in ids


@pytest.mark.parametrize(("state", "health", "status"), [
    (_S.REPLICATING, ReplicationHealth.OK, RedundancyStatus.FULLY_REDUNDANT),
    (_S.REPLICATING, ReplicationHealth.WARNING, RedundancyStatus.DEGRADED_REDUNDANCY),
    (_S.REPLICATING, ReplicationHealth.CRITICAL, RedundancyStatus.REDUNDANCY_LOST),
    (_S.RECOVERED, ReplicationHealth.WARNING, RedundancyStatus.REDUNDANCY_LOST),
    (_S.COMMITTED, ReplicationHealth.WARNING, RedundancyStatus.REDUNDANCY_LOST),
    (_S.SUSPENDED, ReplicationHealth.WARNING, RedundancyStatus.DEGRADED_REDUNDANCY),
])
def test_redundancy_status_from_the_relationship(state: ReplicationState, health: ReplicationHealth,
                                                 status: RedundancyStatus) -> None:
    assert redundancy_status(Relationship("X", RelationshipIndex.PRIMARY, state, health)) is status
    assert redundancy_status(None, can_run=False) is RedundancyStatus.OVERALL_FAILURE


@pytest.mark.parametrize(("error", "code"), [
    (NotSupported("x"), FailoverCode.NOT_SUPPORTED), (InUse("x"), FailoverCode.BUSY),
    (InvalidParameter("x"), FailoverCode.PARAMETER_ERROR), (InvalidState("x"), FailoverCode.UNKNOWN_ERROR),
    (RuntimeError("x"), FailoverCode.UNKNOWN_ERROR),
])
def test_failover_code_of_each_error(error: Exception, code: FailoverCode) -> None:
    assert failover_code(error) is code


def code(db: Database, fake: FakeFailover, set_id: str, source: str | None,
         target: str | None) -> FailoverCode:
    async def main() -> FailoverCode:
        jobs = JobManager(db, clock, loop=asyncio.get_running_loop())
        return await asyncio.to_thread(engine(db, fake, jobs).failover_now, set_id, source, target, 10.0)

    return asyncio.run(main())


def test_vm_set_codes() -> None:
    db, fake = world()
    web, hosta = f"VM-{R1}", peer_vm(R1, "hosta")
    assert code(db, fake, web, None, R1) is FailoverCode.PARAMETER_ERROR
    assert code(db, fake, web, R2, R1) is FailoverCode.PARAMETER_ERROR  # From not a member
    assert code(db, fake, web, R1, hosta) is FailoverCode.PARAMETER_ERROR  # From not the active member
    assert code(db, fake, web, hosta, R2) is FailoverCode.NOT_SUPPORTED  # To not a member
    assert code(db, fake, f"VM-{P1}", P1, peer_vm(P1, "hostc")) is FailoverCode.NOT_SUPPORTED  # planned
    assert code(db, fake, f"VM-{R3}", peer_vm(R3, "hostc"), R3) is FailoverCode.UNKNOWN_ERROR  # state 1
    assert fake.calls == []
    assert code(db, fake, web, hosta, R1) is FailoverCode.COMPLETED
    assert fake.calls == ["failover 1"]
    assert db.relationships.get(R1, 0).state is _S.RECOVERED
    assert engine(db, fake).get(web).active_member_id == R1
    [indication] = db.failover_indications.list()
    assert (indication.hosted_element, indication.hosting_system, indication.previous_hosting_system,
            indication.failover_type) == (R1, "hostb", "hosta", FailoverIndicationType.UNPLANNED)
    assert code(db, fake, web, hosta, R1) is FailoverCode.PARAMETER_ERROR  # hosta is no longer active


def test_a_running_job_on_a_member_is_busy() -> None:
    db, fake = world()

    async def main() -> FailoverCode:
        jobs = JobManager(db, clock, loop=asyncio.get_running_loop())
        gate = asyncio.Event()

        async def hold(handle: Any) -> None:
            await gate.wait()

        jobs.submit(JobType.REPLICATE_STATE_CHANGE, element_id=R1, description="hold", work=hold)
        await asyncio.sleep(0)
        result = await asyncio.to_thread(engine(db, fake, jobs).failover_now, f"VM-{R1}",
                                         peer_vm(R1, "hosta"), R1, 10.0)
        host_result = await asyncio.to_thread(engine(db, fake, jobs).failover_now, "HOSTS-hosta", "hosta",
                                              "hostb", 10.0)
        gate.set()
        assert host_result is FailoverCode.BUSY
        return result

    assert asyncio.run(main()) is FailoverCode.BUSY
    assert fake.calls == []


def test_host_set_codes_and_moving_every_vm_from_the_failed_host() -> None:
    db, fake = world()
    assert code(db, fake, "HOSTS-hosta", "hostb", "hosta") is FailoverCode.NOT_SUPPORTED  # planned, away
    assert code(db, fake, "HOSTS-hosta", R1, "hostb") is FailoverCode.PARAMETER_ERROR  # not a member
    assert code(db, fake, "HOSTS-hosta", "hosta", R1) is FailoverCode.NOT_SUPPORTED  # To not a member
    assert code(db, fake, "HOSTS-hostc", "hostc", "hostb") is FailoverCode.UNKNOWN_ERROR  # mail in state 1
    assert code(db, fake, "HOSTS-hosta", "hosta", "hostb") is FailoverCode.COMPLETED
    assert sorted(fake.calls) == ["failover 1", "failover 2"]
    assert len(db.failover_indications.list()) == 2
    assert code(db, fake, "HOSTS-hosta", "hosta", "hostb") is FailoverCode.PARAMETER_ERROR  # nothing left


def test_a_stored_set_whose_members_do_not_replicate_has_no_failover() -> None:
    from standby.domain.entities import RedundancySet

    db, fake = world()
    db.redundancy_sets.insert(RedundancySet("SET", "pair", TypeOfSet.SPARING,
                                            RedundancyStatus.FULLY_REDUNDANT, (R1, R2), R1))
    assert code(db, fake, "SET", R1, R2) is FailoverCode.NOT_SUPPORTED
    assert code(db, fake, "NOPE", R1, R2) is FailoverCode.PARAMETER_ERROR
