"""The things standby manages, as immutable values.

Entities are plain frozen dataclasses: the store persists them, the engine derives new ones with
``dataclasses.replace`` and writes them back with compare-and-swap on ``version``. Times are aware UTC
``datetime`` values. CIM keys (``InstanceID``, ``Name``) are derived here so every surface spells them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from standby.domain.enums import (
    AllowedAuthenticationType,
    AuthenticationType,
    CollectionReplicationState,
    CollectionReplicationType,
    ConsistencyLevel,
    EnabledState,
    JobState,
    JobType,
    RedundancyStatus,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
    TypeOfSet,
    VirtualSystemType,
)

#: Hyper-V's default TimeBeforeRemoval for finished jobs (hyperv-api §7).
DEFAULT_TIME_BEFORE_REMOVAL = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Host:
    """One machine running the standby daemon."""

    host_id: str
    name: str
    fqdn: str


@dataclass(frozen=True, slots=True)
class Disk:
    """A virtual disk: one qcow2 image on virtio-blk; ``disk_id`` also names its QEMU nodes."""

    disk_id: str
    path: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Nic:
    """A virtual NIC. ``network`` is ``user``, ``bridge:<name>``, ``isolated:<name>`` or ``none``."""

    nic_id: str
    mac: str
    network: str = "user"


@dataclass(frozen=True, slots=True)
class VirtualMachine:
    """A QEMU/KVM virtual machine (``Msvm_ComputerSystem``); ``vm_id`` is the upper-case VM GUID."""

    vm_id: str
    name: str
    memory_mib: int
    cpus: int
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    enabled_state: EnabledState = EnabledState.DISABLED
    replication_mode: ReplicationMode = ReplicationMode.NONE
    locked_from_start: bool = False
    created_at: datetime | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """``Msvm_ReplicationSettingData`` in Python words (hyperv-api §5.1); our extensions are marked."""

    recovery_connection_point: str = ""
    recovery_port: int = 0
    primary_connection_point: str = ""
    authentication_type: AuthenticationType = AuthenticationType.CERTIFICATE
    certificate_thumbprint: str = ""
    compression_enabled: bool = True
    bypass_proxy_server: bool = False
    replicate_host_kvp_items: bool = True
    interval_seconds: int = 300
    recovery_history: int = 0
    app_consistent_interval_hours: int = 0
    included_disks: tuple[str, ...] = ()
    auto_resynchronize_enabled: bool = False
    auto_resynchronize_start: time = time(18, 30)
    auto_resynchronize_end: time = time(6, 0)
    #: Extension: bytes/s ceiling per time-of-day window, ``((start, end, bytes_per_s), ...)``; empty = none.
    bandwidth_schedule: tuple[tuple[time, time, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Relationship:
    """``Msvm_ReplicationRelationship``: one replication direction of one VM (hyperv-api §5.4)."""

    vm_id: str
    index: RelationshipIndex
    state: ReplicationState
    health: ReplicationHealth = ReplicationHealth.NOT_APPLICABLE
    settings: ReplicationSettings = field(default_factory=ReplicationSettings)
    failed_over_type: ReplicationType = ReplicationType.NONE
    last_replication_type: ReplicationType = ReplicationType.NONE
    last_replication_time: datetime | None = None
    last_apply_time: datetime | None = None
    last_app_consistent_time: datetime | None = None
    #: The state to go back to when a failover is reverted.
    state_before_failover: ReplicationState | None = None
    #: A use case writes its intent here before side effects; start-up recovery settles what it finds.
    intent: str | None = None
    sequence: int = 0
    version: int = 0

    @property
    def instance_id(self) -> str:
        """``Microsoft:<VMGUID>\\HVR\\<index>`` as Hyper-V spells it."""
        return f"Microsoft:{self.vm_id}\\HVR\\{int(self.index)}"


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """A retained, bootable state of a replica (a ``…Snapshot:Replica:*`` VSSD, hyperv-api §5.9)."""

    point_id: str
    vm_id: str
    sequence: int
    created_at: datetime
    kind: VirtualSystemType
    images: tuple[tuple[str, str], ...] = ()  # (disk_id, qcow2 path) of this point's top images
    parent_id: str | None = None
    collection_point_id: str | None = None

    @property
    def instance_id(self) -> str:
        """The VSSD ``InstanceID`` of this point."""
        return f"Microsoft:{self.point_id}"


@dataclass(frozen=True, slots=True)
class Collection:
    """``Msvm_VirtualSystemCollection``: VMs replicated with one consistent cut (hyperv-api §8.5)."""

    collection_id: str
    name: str
    member_vm_ids: tuple[str, ...] = ()
    replication_mode: ReplicationMode = ReplicationMode.NONE
    replication_state: CollectionReplicationState = CollectionReplicationState.DISABLED
    failed_over_type: CollectionReplicationType = CollectionReplicationType.NONE
    last_apply_time: datetime | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class CollectionRecoveryPoint:
    """``Msvm_CollectionRecoveryPoint``: one group cut, applied on every member (hyperv-api §8.3)."""

    point_id: str
    collection_id: str
    created_at: datetime
    consistency: ConsistencyLevel
    members: tuple[tuple[str, str], ...] = ()  # (vm_id, recovery point id), parallel arrays in CIM
    pause_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RedundancySet:
    """``Msvm_RedundancySet``: interchangeable elements with one active member (hyperv-api §8.8)."""

    set_id: str
    name: str
    type_of_set: TypeOfSet
    status: RedundancyStatus
    member_ids: tuple[str, ...] = ()
    active_member_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuthorizationEntry:
    """``Msvm_ReplicationAuthorizationSettingData`` (hyperv-api §5.3)."""

    allowed_primary_host: str
    trust_group: str
    storage_location: str


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``Msvm_ReplicationServiceSettingData`` (hyperv-api §5.2)."""

    recovery_server_enabled: bool = False
    allowed_authentication_type: AllowedAuthenticationType = AllowedAuthenticationType.NOT_DEFINED
    certificate_thumbprint: str = ""
    http_port: int = 80
    https_port: int = 443
    monitoring_start_time: time = time(9, 0)
    monitoring_interval_seconds: int = 43200


@dataclass(frozen=True, slots=True)
class Job:
    """``Msvm_ConcreteJob``: a long operation and its outcome (hyperv-api §7)."""

    job_id: str
    job_type: JobType
    state: JobState
    submitted_at: datetime
    description: str = ""
    #: What the job works on (a VM GUID, collection id, "service"); one running job per element.
    element_id: str | None = None
    percent_complete: int = 0
    error_code: int = 0
    #: Catalog id and arguments of the error, so each surface can render it in the caller's language.
    error_message_id: str | None = None
    error_args: tuple[tuple[str, str], ...] = ()
    error_description: str = ""
    error_summary: str = ""
    cancellable: bool = False
    delete_on_completion: bool = True
    time_before_removal: timedelta = DEFAULT_TIME_BEFORE_REMOVAL
    started_at: datetime | None = None
    state_changed_at: datetime | None = None
    finished_at: datetime | None = None
    owner: str = ""
    #: Out values of the operation (e.g. the resulting test VM's GUID), keyed by name.
    result: tuple[tuple[str, str], ...] = ()
    version: int = 0

    @property
    def instance_id(self) -> str:
        """The job's ``InstanceID`` key: its GUID."""
        return self.job_id

    def elapsed(self, now: datetime) -> timedelta:
        """``ElapsedTime``: time since the job started (until it finished)."""
        if self.started_at is None:
            return timedelta(0)
        end = self.finished_at or now
        return max(end - self.started_at, timedelta(0))
