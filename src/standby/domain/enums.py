"""Every number of the Hyper-V Replica model, in one place.

The values are the contract with WMI/CIM clients (hyperv-api §2.3, §4, §5, §6, §7, §8); names are Pythonic,
the CIM spelling of each value lives in ``display`` tables of the CIM layer and in the message catalog.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ReplicationState(IntEnum):
    """Relationship ReplicationState (hyperv-api §6.1); the VM property uses 0-14."""

    DISABLED = 0
    READY_FOR_REPLICATION = 1
    WAITING_TO_COMPLETE_INITIAL_REPLICATION = 2
    REPLICATING = 3
    SYNCED_REPLICATION_COMPLETE = 4
    RECOVERED = 5
    COMMITTED = 6
    SUSPENDED = 7
    CRITICAL = 8
    WAITING_TO_START_RESYNCHRONIZATION = 9
    RESYNCHRONIZING = 10
    RESYNCHRONIZATION_SUSPENDED = 11
    FAILOVER_IN_PROGRESS = 12
    FAILBACK_IN_PROGRESS = 13
    FAILBACK_COMPLETE = 14
    DISK_UPDATE_IN_PROGRESS = 15
    DISK_UPDATE_CRITICAL = 16
    UNKNOWN = 17
    REPURPOSE_REPLICATION_IN_PROGRESS = 18
    PREPARED_FOR_SYNC_REPLICATION = 19
    PREPARED_FOR_GROUP_REVERSE_REPLICATION = 20
    FIREDRILL_IN_PROGRESS = 21


class ReplicationHealth(IntEnum):
    """ReplicationHealth (hyperv-api §6.2)."""

    NOT_APPLICABLE = 0
    OK = 1
    WARNING = 2
    CRITICAL = 3


class ReplicationMode(IntEnum):
    """Msvm_ComputerSystem.ReplicationMode (hyperv-api §6.3)."""

    NONE = 0
    PRIMARY = 1
    REPLICA = 2
    TEST_REPLICA = 3
    EXTENDED_REPLICA = 4


class ReplicationType(IntEnum):
    """FailedOverReplicationType / LastReplicationType (hyperv-api §6.4)."""

    NONE = 0
    REGULAR = 1
    APPLICATION_CONSISTENT = 2
    PLANNED = 3


class CollectionReplicationType(IntEnum):
    """Msvm_VirtualSystemCollection.FailedOverReplicationType (hyperv-api §6.4, collection variant)."""

    NONE = 0
    REGULAR = 1
    PLANNED = 2


class InitialReplicationType(IntEnum):
    """StartReplication.InitialReplicationType (hyperv-api §6.5)."""

    NETWORK = 1
    EXPORT = 2
    SEEDED_NETWORK = 3


class AuthenticationType(IntEnum):
    """Msvm_ReplicationSettingData.AuthenticationType (hyperv-api §6.6)."""

    KERBEROS = 1
    CERTIFICATE = 2


class AllowedAuthenticationType(IntEnum):
    """Msvm_ReplicationServiceSettingData.AllowedAuthenticationType (hyperv-api §5.2)."""

    NOT_DEFINED = 0
    KERBEROS = 1
    CERTIFICATE = 2
    CERTIFICATE_AND_KERBEROS = 3


class RelationshipIndex(IntEnum):
    """The suffix of a relationship InstanceID: ``…\\HVR\\0`` primary, ``…\\HVR\\1`` extended (hyperv-api
    §6.7)."""

    PRIMARY = 0
    EXTENDED = 1


class EnabledState(IntEnum):
    """CIM_EnabledLogicalElement.EnabledState as Msvm_ComputerSystem uses it (hyperv-api §5.8)."""

    UNKNOWN = 0
    OTHER = 1
    ENABLED = 2
    DISABLED = 3
    SHUTTING_DOWN = 4
    NOT_APPLICABLE = 5
    ENABLED_BUT_OFFLINE = 6
    IN_TEST = 7
    DEFERRED = 8
    QUIESCE = 9
    STARTING = 10


class RequestedVmState(IntEnum):
    """Msvm_ComputerSystem.RequestStateChange RequestedState values standby accepts (hyperv-api §5.8)."""

    ENABLED = 2  # start
    DISABLED = 3  # hard power-off
    SHUT_DOWN = 4  # graceful shutdown (ACPI / guest agent)
    OFFLINE = 6  # save: not supported by standby
    QUIESCE = 9  # pause
    RESET = 11


class JobState(IntEnum):
    """CIM_ConcreteJob.JobState with Hyper-V's vendor value (hyperv-api §7)."""

    NEW = 2
    STARTING = 3
    RUNNING = 4
    SUSPENDED = 5
    SHUTTING_DOWN = 6
    COMPLETED = 7
    TERMINATED = 8
    KILLED = 9
    EXCEPTION = 10
    SERVICE = 11
    QUERY_PENDING = 12
    COMPLETED_WITH_WARNINGS = 32768

    @property
    def is_terminal(self) -> bool:
        """A job in this state will not change again (os-win's terminal set)."""
        return self in _TERMINAL_JOB_STATES


_TERMINAL_JOB_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.TERMINATED,
        JobState.KILLED,
        JobState.EXCEPTION,
        JobState.COMPLETED_WITH_WARNINGS,
    }
)


class JobType(IntEnum):
    """Msvm_ConcreteJob.JobType values standby uses (hyperv-api §7)."""

    DEFINE_VM = 1
    MODIFY_VM = 2
    DESTROY_VM = 3
    START_VM = 12
    POWER_OFF_VM = 13
    MODIFY_REPLICATION_SERVER_SETTINGS = 90
    CREATE_REPLICATION_RELATIONSHIP = 91
    MODIFY_REPLICATION_RELATIONSHIP_SETTINGS = 92
    REMOVE_REPLICATION_RELATIONSHIP = 93
    START_INBAND_INITIAL_REPLICATION = 94
    IMPORT_REPLICATION = 95
    REPLICATE_STATE_CHANGE = 96
    INITIATE_FAILOVER = 97
    REVERT_FAILOVER = 98
    COMMIT_FAILOVER = 99
    INITIATE_SYNCED_REPLICATION = 100
    CANCEL_SYNCED_REPLICATION = 101
    INITIATE_TEST_REPLICA = 102
    REMOVE_TEST_REPLICA = 103
    REVERSE_REPLICATION = 104
    REPLICATION_SENDING_DELTA = 105
    REPLICATION_RECEIVING_DELTA = 106
    RESYNCHRONIZING = 107
    APPLY_CHANGE_LOG = 108
    STOP_INITIAL_REPLICATION = 109
    STOP_RESYNCHRONIZING = 110
    GET_REPLICA_STATISTICS = 111
    PREPARE_FOR_CONSISTENCY_CHECKER = 112
    CONSISTENCY_CHECKER = 113
    STOP_CONSISTENCY_CHECKER = 114
    TEST_REPLICATION_CONNECTION = 115
    SENDING_INITIAL_REPLICA = 116
    START_RESYNC_INITIAL_REPLICATION = 117
    START_EXPORT_INITIAL_REPLICATION = 118
    RESET_REPLICA_STATISTICS = 119
    APPLY_REGISTERED_DELTAS = 120
    RESYNCHRONIZING_EXTENDED_REPLICATION = 121
    READING_TEST_REPLICA_CONFIGURATION = 122
    CHANGE_REPLICATION_MODE_TO_PRIMARY = 123
    INITIATE_FAILBACK = 124
    UPDATE_DISK_SET = 125
    DEFINE_COLLECTION = 190
    DESTROY_COLLECTION = 191
    RENAME_COLLECTION = 192
    ADD_MEMBER_TO_COLLECTION = 193
    REMOVE_MEMBER_FROM_COLLECTION = 194
    ADD_SETTING_TO_COLLECTION = 195
    REMOVE_SETTING_FROM_COLLECTION = 196
    MODIFY_SETTING_ON_COLLECTION = 197
    SNAPSHOT_COLLECTION = 198
    REFERENCE_POINT_199 = 199
    REFERENCE_POINT_200 = 200
    REFERENCE_POINT_201 = 201
    REFERENCE_POINT_202 = 202
    REFERENCE_POINT_203 = 203
    REFERENCE_POINT_204 = 204
    REFERENCE_POINT_205 = 205
    REFERENCE_POINT_206 = 206
    REFERENCE_POINT_207 = 207
    REFERENCE_POINT_208 = 208
    REFERENCE_POINT_209 = 209


class ReturnCode(IntEnum):
    """The standard method return codes (hyperv-api §2.3)."""

    COMPLETED = 0
    JOB_STARTED = 4096
    FAILED = 32768
    ACCESS_DENIED = 32769
    NOT_SUPPORTED = 32770
    STATUS_UNKNOWN = 32771
    TIMEOUT = 32772
    INVALID_PARAMETER = 32773
    SYSTEM_IN_USE = 32774
    INVALID_STATE = 32775
    INCORRECT_DATA_TYPE = 32776
    SYSTEM_NOT_AVAILABLE = 32777
    OUT_OF_MEMORY = 32778
    FILE_NOT_FOUND = 32779


class StateChangeCode(IntEnum):
    """CIM RequestStateChange return codes (jobs, CIM_EnabledLogicalElement; hyperv-api §2.3)."""

    COMPLETED = 0
    NOT_SUPPORTED = 1
    UNKNOWN_ERROR = 2
    TIMEOUT = 3
    FAILED = 4
    INVALID_PARAMETER = 5
    IN_USE = 6
    TRANSITION_STARTED = 4096
    INVALID_STATE_TRANSITION = 4097
    TIMEOUT_PARAMETER_NOT_SUPPORTED = 4098
    BUSY = 4099


class JobRequestedState(IntEnum):
    """Msvm_ConcreteJob.RequestStateChange RequestedState (hyperv-api §7)."""

    START = 2
    SUSPEND = 3
    TERMINATE = 4
    KILL = 5
    SERVICE = 6


class FailoverCode(IntEnum):
    """Msvm_RedundancySet.Failover return values (seed 000, hyperv-api §8.8)."""

    COMPLETED = 0
    NOT_SUPPORTED = 1
    UNKNOWN_ERROR = 2
    BUSY = 3
    PARAMETER_ERROR = 4


class RedundancyStatus(IntEnum):
    """CIM_RedundancySet.RedundancyStatus (hyperv-api §8.8)."""

    UNKNOWN = 0
    DMTF_RESERVED = 1
    FULLY_REDUNDANT = 2
    DEGRADED_REDUNDANCY = 3
    REDUNDANCY_LOST = 4
    OVERALL_FAILURE = 5


class TypeOfSet(IntEnum):
    """CIM_RedundancySet.TypeOfSet (hyperv-api §8.8)."""

    UNKNOWN = 0
    OTHER = 1
    N_PLUS_1 = 2
    LOAD_BALANCED = 3
    SPARING = 4
    LIMITED_SPARING = 5


class ConsistencyLevel(IntEnum):
    """Msvm_CollectionRecoveryPoint.ConsistencyLevel (hyperv-api §8.3)."""

    UNKNOWN = 0
    APPLICATION_CONSISTENT = 1
    CRASH_CONSISTENT = 2
    GROUP_CRASH_CONSISTENT = 3


class CollectionReplicationState(IntEnum):
    """Msvm_VirtualSystemCollection.ReplicationState (hyperv-api §8.5; 11-16 as the spec's best reading)."""

    DISABLED = 0
    READY_FOR_REPLICATION = 1
    WAITING_TO_COMPLETE_INITIAL_REPLICATION = 2
    REPLICATING = 3
    FAILOVER_INITIATED = 4
    # 5-10 mean for a collection what they mean for each member's relationship.
    RECOVERED = int(ReplicationState.RECOVERED)
    COMMITTED = int(ReplicationState.COMMITTED)
    SUSPENDED = int(ReplicationState.SUSPENDED)
    CRITICAL = int(ReplicationState.CRITICAL)
    WAITING_TO_START_RESYNCHRONIZATION = int(ReplicationState.WAITING_TO_START_RESYNCHRONIZATION)
    RESYNCHRONIZING = int(ReplicationState.RESYNCHRONIZING)
    PLANNED_FAILOVER_INITIATED = 11
    REPURPOSE_INITIATED = 12
    TEST_FAILOVER_INITIATED = 13
    PARTIALLY_ENABLED = 14
    PARTIALLY_DISABLED = 15
    PARTIALLY_RECOVERED = 16


class CollectionType(IntEnum):
    """DefineCollection Type (hyperv-api §8.7)."""

    VIRTUAL_SYSTEMS = 0
    COLLECTIONS = 1


class FailoverIndicationType(IntEnum):
    """Msvm_FailoverIndication.FailoverType (hyperv-api §8.9)."""

    UNKNOWN = 0
    OTHER = 1
    UNPLANNED = 2


class PerceivedSeverity(IntEnum):
    """CIM_Error / indication PerceivedSeverity (hyperv-api §8.9)."""

    UNKNOWN = 0
    OTHER = 1
    INFORMATION = 2
    DEGRADED_WARNING = 3
    MINOR = 4
    MAJOR = 5
    CRITICAL = 6
    FATAL = 7


class ProtocolIFType(IntEnum):
    """Msvm_FailoverNetworkAdapterSettingData.ProtocolIFType (hyperv-api §5.7)."""

    UNKNOWN = 0
    OTHER = 1
    IPV4 = 4096
    IPV6 = 4097
    IPV4_IPV6 = 4098


class VirtualSystemType(StrEnum):
    """Msvm_VirtualSystemSettingData.VirtualSystemType strings (hyperv-api §5.9)."""

    REALIZED = "Microsoft:Hyper-V:System:Realized"
    SNAPSHOT_REALIZED = "Microsoft:Hyper-V:Snapshot:Realized"
    SNAPSHOT_RECOVERY = "Microsoft:Hyper-V:Snapshot:Recovery"
    SNAPSHOT_PLANNED = "Microsoft:Hyper-V:Snapshot:Planned"
    SNAPSHOT_MISSING = "Microsoft:Hyper-V:Snapshot:Missing"
    REPLICA_STANDARD = "Microsoft:Hyper-V:Snapshot:Replica:Standard"
    REPLICA_APPLICATION_CONSISTENT = "Microsoft:Hyper-V:Snapshot:Replica:ApplicationConsistent"
    REPLICA_PLANNED_FAILOVER = "Microsoft:Hyper-V:Snapshot:Replica:PlannedFailover"

    @property
    def is_recovery_point(self) -> bool:
        """Whether a failover may target a snapshot of this type (hyperv-api §5.9: Replica:* only)."""
        return self.value.startswith("Microsoft:Hyper-V:Snapshot:Replica:")


#: The only ReplicationInterval values Hyper-V accepts; standby also accepts 1..29 s as its extension.
HYPERV_REPLICATION_INTERVALS = (30, 300, 900)
#: Hyper-V's RecoveryHistory ceiling per VM and per collection; standby extends both to 720.
HYPERV_MAX_RECOVERY_HISTORY = 24
HYPERV_MAX_COLLECTION_RECOVERY_HISTORY = 16
STANDBY_MAX_RECOVERY_HISTORY = 720
#: The built-in host-to-host replication provider's GUID (hyperv-api §5.6).
BUILTIN_REPLICATION_PROVIDER_ID = "22391CDC-272C-4DDF-BA88-9BEFB1A0975C"
