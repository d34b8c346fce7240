"""The replication use cases by name, and which of them are implemented yet.

Every use case the CIM providers, the REST API and the CLI may call is a member of ``UseCase`` (per-VM and
service methods, hyperv-api §3/§4) or ``CollectionUseCase`` (hyperv-api §8.1/§8.7); the values are the
Hyper-V method names, used as labels in messages.
"""

from __future__ import annotations

from enum import StrEnum

from standby.domain.errors import NotSupported


class UseCase(StrEnum):
    """Msvm_ReplicationService and Msvm_ComputerSystem replication use cases (hyperv-api §3.1, §4)."""

    ADD_AUTHORIZATION_ENTRY = "AddAuthorizationEntry"
    CHANGE_REPLICATION_MODE_TO_PRIMARY = "ChangeReplicationModeToPrimary"
    COMMIT_FAILOVER = "CommitFailover"
    CREATE_REPLICATION_RELATIONSHIP = "CreateReplicationRelationship"
    GET_REPLICATION_STATISTICS = "GetReplicationStatistics"
    GET_SYSTEM_CERTIFICATES = "GetSystemCertificates"
    IMPORT_INITIAL_REPLICA = "ImportInitialReplica"
    INITIATE_FAILBACK = "InitiateFailback"
    INITIATE_FAILOVER = "InitiateFailover"
    MODIFY_AUTHORIZATION_ENTRY = "ModifyAuthorizationEntry"
    MODIFY_REPLICATION_SETTINGS = "ModifyReplicationSettings"
    MODIFY_SERVICE_SETTINGS = "ModifyServiceSettings"
    REMOVE_AUTHORIZATION_ENTRY = "RemoveAuthorizationEntry"
    REMOVE_REPLICATION_RELATIONSHIP = "RemoveReplicationRelationship"
    RESET_REPLICATION_STATISTICS = "ResetReplicationStatistics"
    RESYNCHRONIZE = "Resynchronize"
    REVERSE_REPLICATION_RELATIONSHIP = "ReverseReplicationRelationship"
    REVERT_FAILOVER = "RevertFailover"
    SET_AUTHORIZATION_ENTRY = "SetAuthorizationEntry"
    SET_FAILOVER_NETWORK_ADAPTER_SETTINGS = "SetFailoverNetworkAdapterSettings"
    START_REPLICATION = "StartReplication"
    TEST_REPLICA_SYSTEM = "TestReplicaSystem"
    TEST_REPLICATION_CONNECTION = "TestReplicationConnection"
    SERVICE_STATE_CHANGE = "RequestStateChange"
    START_SERVICE = "StartService"
    STOP_SERVICE = "StopService"
    REQUEST_REPLICATION_STATE_CHANGE = "RequestReplicationStateChange"


class CollectionUseCase(StrEnum):
    """Msvm_CollectionReplicationService (hyperv-api §8.1) and Msvm_CollectionManagementService (§8.7)."""

    CREATE_REPLICATION_RELATIONSHIP = "CreateReplicationRelationship"
    START_REPLICATION = "StartReplication"
    MODIFY_REPLICATION_SETTINGS = "ModifyReplicationSettings"
    INITIATE_FAILOVER = "InitiateFailover"
    REVERT_FAILOVER = "RevertFailover"
    COMMIT_FAILOVER = "CommitFailover"
    INITIATE_PLANNED_FAILOVER = "InitiatePlannedFailover"
    REVERT_PLANNED_FAILOVER = "RevertPlannedFailover"
    PREPARE_FOR_REVERSE_REPLICATION = "PrepareForReverseReplication"
    REVERSE_REPLICATION_RELATIONSHIP = "ReverseReplicationRelationship"
    REMOVE_REPLICATION_RELATIONSHIP = "RemoveReplicationRelationship"
    SUSPEND_REPLICATION = "SuspendReplication"
    RESUME_REPLICATION = "ResumeReplication"
    RESYNCHRONIZE = "Resynchronize"
    TEST_REPLICA_COLLECTION = "TestReplicaCollection"
    REVERT_TEST_REPLICA_COLLECTION = "RevertTestReplicaCollection"
    CANCEL_INITIAL_REPLICATION = "CancelInitialReplication"
    CANCEL_RESYNCHRONIZE = "CancelResynchronize"
    CANCEL_UPDATE_DISK_SET = "CancelUpdateDiskSet"
    GET_REPLICATION_STATISTICS = "GetReplicationStatistics"
    RESET_REPLICATION_STATISTICS = "ResetReplicationStatistics"
    DEFINE_COLLECTION = "DefineCollection"
    ADD_MEMBER = "AddMember"
    REMOVE_MEMBER = "RemoveMember"
    REMOVE_MEMBER_BY_ID = "RemoveMemberById"
    RENAME_COLLECTION = "RenameCollection"
    DESTROY_COLLECTION = "DestroyCollection"


#: The use cases that work today; every other one answers 32770 after its precondition check.
def not_implemented(use_case: UseCase | CollectionUseCase) -> NotSupported:
    """The error of a use case this host cannot carry out, raised after its precondition check."""
    return NotSupported(
        f"{use_case.value} cannot be carried out on this host", message_id="NotImplementedYet",
        method=use_case.value)
