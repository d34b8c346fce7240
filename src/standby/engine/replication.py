"""The per-VM replication use cases (spec §3, §4): guards first, then the operation.

``ReplicationUseCases`` is the one facade the CIM providers, the REST API and the CLI call. Each guarded use
case loads the VM and the relationship it targets from the store, builds ``PreconditionFacts`` and calls
``domain.preconditions.require`` — so a refusal (32775 wrong state, 32774 a job runs, 32773 bad recovery
point) is always the table's verdict. Use cases of later issues then raise ``NotSupported`` (32770,
``NotImplementedYet``); ``IMPLEMENTED_OPERATIONS`` (``engine/operations.py``) lists the ones that work.

Facts derived from the store (choices where the entities carry no explicit flag):
- ``replication_received``: the targeted relationship has a ``last_replication_time``;
- ``initial_replication_complete``: the same (a replica has received at least one replication);
- ``test_system_exists``: a VM in mode Test Replica named ``"<replica name> - Test"`` exists;
- ``point_valid``: the named recovery point belongs to the VM, or (no point named) the VM has one;
- the targeted relationship: the ``…\\HVR\\<n>`` of an embedded relationship when one is passed; else the
  extended one for StartReplication / Resynchronize / ModifyReplicationSettings / Create on a replica VM
  (spec §9.8), the primary one otherwise.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from standby.domain.entities import (
    AuthorizationEntry,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import EnabledState, RelationshipIndex, ReplicationHealth, ReplicationMode
from standby.domain.errors import FileNotFound, InvalidParameter, NotFound
from standby.domain.preconditions import Operation, PreconditionFacts, operation_for_requested_state, require
from standby.domain.settings import validate_service_settings
from standby.engine.operations import IMPLEMENTED_OPERATIONS, UseCase, not_implemented
from standby.store.sqlite import Database

__all__ = ["IMPLEMENTED_OPERATIONS", "ReplicationUseCases", "StatisticsReport", "UseCase"]

Clock = Callable[[], datetime]
_RELATIONSHIP_ID = re.compile(r"^Microsoft:(?P<vm>[^\\]+)\\HVR(?:\\(?P<index>\d+))?$", re.IGNORECASE)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----(?P<body>.*?)-----END CERTIFICATE-----", re.DOTALL)
#: Operations that act on the extended relationship when called on a replica VM (spec §9.8).
_EXTENDED_ON_REPLICA = frozenset(
    {Operation.START_REPLICATION, Operation.RESYNCHRONIZE, Operation.MODIFY_REPLICATION_SETTINGS}
)
_WITH_RECOVERY_POINT = frozenset({Operation.INITIATE_FAILOVER, Operation.TEST_REPLICA_SYSTEM})


@dataclass(frozen=True, slots=True)
class HealthIssue:
    """One replication health issue (an ``Msvm_Error`` on the CIM surface)."""

    message_id: str
    message: str
    severity: int  # CIM PerceivedSeverity: 3 warning, 6 critical


@dataclass(frozen=True, slots=True)
class StatisticsReport:
    """Replication statistics of one relationship over the current monitoring window (spec §5.5)."""

    vm_id: str
    index: RelationshipIndex
    start: datetime
    end: datetime
    health: ReplicationHealth
    success_count: int = 0
    size_bytes: int = 0
    max_size_bytes: int = 0
    latency_seconds: int = 0
    max_latency_seconds: int = 0
    miss_count: int = 0
    network_failure_count: int = 0
    failure_count: int = 0
    pending_bytes: int = 0
    app_consistent_failure_count: int = 0
    last_test_failover_time: datetime | None = None
    issues: tuple[HealthIssue, ...] = ()


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

    def __init__(self, db: Database, clock: Clock, *, certificate_path: Path | None = None) -> None:
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
            # The rule looks at the failed-over primary relationship (spec §10).
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

    # -- per-VM use cases of later issues: guard, then "not implemented yet" ---------------------------------

    def _later(self, use_case: UseCase, operation: Operation, vm_id: str, **kwargs: object) -> None:
        index = kwargs.get("index")
        point = kwargs.get("point_id")
        self.guard(operation, vm_id, index=index if isinstance(index, RelationshipIndex) else None,
                   point_id=point if isinstance(point, str) else None)
        if use_case not in IMPLEMENTED_OPERATIONS:
            raise not_implemented(use_case)

    def create_relationship(self, vm_id: str, settings: ReplicationSettings) -> None:
        """Enable replication (primary on a plain VM, extended on a replica VM)."""
        vm = self._db.vms.get(vm_id)
        extended = vm.replication_mode == ReplicationMode.REPLICA
        operation = Operation.CREATE_EXTENDED_RELATIONSHIP if extended else Operation.CREATE_RELATIONSHIP
        self._later(UseCase.CREATE_REPLICATION_RELATIONSHIP, operation, vm_id)

    def start_replication(self, vm_id: str, initial_type: int, export_location: str | None,
                          start_time: datetime | None) -> None:
        """Start initial replication."""
        self._later(UseCase.START_REPLICATION, Operation.START_REPLICATION, vm_id)

    def import_initial_replica(self, vm_id: str, location: str) -> None:
        """Import exported initial replication data on the replica."""
        if not location:
            raise InvalidParameter("InitialReplicationImportLocation must name a folder",
                                   message_id="ImportLocationMissing")
        self._later(UseCase.IMPORT_INITIAL_REPLICA, Operation.IMPORT_INITIAL_REPLICA, vm_id)

    def initiate_failover(self, vm_id: str, point_id: str | None) -> None:
        """Fail over to a recovery point (None = the latest)."""
        self._later(UseCase.INITIATE_FAILOVER, Operation.INITIATE_FAILOVER, vm_id, point_id=point_id)

    def test_replica_system(self, vm_id: str, point_id: str | None) -> None:
        """Create a test VM from a recovery point (None = the latest)."""
        self._later(UseCase.TEST_REPLICA_SYSTEM, Operation.TEST_REPLICA_SYSTEM, vm_id, point_id=point_id)

    def revert_failover(self, vm_id: str) -> None:
        """Undo a failover (or a prepared planned failover on a primary)."""
        self._later(UseCase.REVERT_FAILOVER, Operation.REVERT_FAILOVER, vm_id)

    def commit_failover(self, vm_id: str) -> None:
        """Make a failover permanent."""
        self._later(UseCase.COMMIT_FAILOVER, Operation.COMMIT_FAILOVER, vm_id)

    def reverse_replication(self, vm_id: str, settings: ReplicationSettings) -> None:
        """Reverse replication of a failed-over VM."""
        self._later(UseCase.REVERSE_REPLICATION_RELATIONSHIP, Operation.REVERSE_REPLICATION, vm_id)

    def change_mode_to_primary(self, vm_id: str, index: RelationshipIndex) -> None:
        """Turn a committed replica's extended relationship into its primary one."""
        self._later(UseCase.CHANGE_REPLICATION_MODE_TO_PRIMARY, Operation.CHANGE_MODE_TO_PRIMARY, vm_id,
                    index=index)

    def remove_relationship(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> None:
        """Remove a relationship."""
        self._later(UseCase.REMOVE_REPLICATION_RELATIONSHIP, Operation.REMOVE_RELATIONSHIP, vm_id,
                    index=index)

    def modify_replication_settings(self, vm_id: str, settings: ReplicationSettings) -> None:
        """Change the settings of a relationship (the extended one on a replica VM)."""
        self._later(UseCase.MODIFY_REPLICATION_SETTINGS, Operation.MODIFY_REPLICATION_SETTINGS, vm_id)

    def resynchronize(self, vm_id: str, start_time: datetime | None) -> None:
        """Resynchronize a relationship."""
        self._later(UseCase.RESYNCHRONIZE, Operation.RESYNCHRONIZE, vm_id)

    def set_failover_network_settings(self, vm_id: str, count: int) -> None:
        """Store the IP settings the guest gets after a failover."""
        self._later(UseCase.SET_FAILOVER_NETWORK_ADAPTER_SETTINGS, Operation.SET_FAILOVER_NETWORK_SETTINGS,
                    vm_id)

    def reset_statistics(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> None:
        """Clear the statistics of a relationship."""
        self._later(UseCase.RESET_REPLICATION_STATISTICS, Operation.RESET_REPLICATION_STATISTICS, vm_id,
                    index=index)

    def initiate_failback(self, vm_id: str, point_identifier: str | None) -> None:
        """Provider-driven failback of a recovery VM."""
        self._later(UseCase.INITIATE_FAILBACK, Operation.INITIATE_FAILBACK, vm_id)

    def request_state_change(self, vm_id: str, requested_state: int,
                             index: RelationshipIndex = RelationshipIndex.PRIMARY) -> None:
        """RequestReplicationStateChange[Ex]: 1 cancel IR, 2 as replica, 3 resume, 4 prepare, 7 suspend, 9."""
        operation = operation_for_requested_state(requested_state)
        self._later(UseCase.REQUEST_REPLICATION_STATE_CHANGE, operation, vm_id, index=index)

    # -- implemented: statistics ----------------------------------------------------------------------------

    def replication_statistics(
        self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY
    ) -> StatisticsReport:
        """Statistics of a relationship over the current monitoring window (counters start at zero)."""
        target = self.guard(Operation.GET_REPLICATION_STATISTICS, vm_id, index=index)
        relationship = target.relationship
        if relationship is None:  # the guard admits only existing relationships; keep mypy honest
            raise NotFound(f"virtual machine {vm_id} has no relationship {int(index)}",
                           message_id="ObjectNotFound", kind="Relationship", key=f"{vm_id}/{int(index)}")
        start, end = monitoring_window(self._db.service_settings.get(), self._clock())
        return StatisticsReport(vm_id, index, start, end, relationship.health,
                                issues=_health_issues(relationship))

    # -- implemented: the replication service -------------------------------------------------------------

    def service_settings(self) -> ServiceSettings:
        """The replication service settings of this host."""
        return self._db.service_settings.get()

    def modify_service_settings(self, settings: ServiceSettings) -> ServiceSettings:
        """Validate and store new service settings (spec §5.2)."""
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


def monitoring_window(settings: ServiceSettings, now: datetime) -> tuple[datetime, datetime]:
    """The statistics window holding ``now``: it starts at MonitoringStartTime and lasts the interval."""
    interval = timedelta(seconds=max(settings.monitoring_interval_seconds, 1))
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = start_of_day + timedelta(hours=settings.monitoring_start_time.hour,
                                      minutes=settings.monitoring_start_time.minute)
    if anchor > now:
        anchor -= timedelta(days=1)
    start = anchor + interval * ((now - anchor) // interval)
    return start, start + interval


def _health_issues(relationship: Relationship) -> tuple[HealthIssue, ...]:
    if relationship.health == ReplicationHealth.CRITICAL:
        return (HealthIssue("ReplicationHealthCritical",
                            f"Replication of {relationship.instance_id} is critical "
                            f"(state {int(relationship.state)})", 6),)
    if relationship.health == ReplicationHealth.WARNING:
        return (HealthIssue("ReplicationHealthWarning",
                            f"Replication of {relationship.instance_id} needs attention "
                            f"(state {int(relationship.state)})", 3),)
    return ()


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

