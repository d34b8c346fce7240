"""One engine entry per Hyper-V replication operation (docs/hyperv-api.md §3, §4).

Every surface — the CIM providers, the REST routes, the CLI through REST — calls exactly these methods with
typed values and gets an ``Outcome`` (or a typed report) back. The entry itself picks the path from the VM's
state: the sending side of a relationship (a primary VM, or the extended relationship of a replica), the
receiving side (a replica VM), the planned steps, reverse and extended replication, test failover. A refusal
is a ``StandbyError`` from the precondition table or the use case; an accepted call either finished its work
(``Outcome.job`` None) or started the job that does it. No entry answers success without doing its work:
an operation standby cannot carry out raises ``NotSupported`` after the precondition check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from standby.domain.clock import Clock
from standby.domain.entities import (
    AuthorizationEntry,
    Job,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    InitialReplicationType,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import FileNotFound, InvalidParameter, NotSupported
from standby.domain.failover import FailoverNetworkSettings
from standby.domain.preconditions import Operation, operation_for_requested_state
from standby.domain.replica import mirrored_state
from standby.domain.settings import AuthorizationEntryChange, ServiceSettingsChange
from standby.engine.connection import ConnectionTarget, ReplicationConnectionTester
from standby.engine.failover import FailoverUseCases
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.planned import PlannedServices
from standby.engine.replica import ReplicaUseCases
from standby.engine.replication import PrimaryReplication, ReplicationUseCases
from standby.engine.statistics import StatisticsReport
from standby.store.port import Store

_PRIMARY = RelationshipIndex.PRIMARY
_EXTENDED = RelationshipIndex.EXTENDED
#: Modes whose primary relationship this host receives (the replica side).
RECEIVING_MODES = frozenset({ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an entry did: finished (``job`` None: CIM 0, REST 200) or started ``job`` (CIM 4096, REST 202).

    ``resulting_system`` names a VM the call made (TestReplicaSystem's test VM, DefineSystem's VM).
    """

    job: Job | None = None
    resulting_system: str | None = None


@dataclass(frozen=True, slots=True)
class InitialReplication:
    """StartReplication's in-parameters: the type, the export folder (type 2) and when to start."""

    kind: int = int(InitialReplicationType.NETWORK)
    export_location: str | None = None
    start_time: datetime | None = None


def started(job: Job, resulting_system: str | None = None) -> Outcome:
    """An outcome that started ``job``."""
    return Outcome(job, resulting_system)


DONE = Outcome()


@dataclass(eq=False)
class ReplicationService:
    """Msvm_ReplicationService and Msvm_ComputerSystem.RequestReplicationStateChange[Ex], one entry each."""

    _db: Store
    _clock: Clock
    _jobs: JobManager
    guards: ReplicationUseCases
    _primary: PrimaryReplication
    _failover: FailoverUseCases
    _planned: PlannedServices
    _replica: ReplicaUseCases
    _tester: ReplicationConnectionTester

    # -- relationships -----------------------------------------------------------------------------------

    def create_relationship(self, vm_id: str, settings: ReplicationSettings) -> Outcome:
        """CreateReplicationRelationship: the primary relationship, or on a replica VM the extended one."""
        if self._vm(vm_id).replication_mode == ReplicationMode.REPLICA:
            return started(self._planned.extended.submit_create(vm_id, settings))
        return started(self._primary.submit_create(vm_id, settings))

    def start_replication(self, vm_id: str, request: InitialReplication) -> Outcome:
        """StartReplication: initial replication of the primary relationship (on a replica: the extended)."""
        if self._vm(vm_id).replication_mode == ReplicationMode.REPLICA:
            return started(self._planned.extended.submit_start(vm_id, request.kind))
        return started(self._primary.submit_start(vm_id, request.kind, request.export_location,
                                                  request.start_time))

    def modify_replication_settings(self, vm_id: str, settings: ReplicationSettings) -> Outcome:
        """ModifyReplicationSettings of the primary relationship (the extended one on a replica)."""
        if self._vm(vm_id).replication_mode == ReplicationMode.REPLICA:
            return started(self._planned.extended.submit_modify(vm_id, settings))
        return started(self._primary.submit_modify(vm_id, settings))

    def resynchronize(self, vm_id: str, start_time: datetime | None = None) -> Outcome:
        """Resynchronize the primary relationship (the extended one on a replica)."""
        if self._vm(vm_id).replication_mode == ReplicationMode.REPLICA:
            return started(self._planned.extended.submit_resynchronize(vm_id))
        return started(self._primary.submit_resynchronize(vm_id, start_time))

    def remove_relationship(self, vm_id: str, index: RelationshipIndex = _PRIMARY) -> Outcome:
        """RemoveReplicationRelationship[Ex]: each side removes its own relationship; a replica VM stays."""
        vm = self._vm(vm_id)
        if index is _EXTENDED:
            return started(self._planned.extended.submit_remove(vm_id))
        if vm.replication_mode in RECEIVING_MODES:
            return started(self._remove_received(vm))
        return started(self._primary.submit_remove(vm_id, index))

    def _remove_received(self, vm: VirtualMachine) -> Job:
        self.guards.guard(Operation.REMOVE_RELATIONSHIP, vm.vm_id, index=_PRIMARY)

        async def work(handle: JobHandle) -> None:
            async with self._replica.applier.lock(vm.vm_id):
                with self._db.transaction():
                    self._db.relationships.delete(vm.vm_id, int(_PRIMARY))
                    self._db.cycles.forget(vm.vm_id, int(_PRIMARY))
                    if self._db.replicas.find(vm.vm_id) is not None:
                        self._db.replicas.delete(vm.vm_id)
                    current = self._db.vms.get(vm.vm_id)
                    self._db.vms.update(dataclasses.replace(current, replication_mode=ReplicationMode.NONE))
                    self._db.events.record(self._clock(), "replication", "ReplicaRemovedHere",
                                           element_id=vm.vm_id, args={"vm": vm.name})

        return self._jobs.submit(JobType.REMOVE_REPLICATION_RELATIONSHIP, element_id=vm.vm_id,
                                 description=f"Remove replication relationship: {vm.name}", work=work)

    def import_initial_replica(self, vm_id: str, location: str) -> Outcome:
        """ImportInitialReplica: apply the exported initial replication found in ``location`` (job 95)."""
        target = self.guards.guard(Operation.IMPORT_INITIAL_REPLICA, vm_id)
        if not location.strip():
            raise InvalidParameter("InitialReplicationImportLocation must name a folder",
                                   message_id="ImportLocationMissing")
        folder = Path(location)
        if not folder.is_dir():
            raise FileNotFound(f"{folder} is not a folder", message_id="ImportLocationMissing",
                               path=str(folder))

        async def work(handle: JobHandle) -> dict[str, str]:
            results = await self._replica.import_initial_replica(vm_id, folder)
            return {"AppliedLogs": str(len(results))}

        return started(self._jobs.submit(JobType.IMPORT_REPLICATION, element_id=target.vm.vm_id,
                                         description=f"Import initial replica: {target.vm.name}", work=work))

    def reverse_replication(self, vm_id: str, settings: ReplicationSettings) -> Outcome:
        """ReverseReplicationRelationship of a failed-over replica VM."""
        return started(self._planned.reverse.submit(vm_id, settings))

    def change_mode_to_primary(self, vm_id: str, index: RelationshipIndex = _EXTENDED) -> Outcome:
        """ChangeReplicationModeToPrimary: a committed replica's extended relationship becomes its primary."""
        return started(self._planned.extended.submit_change_mode_to_primary(vm_id, index))

    def request_state_change(self, vm_id: str, requested: int,
                             index: RelationshipIndex = _PRIMARY) -> Outcome:
        """RequestReplicationStateChange[Ex]: 1 cancel IR, 2 as replica, 3 resume, 4 prepare planned
        failover, 7 suspend, 9 cancel resync — on whichever side of the relationship this host is."""
        operation = operation_for_requested_state(requested)
        if operation is Operation.ENABLE_AS_REPLICA:
            return started(self._planned.planned.submit_as_replica(vm_id))
        if operation is Operation.PREPARE_PLANNED_FAILOVER:
            return started(self._planned.planned.submit_prepare(vm_id, index))
        vm = self._vm(vm_id)
        if index is _PRIMARY and vm.replication_mode in RECEIVING_MODES:
            return started(self._receiving_state_change(vm, requested, operation))
        return started(self._primary.submit_state_change(vm_id, requested, index))

    def cancel(self, vm_id: str) -> Outcome:
        """Stop-VMReplication / Stop-VMInitialReplication: cancel the resync that runs (9), else the
        initial replication (1)."""
        relationship = self._db.relationships.find(self._vm(vm_id).vm_id, int(_PRIMARY))
        resyncing = relationship is not None and relationship.state == ReplicationState.RESYNCHRONIZING
        return self.request_state_change(vm_id, 9 if resyncing else 1)

    def _receiving_state_change(self, vm: VirtualMachine, requested: int, operation: Operation) -> Job:
        self.guards.guard(operation, vm.vm_id, index=_PRIMARY)

        async def work(handle: JobHandle) -> dict[str, str]:
            async with self._replica.applier.lock(vm.vm_id):
                current = self._db.relationships.get(vm.vm_id, int(_PRIMARY))
                has_points = self._db.recovery_points.latest(vm.vm_id) is not None
                state = mirrored_state(current.state, requested, has_points=has_points)
                health = ReplicationHealth.OK if state == ReplicationState.REPLICATING else \
                    ReplicationHealth.WARNING
                self._db.relationships.update(dataclasses.replace(current, state=state, health=health))
                self._db.events.record(self._clock(), "replication", "ReplicaStateChanged",
                                       element_id=vm.vm_id, args={"vm": vm.name, "state": int(state)})
            return {"ReplicationState": str(int(state))}

        return self._jobs.submit(JobType.REPLICATE_STATE_CHANGE, element_id=f"{vm.vm_id}:state",
                                 description=f"Replication state change: {vm.name}", work=work)

    # -- failover ------------------------------------------------------------------------------------------

    def initiate_failover(self, vm_id: str, point_id: str | None = None, *, force: bool = False) -> Outcome:
        """InitiateFailover to a recovery point (None = the latest); ``force`` skips the split-brain probe."""
        return started(self._failover.submit_initiate(vm_id, point_id, force=force))

    def test_replica_system(self, vm_id: str, point_id: str | None = None) -> Outcome:
        """TestReplicaSystem: a test VM from a recovery point while replication goes on."""
        job, test_vm_id = self._failover.drill.submit_create(vm_id, point_id)
        return started(job, test_vm_id)

    def revert_failover(self, vm_id: str) -> Outcome:
        """RevertFailover: discard the failover disks (or cancel a prepared planned failover)."""
        return started(self._failover.submit_revert(vm_id))

    def commit_failover(self, vm_id: str) -> Outcome:
        """CommitFailover: keep the failover, drop the other recovery points."""
        return started(self._failover.submit_commit(vm_id))

    def stop_failover(self, vm_id: str) -> Outcome:
        """Stop-VMFailover: remove the test VM (the one named, or the replica's when it is not failed over),
        else revert the failover."""
        vm = self._vm(vm_id)
        if vm.replication_mode == ReplicationMode.TEST_REPLICA:
            return started(self._failover.drill.submit_remove(vm_id))
        relationship = self._db.relationships.find(vm_id, int(_PRIMARY))
        failed_over = relationship is not None and relationship.state in (
            ReplicationState.RECOVERED, ReplicationState.FAILOVER_IN_PROGRESS)
        if not failed_over and self._failover.drill.test_vm_of(vm) is not None:
            return started(self._failover.drill.submit_remove(vm_id))
        return self.revert_failover(vm_id)

    def initiate_failback(self, vm_id: str, point_identifier: str | None = None) -> Outcome:
        """InitiateFailback is for external replication providers, which standby has none of: refused
        after the precondition check (failing back is ReverseReplicationRelationship here)."""
        self.guards.guard(Operation.INITIATE_FAILBACK, vm_id)
        raise NotSupported("InitiateFailback needs an external replication provider; fail back with "
                           "ReverseReplicationRelationship", message_id="FailbackNeedsProvider")

    def set_failover_network_settings(
        self, vm_id: str, items: Sequence[FailoverNetworkSettings]
    ) -> list[FailoverNetworkSettings]:
        """SetFailoverNetworkAdapterSettings: stored at once, every item checked first."""
        return self._failover.set_network_settings(vm_id, items)

    def points(self, vm_id: str) -> list[tuple[RecoveryPoint, bool]]:
        """The VM's recovery points, oldest first, each with whether a failover or test disk stands on it."""
        vm = self._vm(vm_id)
        held = {hold.point_id for hold in self._db.point_holds.list()}
        return [(point, point.point_id in held) for point in self._db.recovery_points.list(vm_id=vm.vm_id)]

    def failover_network_settings(self, vm_id: str) -> list[FailoverNetworkSettings]:
        """The failover IP settings stored for the VM's NICs."""
        self._vm(vm_id)
        return self._failover.network_settings(vm_id)

    # -- statistics --------------------------------------------------------------------------------------

    def statistics(self, vm_id: str, index: RelationshipIndex = _PRIMARY) -> StatisticsReport:
        """GetReplicationStatistics[Ex] over the current monitoring window."""
        return self.guards.replication_statistics(vm_id, index)

    def reset_statistics(self, vm_id: str, index: RelationshipIndex = _PRIMARY) -> Outcome:
        """ResetReplicationStatistics[Ex]: a new monitoring window starts now."""
        self.guards.reset_statistics(vm_id, index)
        return DONE

    # -- the replication service -------------------------------------------------------------------------

    def service_settings(self) -> ServiceSettings:
        """This host's replica-server settings."""
        return self.guards.service_settings()

    def modify_service_settings(self, settings: ServiceSettings) -> ServiceSettings:
        """ModifyServiceSettings."""
        return self.guards.modify_service_settings(settings)

    def change_service_settings(self, change: ServiceSettingsChange) -> ServiceSettings:
        """Set-VMReplicationServer: the settings given changed, the others as they are."""
        return self.guards.modify_service_settings(change.applied_to(self.guards.service_settings()))

    def authorization_entries(self) -> list[AuthorizationEntry]:
        """The replica server's authorization entries."""
        return self._db.auth_entries.list()

    def add_authorization_entry(self, entry: AuthorizationEntry) -> AuthorizationEntry:
        """AddAuthorizationEntry."""
        return self.guards.add_authorization_entry(entry)

    def modify_authorization_entry(self, entry: AuthorizationEntry) -> AuthorizationEntry:
        """ModifyAuthorizationEntry."""
        return self.guards.modify_authorization_entry(entry)

    def change_authorization_entry(self, allowed_primary_host: str,
                                   change: AuthorizationEntryChange) -> AuthorizationEntry:
        """Set-VMReplicationAuthorizationEntry: the entry of ``allowed_primary_host`` with the fields given
        changed; NotFound (32773) when there is none."""
        current = self._db.auth_entries.get(allowed_primary_host)
        return self.guards.modify_authorization_entry(change.applied_to(current))

    def remove_authorization_entry(self, allowed_primary_host: str) -> None:
        """RemoveAuthorizationEntry."""
        self.guards.remove_authorization_entry(allowed_primary_host)

    def set_authorization_entry(self, vm_id: str, entry: AuthorizationEntry) -> AuthorizationEntry:
        """SetAuthorizationEntry: bind a replica VM to an entry."""
        return self.guards.set_authorization_entry(vm_id, entry)

    def system_certificates(self) -> list[str]:
        """GetSystemCertificates."""
        return self.guards.system_certificates()

    def test_replication_connection(self, target: ConnectionTarget) -> Outcome:
        """TestReplicationConnection (job 115)."""
        return started(self._tester.submit(target))

    @staticmethod
    def service_state_change(requested_state: int) -> int:
        """Msvm_ReplicationService.RequestStateChange: 0 for staying enabled, else 1."""
        return ReplicationUseCases.service_state_change(requested_state)

    # -- queries -------------------------------------------------------------------------------------------

    def relationship(self, vm_id: str, index: RelationshipIndex = _PRIMARY) -> Relationship | None:
        """The VM's relationship ``index``, None when it has none."""
        return self._db.relationships.find(self._vm(vm_id).vm_id, int(index))

    def _vm(self, vm_id: str) -> VirtualMachine:
        return self._db.vms.get(vm_id)


__all__ = ["DONE", "RECEIVING_MODES", "InitialReplication", "Outcome", "ReplicationService", "started"]
