"""The guards of per-VM replication (hyperv-api §3, §4), the replication service's own settings, and the
primary side's relationship use cases (``PrimaryReplication``). Surfaces call ``engine.service`` instead.

``ReplicationUseCases.guard`` loads the VM and the relationship an operation targets from the store, builds
``PreconditionFacts`` and calls ``domain.preconditions.require`` — so a refusal (32775 wrong state, 32774 a
job runs, 32773 bad recovery point) is always the table's verdict.

Facts derived from the store (choices where the entities carry no explicit flag):
- ``replication_received``: the targeted relationship has a ``last_replication_time``;
- ``initial_replication_complete``: the same (a replica has received at least one replication);
- ``test_system_exists``: a VM in mode Test Replica named ``"<replica name> - Test"`` exists;
- ``point_valid``: the named recovery point belongs to the VM, or (no point named) the VM has one;
- the targeted relationship: the ``…\\HVR\\<n>`` of an embedded relationship when one is passed; else the
  extended one for StartReplication / Resynchronize / ModifyReplicationSettings / Create on a replica VM
  (hyperv-api §9.8), the primary one otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import datetime
from pathlib import Path

from standby.domain.clock import Clock
from standby.domain.cycles import CycleKind
from standby.domain.entities import (
    AuthorizationEntry,
    Job,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    EnabledState,
    InitialReplicationType,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import (
    FileNotFound,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
    Unavailable,
)
from standby.domain.preconditions import Operation, PreconditionFacts, operation_for_requested_state, require
from standby.domain.settings import (
    validate_initial_replication,
    validate_replication_settings,
    validate_service_settings,
    validate_start_time,
)
from standby.engine import statistics
from standby.engine.capture import included_disks
from standby.engine.cycle import CycleResult, CycleRunner, PeerFactory
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.statistics import HealthIssue, StatisticsReport, monitoring_window
from standby.store.port import Store

__all__ = ["HealthIssue", "ReplicationUseCases", "StatisticsReport", "monitoring_window"]

Sleep = Callable[[float], Awaitable[None]]
log = logging.getLogger(__name__)
_RELATIONSHIP_ID = re.compile(r"^Microsoft:(?P<vm>[^\\]+)\\HVR(?:\\(?P<index>\d+))?$", re.IGNORECASE)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----(?P<body>.*?)-----END CERTIFICATE-----", re.DOTALL)
#: Operations that act on the extended relationship when called on a replica VM (hyperv-api §9.8).
_EXTENDED_ON_REPLICA = frozenset(
    {Operation.START_REPLICATION, Operation.RESYNCHRONIZE, Operation.MODIFY_REPLICATION_SETTINGS}
)
_WITH_RECOVERY_POINT = frozenset({Operation.INITIATE_FAILOVER, Operation.TEST_REPLICA_SYSTEM})


@dataclass(frozen=True, slots=True)
class Target:
    """What a guard loaded: the VM, the targeted relationship (if any) and the facts it was judged on."""

    vm: VirtualMachine
    index: RelationshipIndex
    relationship: Relationship | None
    facts: PreconditionFacts
    extra: dict[str, object] = field(default_factory=dict)


def relationship_index(instance_id: str | None, vm_id: str) -> RelationshipIndex:
    """The index named by an ``Msvm_ReplicationRelationship`` InstanceID of this VM (None → primary)."""
    if instance_id is None:
        return RelationshipIndex.PRIMARY
    match = _RELATIONSHIP_ID.match(instance_id.strip())
    if match is None or match["vm"].upper() != vm_id.upper():
        raise InvalidParameter(
            f"ReplicationRelationship {instance_id!r} is not a relationship of virtual machine {vm_id}",
            message_id="RelationshipNotOfVm",
            relationship=instance_id,
            vm=vm_id,
        )
    try:
        return RelationshipIndex(int(match["index"] or 0))
    except ValueError:
        raise InvalidParameter(
            f"ReplicationRelationship {instance_id!r} names no relationship index 0 or 1",
            message_id="RelationshipNotOfVm",
            relationship=instance_id,
            vm=vm_id,
        ) from None


class ReplicationUseCases:
    """Guards and operations of per-VM replication and of the replication service."""

    def __init__(self, db: Store, clock: Clock, *, certificate_path: Path | None = None) -> None:
        self._db = db
        self._clock = clock
        self._certificate_path = certificate_path

    # -- guards -------------------------------------------------------------------------------------------

    def facts(
        self, operation: Operation, vm_id: str, *, index: RelationshipIndex | None = None,
        point_id: str | None = None,
    ) -> Target:
        """Load the VM and targeted relationship and build the facts the precondition table judges."""
        vm = self._db.vms.get(vm_id)
        chosen = self._index_for(operation, vm) if index is None else index
        relationship = self._db.relationships.find(vm.vm_id, int(chosen))
        judged = relationship
        if operation is Operation.CHANGE_MODE_TO_PRIMARY:
            # The rule looks at the failed-over primary relationship (hyperv-api §10).
            judged = self._db.relationships.find(vm.vm_id, int(RelationshipIndex.PRIMARY))
        received = judged is not None and judged.last_replication_time is not None
        facts = PreconditionFacts(
            mode=vm.replication_mode,
            state=judged.state if judged else None,
            index=chosen,
            vm_state=vm.enabled_state,
            replication_received=received,
            initial_replication_complete=received,
            has_extended_relationship=self._db.relationships.find(
                vm.vm_id, int(RelationshipIndex.EXTENDED)) is not None,
            test_system_exists=self._test_system_exists(vm),
            job_running=self._db.jobs.active_on(vm.vm_id) is not None,
            point_valid=self._point_valid(vm.vm_id, point_id) if operation in _WITH_RECOVERY_POINT else True,
            state_before_failover=judged.state_before_failover if judged else None,
        )
        return Target(vm, chosen, relationship, facts)

    def guard(
        self, operation: Operation, vm_id: str, *, index: RelationshipIndex | None = None,
        point_id: str | None = None,
    ) -> Target:
        """``facts`` + ``require``: the target when the operation may run, else the table's error."""
        target = self.facts(operation, vm_id, index=index, point_id=point_id)
        require(operation, target.facts)
        return target

    def _index_for(self, operation: Operation, vm: VirtualMachine) -> RelationshipIndex:
        on_replica = vm.replication_mode == ReplicationMode.REPLICA
        extended = operation in _EXTENDED_ON_REPLICA or operation is Operation.CREATE_EXTENDED_RELATIONSHIP
        if on_replica and extended:
            return RelationshipIndex.EXTENDED
        return RelationshipIndex.PRIMARY

    def _test_system_exists(self, vm: VirtualMachine) -> bool:
        wanted = f"{vm.name} - Test"
        return any(other.replication_mode == ReplicationMode.TEST_REPLICA
                   for other in self._db.vms.find_by_name(wanted))

    def _point_valid(self, vm_id: str, point_id: str | None) -> bool:
        if point_id is None:
            return self._db.recovery_points.latest(vm_id) is not None
        point = self._db.recovery_points.find(point_id)
        return point is not None and point.vm_id == vm_id and point.kind.is_recovery_point

    # -- statistics -----------------------------------------------------------------------------------

    def reset_statistics(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> None:
        """ResetReplicationStatistics[Ex]: counting starts again now (a Warning health may clear)."""
        self.guard(Operation.RESET_REPLICATION_STATISTICS, vm_id, index=index)
        now = self._clock()
        self._db.cycles.reset(vm_id, int(index), now)
        statistics.refresh_health(self._db, vm_id, index, now)

    def replication_statistics(
        self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY
    ) -> StatisticsReport:
        """Statistics of a relationship over the current monitoring window (counters start at zero)."""
        target = self.guard(Operation.GET_REPLICATION_STATISTICS, vm_id, index=index)
        relationship = target.relationship
        if relationship is None:  # the guard admits only existing relationships; keep mypy honest
            raise NotFound(f"virtual machine {vm_id} has no relationship {int(index)}",
                           message_id="ObjectNotFound", kind="Relationship", key=f"{vm_id}/{int(index)}")
        return statistics.report(self._db, relationship, self._clock())

    # -- the replication service -------------------------------------------------------------------------

    def service_settings(self) -> ServiceSettings:
        """The replication service settings of this host."""
        return self._db.service_settings.get()

    def modify_service_settings(self, settings: ServiceSettings) -> ServiceSettings:
        """Validate and store new service settings (hyperv-api §5.2)."""
        validate_service_settings(settings)
        return self._db.service_settings.put(settings)

    def authorization_entries(self) -> list[AuthorizationEntry]:
        """Every authorization entry."""
        return self._db.auth_entries.list()

    def add_authorization_entry(self, entry: AuthorizationEntry) -> AuthorizationEntry:
        """Add an entry; a second entry for the same primary host pattern is refused (32773)."""
        _validate_entry(entry)
        return self._db.auth_entries.insert(entry)

    def modify_authorization_entry(self, entry: AuthorizationEntry) -> AuthorizationEntry:
        """Change the entry of ``entry.allowed_primary_host``; NotFound (32773) when there is none."""
        _validate_entry(entry)
        return self._db.auth_entries.update(entry)

    def remove_authorization_entry(self, allowed_primary_host: str) -> None:
        """Remove the entry of a primary host pattern; NotFound (32773) when there is none."""
        if not allowed_primary_host:
            raise InvalidParameter("AllowedPrimaryHostSystem must not be empty",
                                   message_id="AuthorizationHostMissing")
        self._db.auth_entries.delete(allowed_primary_host)

    def set_authorization_entry(self, vm_id: str, entry: AuthorizationEntry) -> AuthorizationEntry:
        """Bind a replica VM to an authorization entry (stored if new; the binding goes to the event log)."""
        _validate_entry(entry)
        self.guard(Operation.SET_AUTHORIZATION_ENTRY, vm_id)
        with self._db.transaction():
            if self._db.auth_entries.find(entry.allowed_primary_host) is None:
                self._db.auth_entries.insert(entry)
            bound = {"host": entry.allowed_primary_host, "trust_group": entry.trust_group}
            self._db.events.record(self._clock(), "authorization", "AuthorizationEntryBound",
                                   element_id=vm_id, args=bound)
        return entry

    def system_certificates(self) -> list[str]:
        """Base64 DER of every certificate in the host certificate file; empty when none is configured."""
        path = self._certificate_path
        if path is None or not path.exists():
            return []
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise FileNotFound(f"cannot read the host certificate {path}: {exc.strerror}",
                               message_id="CertificateUnreadable", path=str(path)) from exc
        return [_base64_der(match["body"], path) for match in _PEM_CERT.finditer(text)]

    @staticmethod
    def service_state_change(requested_state: int) -> int:
        """Msvm_ReplicationService.RequestStateChange: the service is always enabled (0 for 2, else 1)."""
        return 0 if requested_state == int(EnabledState.ENABLED) else 1


def _validate_entry(entry: AuthorizationEntry) -> None:
    if not entry.allowed_primary_host.strip():
        raise InvalidParameter("AllowedPrimaryHostSystem must not be empty",
                               message_id="AuthorizationHostMissing")
    if not entry.storage_location.strip():
        raise InvalidParameter("ReplicaStorageLocation must name a folder",
                               message_id="StorageLocationMissing")


def _base64_der(body: str, path: Path) -> str:
    compact = "".join(body.split())
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameter(f"the host certificate {path} is not valid PEM",
                               message_id="CertificateMalformed", path=str(path)) from exc
    return compact



# -- the primary side's relationship use cases (issue 4) ---------------------------------------------------


class PrimaryReplication:
    """The relationship use cases that act (hyperv-api §3.2, §4, §9): each checks the guard of
    ``ReplicationUseCases`` first, then runs as a job (``JobManager``) with the JobType of docs/hyperv-api.md
    §7.

    ``peers(settings)`` gives the peer client of a relationship's replica host; ``runner`` runs cycles.
    """

    def __init__(self, guards: ReplicationUseCases, jobs: JobManager, runner: CycleRunner,
                 peers: PeerFactory, *, db: Store, clock: Clock, sleep: Sleep = asyncio.sleep,
                 host_name: str = "") -> None:
        self._guards = guards
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._runner = runner
        self._peers = peers
        self._sleep = sleep
        self._host = host_name

    # -- create / modify / remove ------------------------------------------------------------------------

    def submit_create(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """CreateReplicationRelationship (91): the replica VM on the recovery host, then mode 1, state 1."""
        target = self._guards.guard(Operation.CREATE_RELATIONSHIP, vm_id)
        vm = target.vm
        if not settings.primary_connection_point and self._host:
            settings = dc_replace(settings, primary_connection_point=self._host)
        validate_replication_settings(settings)
        disks = included_disks(vm, settings.included_disks)

        async def work(handle: JobHandle) -> dict[str, str]:
            answer = await self._peers(settings).create_replica(
                vm, settings, primary_host=self._host or settings.primary_connection_point,
                disks=[(d.disk_id, d.size_bytes) for d in disks])
            with self._db.transaction():
                self._db.relationships.insert(Relationship(vm.vm_id, RelationshipIndex.PRIMARY,
                                                           ReplicationState.READY_FOR_REPLICATION,
                                                           ReplicationHealth.WARNING, settings))
                self._set_mode(vm.vm_id, ReplicationMode.PRIMARY)
            return {"ReplicaState": str(_field(answer, "state", ""))}

        return self._submit(JobType.CREATE_REPLICATION_RELATIONSHIP, vm, "Create replication relationship",
                            work)

    def submit_modify(self, vm_id: str, settings: ReplicationSettings) -> Job:
        """ModifyReplicationSettings (92): new interval, history, compression, bandwidth… (not the disks)."""
        target = self._guards.guard(Operation.MODIFY_REPLICATION_SETTINGS, vm_id)
        rel = _relationship(target)
        validate_replication_settings(settings)
        if set(settings.included_disks) != set(rel.settings.included_disks):
            raise InvalidParameter("the included disks of a relationship cannot change; remove and enable "
                                   "replication again", message_id="InvalidSettingValue",
                                   property="included_disks", label="included disks",
                                   value=settings.included_disks, allowed="the current disks")

        async def work(handle: JobHandle) -> None:
            self._runner.update(rel.vm_id, rel.index, settings=settings)
            try:  # the replica keeps the same settings; one that cannot take them replicates on
                await self._peers(settings).set_settings(rel.vm_id, settings)
            except (Unavailable, NotFound, NotSupported, InvalidState) as exc:
                log.info("the replica of %s did not take the new settings: %s", rel.vm_id, exc)

        return self._submit(JobType.MODIFY_REPLICATION_RELATIONSHIP_SETTINGS, target.vm,
                            "Modify replication settings", work)

    def submit_remove(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        """RemoveReplicationRelationship[Ex] (93): both sides (the replica VM stays), tracking dropped."""
        target = self._guards.guard(Operation.REMOVE_RELATIONSHIP, vm_id, index=index)
        rel = _relationship(target)

        async def work(handle: JobHandle) -> None:
            try:
                await self._peers(rel.settings).remove_replica(vm_id)
            except (Unavailable, NotFound) as exc:  # each side is removed on its own (hyperv-api §3.2)
                log.warning("the replica side of %s was not removed: %s", vm_id, exc)
            await self._runner.forget(target.vm, rel)
            with self._db.transaction():
                self._db.relationships.delete(vm_id, int(rel.index))
                self._db.cycles.forget(vm_id, int(rel.index))
                if rel.index is RelationshipIndex.PRIMARY:
                    self._set_mode(vm_id, ReplicationMode.NONE)

        return self._submit(JobType.REMOVE_REPLICATION_RELATIONSHIP, target.vm,
                            "Remove replication relationship", work)

    # -- initial replication and resync ------------------------------------------------------------------

    def submit_start(self, vm_id: str, initial_type: int, export_location: str | None,
                     start_time: datetime | None) -> Job:
        """StartReplication: network (94), export to a folder (118), seeded (117); StartTime ≤ 7 days."""
        target = self._guards.guard(Operation.START_REPLICATION, vm_id)
        rel = _relationship(target)
        kind = validate_initial_replication(initial_type, export_location)
        validate_start_time(start_time, self._clock())
        folder = Path(export_location) if kind is InitialReplicationType.EXPORT and export_location else None
        if folder is not None and not folder.is_dir():
            raise FileNotFound(f"the export folder {folder} does not exist", message_id="ExportFolderMissing",
                               path=str(folder))
        job_type, cycle = _START_KINDS[kind]
        when = None if kind is InitialReplicationType.EXPORT else start_time

        async def work(handle: JobHandle) -> dict[str, str]:
            await self._wait_until(when, handle)
            waiting = ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
            self._runner.update(vm_id, rel.index, state=waiting)
            result = await self._runner.run(vm_id, rel.index, cycle, progress=handle.progress,
                                            export_dir=folder)
            return _result(result)

        return self._submit(job_type, target.vm, "Start initial replication", work, cancellable=True)

    def submit_resynchronize(self, vm_id: str, start_time: datetime | None) -> Job:
        """Resynchronize (107): block-hash compare with the replica's head; differing blocks only."""
        target = self._guards.guard(Operation.RESYNCHRONIZE, vm_id)
        rel = _relationship(target)
        validate_start_time(start_time, self._clock())
        return self._submit(JobType.RESYNCHRONIZING, target.vm, "Resynchronize",
                            self._resync_work(vm_id, rel.index, start_time), cancellable=True)

    def _resync_work(self, vm_id: str, index: RelationshipIndex,
                     start_time: datetime | None) -> Callable[[JobHandle], Awaitable[dict[str, str]]]:
        async def work(handle: JobHandle) -> dict[str, str]:
            await self._wait_until(start_time, handle)
            self._runner.update(vm_id, index, state=ReplicationState.RESYNCHRONIZING)
            return _result(await self._runner.run(vm_id, index, CycleKind.RESYNC, progress=handle.progress))

        return work

    def submit_auto_resync(self, vm_id: str, index: RelationshipIndex) -> Job:
        """The AutoResynchronize window opened for a relationship in state 9 (no guard: the scheduler
        only calls this in state 9)."""
        vm = self._db.vms.get(vm_id)
        return self._submit(JobType.RESYNCHRONIZING, vm, "Resynchronize (automatic)",
                            self._resync_work(vm_id, index, None), cancellable=True)

    async def _wait_until(self, when: datetime | None, handle: JobHandle) -> None:
        while when is not None and self._clock() < when:
            handle.raise_if_cancelled()
            await self._sleep(min(1.0, (when - self._clock()).total_seconds()))

    # -- state changes and statistics --------------------------------------------------------------------

    def submit_state_change(self, vm_id: str, requested: int,
                            index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        """RequestReplicationStateChange[Ex] (96): 7 suspend, 3 resume, 1 cancel IR, 9 cancel resync."""
        operation = operation_for_requested_state(requested)
        target = self._guards.guard(operation, vm_id, index=index)
        rel = _relationship(target)
        new_state = _STATE_TARGETS.get(operation)
        if new_state is None:
            raise NotSupported(f"RequestedState {requested} is not handled on a primary",
                               message_id="NotImplementedYet",
                               method=f"RequestReplicationStateChange({requested})")

        async def work(handle: JobHandle) -> dict[str, str]:
            if operation in (Operation.CANCEL_INITIAL_REPLICATION, Operation.CANCEL_RESYNCHRONIZATION):
                await self._cancel_jobs_of(vm_id, handle.job_id)
            self._runner.update(vm_id, rel.index, state=new_state)
            try:
                await self._peers(rel.settings).set_state(vm_id, int(new_state))
            except (Unavailable, NotFound, InvalidState) as exc:  # the replica mirrors when it can
                log.info("the replica of %s did not mirror state %s: %s", vm_id, int(new_state), exc)
            statistics.refresh_health(self._db, vm_id, rel.index, self._clock())
            return {"ReplicationState": str(int(new_state))}

        return self._submit(JobType.REPLICATE_STATE_CHANGE, target.vm, "Replication state change", work,
                            element=f"{vm_id}:state")

    async def _cancel_jobs_of(self, vm_id: str, own: str) -> None:
        for job in self._jobs.list():
            if job.element_id == vm_id and not job.state.is_terminal and job.job_id != own:
                self._jobs.cancel(job.job_id, True)
                with contextlib.suppress(StandbyError, TimeoutError):
                    await self._jobs.wait(job.job_id, 30.0)

    # -- helpers -------------------------------------------------------------------------------------------

    def _submit(self, job_type: JobType, vm: VirtualMachine, description: str,
                work: Callable[[JobHandle], Awaitable[dict[str, str] | None]], *, cancellable: bool = False,
                element: str | None = None) -> Job:
        return self._jobs.submit(job_type, element_id=element or vm.vm_id,
                                 description=f"{description}: {vm.name}", work=work, cancellable=cancellable)

    def _set_mode(self, vm_id: str, mode: ReplicationMode) -> None:
        vm = self._db.vms.get(vm_id)
        if vm.replication_mode is not mode:
            self._db.vms.update(dc_replace(vm, replication_mode=mode))


_START_KINDS = {
    InitialReplicationType.NETWORK: (JobType.START_INBAND_INITIAL_REPLICATION, CycleKind.INITIAL),
    InitialReplicationType.EXPORT: (JobType.START_EXPORT_INITIAL_REPLICATION, CycleKind.INITIAL),
    InitialReplicationType.SEEDED_NETWORK: (JobType.START_RESYNC_INITIAL_REPLICATION, CycleKind.RESYNC),
}
#: The state each RequestReplicationStateChange leaves a primary relationship in (hyperv-api §4, §9.9).
_STATE_TARGETS = {
    Operation.SUSPEND_REPLICATION: ReplicationState.SUSPENDED,
    Operation.RESUME_REPLICATION: ReplicationState.REPLICATING,
    Operation.CANCEL_INITIAL_REPLICATION: ReplicationState.READY_FOR_REPLICATION,
    Operation.CANCEL_RESYNCHRONIZATION: ReplicationState.WAITING_TO_START_RESYNCHRONIZATION,
}


def _relationship(target: Target) -> Relationship:
    if target.relationship is None:  # the guards admit only existing relationships
        raise NotFound(f"virtual machine {target.vm.vm_id} has no relationship {int(target.index)}",
                       message_id="ObjectNotFound", kind="Relationship", key=target.vm.vm_id)
    return target.relationship


def _field(answer: object, name: str, default: object) -> object:
    if isinstance(answer, dict):
        return answer.get(name, default)
    return getattr(answer, name, default)


def _result(result: CycleResult) -> dict[str, str]:
    return {"Sequence": str(result.sequence), "DirtyBytes": str(result.dirty_bytes),
            "WireBytes": str(result.wire_bytes), "Seconds": f"{result.seconds:.3f}"}
