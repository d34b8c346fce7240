"""The replication use cases by name, and which of them are implemented yet.

Every use case the CIM providers, the REST API and the CLI may call is a member of ``UseCase`` (per-VM and
service methods, spec §3/§4) or ``CollectionUseCase`` (spec §8.1/§8.7); the values are the Hyper-V method
names, used as labels in messages. ``IMPLEMENTED_OPERATIONS`` is the single list of those that work today;
every other one checks its preconditions and then raises ``NotSupported`` with message id
``NotImplementedYet`` (32770), so callers see the right refusal first and "not yet" only when allowed.
"""

from __future__ import annotations

from enum import StrEnum

from standby.domain.errors import NotSupported


class UseCase(StrEnum):
    """Msvm_ReplicationService and Msvm_ComputerSystem replication use cases (spec §3.1, §4)."""

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
    """Msvm_CollectionReplicationService (spec §8.1) and Msvm_CollectionManagementService (§8.7)."""

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
IMPLEMENTED_OPERATIONS: frozenset[UseCase | CollectionUseCase] = frozenset(
    {
        UseCase.MODIFY_SERVICE_SETTINGS,
        UseCase.ADD_AUTHORIZATION_ENTRY,
        UseCase.MODIFY_AUTHORIZATION_ENTRY,
        UseCase.REMOVE_AUTHORIZATION_ENTRY,
        UseCase.SET_AUTHORIZATION_ENTRY,
        UseCase.GET_SYSTEM_CERTIFICATES,
        UseCase.SERVICE_STATE_CHANGE,
        UseCase.START_SERVICE,
        UseCase.STOP_SERVICE,
        UseCase.GET_REPLICATION_STATISTICS,
        UseCase.CREATE_REPLICATION_RELATIONSHIP,
        UseCase.START_REPLICATION,
        UseCase.MODIFY_REPLICATION_SETTINGS,
        UseCase.REMOVE_REPLICATION_RELATIONSHIP,
        UseCase.RESYNCHRONIZE,
        UseCase.RESET_REPLICATION_STATISTICS,
        UseCase.REQUEST_REPLICATION_STATE_CHANGE,
        UseCase.INITIATE_FAILOVER,
        UseCase.REVERT_FAILOVER,
        UseCase.COMMIT_FAILOVER,
        UseCase.TEST_REPLICA_SYSTEM,
        UseCase.SET_FAILOVER_NETWORK_ADAPTER_SETTINGS,
        UseCase.REVERSE_REPLICATION_RELATIONSHIP,
        UseCase.CHANGE_REPLICATION_MODE_TO_PRIMARY,
        CollectionUseCase.DEFINE_COLLECTION,
        CollectionUseCase.ADD_MEMBER,
        CollectionUseCase.REMOVE_MEMBER,
        CollectionUseCase.REMOVE_MEMBER_BY_ID,
        CollectionUseCase.RENAME_COLLECTION,
        CollectionUseCase.DESTROY_COLLECTION,
        # group replication (issue 7): engine/group_replication.py, group_failover.py
        CollectionUseCase.CREATE_REPLICATION_RELATIONSHIP,
        CollectionUseCase.START_REPLICATION,
        CollectionUseCase.MODIFY_REPLICATION_SETTINGS,
        CollectionUseCase.INITIATE_FAILOVER,
        CollectionUseCase.REVERT_FAILOVER,
        CollectionUseCase.COMMIT_FAILOVER,
        CollectionUseCase.INITIATE_PLANNED_FAILOVER,
        CollectionUseCase.REVERT_PLANNED_FAILOVER,
        CollectionUseCase.PREPARE_FOR_REVERSE_REPLICATION,
        CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP,
        CollectionUseCase.REMOVE_REPLICATION_RELATIONSHIP,
        CollectionUseCase.SUSPEND_REPLICATION,
        CollectionUseCase.RESUME_REPLICATION,
        CollectionUseCase.RESYNCHRONIZE,
        CollectionUseCase.TEST_REPLICA_COLLECTION,
        CollectionUseCase.REVERT_TEST_REPLICA_COLLECTION,
        CollectionUseCase.CANCEL_INITIAL_REPLICATION,
        CollectionUseCase.CANCEL_RESYNCHRONIZE,
        CollectionUseCase.CANCEL_UPDATE_DISK_SET,
        CollectionUseCase.GET_REPLICATION_STATISTICS,
        CollectionUseCase.RESET_REPLICATION_STATISTICS,
    }
)


def is_implemented(use_case: UseCase | CollectionUseCase) -> bool:
    """Whether the use case works today (see ``IMPLEMENTED_OPERATIONS``)."""
    return use_case in IMPLEMENTED_OPERATIONS


def not_implemented(use_case: UseCase | CollectionUseCase) -> NotSupported:
    """The error a not-yet-implemented use case raises after its precondition check."""
    return NotSupported(
        f"{use_case.value} is not implemented yet", message_id="NotImplementedYet", method=use_case.value
    )
