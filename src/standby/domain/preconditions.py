"""Which operation may run in which replication mode and state (hyperv-api §10, §4, §9.7, §9.9, §8.1, §9.10).

The rules are ONE table of data, ``RULES``: one ``Rule`` row per guarded operation. A row lists the
mode/state combinations that allow the operation (``Allowance``), whether a running job on the element blocks
it, and extra named checks (VM off, a replication received, one test VM, ...), each with its own return code.
``check`` evaluates a row against ``PreconditionFacts`` and returns the Hyper-V return code of the first
failure; ``require`` raises the matching ``standby.domain.errors`` exception with a readable message;
``target_state`` says which state an allowed state change leads to.

Order of evaluation (the verdict is the first failure):
1. a job already running on the element → 32774 (the state is transient while it runs);
2. mode / state / targeted relationship → 32775;
3. the row's extra checks, in order → their own code (32775, or 32773 for a bad recovery point).

Facts are about the relationship the call targets: on a replica VM, StartReplication, Resynchronize,
ModifyReplicationSettings and CreateReplicationRelationship act on the extended relationship (``…\\HVR\\1``),
so the caller passes that relationship's state and ``index=EXTENDED`` (hyperv-api §9.8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    ReturnCode,
)
from standby.domain.errors import InUse, InvalidParameter, InvalidState, StandbyError


class Operation(StrEnum):
    """Every guarded operation: per-VM service methods, replication state changes, collection methods."""

    # Msvm_ReplicationService (hyperv-api §3.1)
    CREATE_RELATIONSHIP = "create_relationship"
    CREATE_EXTENDED_RELATIONSHIP = "create_extended_relationship"
    START_REPLICATION = "start_replication"
    IMPORT_INITIAL_REPLICA = "import_initial_replica"
    INITIATE_FAILOVER = "initiate_failover"
    REVERT_FAILOVER = "revert_failover"
    COMMIT_FAILOVER = "commit_failover"
    TEST_REPLICA_SYSTEM = "test_replica_system"
    REVERSE_REPLICATION = "reverse_replication"
    CHANGE_MODE_TO_PRIMARY = "change_mode_to_primary"
    REMOVE_RELATIONSHIP = "remove_relationship"
    MODIFY_REPLICATION_SETTINGS = "modify_replication_settings"
    RESYNCHRONIZE = "resynchronize"
    SET_FAILOVER_NETWORK_SETTINGS = "set_failover_network_settings"
    GET_REPLICATION_STATISTICS = "get_replication_statistics"
    RESET_REPLICATION_STATISTICS = "reset_replication_statistics"
    INITIATE_FAILBACK = "initiate_failback"
    SET_AUTHORIZATION_ENTRY = "set_authorization_entry"
    # Msvm_ComputerSystem.RequestReplicationStateChange[Ex] targets (hyperv-api §4)
    CANCEL_INITIAL_REPLICATION = "cancel_initial_replication"  # 1
    ENABLE_AS_REPLICA = "enable_as_replica"  # 2
    RESUME_REPLICATION = "resume_replication"  # 3
    PREPARE_PLANNED_FAILOVER = "prepare_planned_failover"  # 4
    SUSPEND_REPLICATION = "suspend_replication"  # 7
    CANCEL_RESYNCHRONIZATION = "cancel_resynchronization"  # 9
    # Msvm_CollectionReplicationService (hyperv-api §8.1)
    COLLECTION_CREATE_RELATIONSHIP = "collection_create_relationship"
    COLLECTION_START_REPLICATION = "collection_start_replication"
    COLLECTION_MODIFY_REPLICATION_SETTINGS = "collection_modify_replication_settings"
    COLLECTION_INITIATE_FAILOVER = "collection_initiate_failover"
    COLLECTION_REVERT_FAILOVER = "collection_revert_failover"
    COLLECTION_COMMIT_FAILOVER = "collection_commit_failover"
    COLLECTION_INITIATE_PLANNED_FAILOVER = "collection_initiate_planned_failover"
    COLLECTION_REVERT_PLANNED_FAILOVER = "collection_revert_planned_failover"
    COLLECTION_PREPARE_FOR_REVERSE_REPLICATION = "collection_prepare_for_reverse_replication"
    COLLECTION_REVERSE_REPLICATION = "collection_reverse_replication"
    COLLECTION_REMOVE_RELATIONSHIP = "collection_remove_relationship"
    COLLECTION_SUSPEND_REPLICATION = "collection_suspend_replication"
    COLLECTION_RESUME_REPLICATION = "collection_resume_replication"
    COLLECTION_RESYNCHRONIZE = "collection_resynchronize"
    COLLECTION_TEST_REPLICA = "collection_test_replica"
    COLLECTION_REVERT_TEST_REPLICA = "collection_revert_test_replica"
    COLLECTION_CANCEL_INITIAL_REPLICATION = "collection_cancel_initial_replication"
    COLLECTION_CANCEL_RESYNCHRONIZE = "collection_cancel_resynchronize"
    COLLECTION_CANCEL_UPDATE_DISK_SET = "collection_cancel_update_disk_set"
    COLLECTION_GET_REPLICATION_STATISTICS = "collection_get_replication_statistics"
    COLLECTION_RESET_REPLICATION_STATISTICS = "collection_reset_replication_statistics"

    @property
    def label(self) -> str:
        """English words for messages ("initiate failover", "suspend replication (collection)")."""
        if self.is_collection:
            return self.value.removeprefix("collection_").replace("_", " ") + " (collection)"
        return self.value.replace("_", " ")

    @property
    def is_collection(self) -> bool:
        """Whether the operation acts on a VM collection (hyperv-api §8.1) rather than one VM."""
        return self.value.startswith("collection_")


#: RequestReplicationStateChange[Ex] RequestedState → the operation it asks for (hyperv-api §4).
STATE_CHANGE_OPERATIONS: Mapping[int, Operation] = MappingProxyType(
    {
        1: Operation.CANCEL_INITIAL_REPLICATION,
        2: Operation.ENABLE_AS_REPLICA,
        3: Operation.RESUME_REPLICATION,
        4: Operation.PREPARE_PLANNED_FAILOVER,
        7: Operation.SUSPEND_REPLICATION,
        9: Operation.CANCEL_RESYNCHRONIZATION,
    }
)


def operation_for_requested_state(requested_state: int) -> Operation:
    """The operation a RequestReplicationStateChange value asks for; other values → ``InvalidParameter``.

    Spec §2.3: for this method 32773 means "a parameter value is not supported".
    """
    try:
        return STATE_CHANGE_OPERATIONS[requested_state]
    except KeyError:
        allowed = ", ".join(str(value) for value in STATE_CHANGE_OPERATIONS)
        raise InvalidParameter(
            f"RequestedState {requested_state} is not supported; allowed values are {allowed}",
            message_id="UnsupportedRequestedState",
            value=requested_state,
            allowed=allowed,
        ) from None


@dataclass(frozen=True, slots=True)
class PreconditionFacts:
    """What the rules look at; the engine fills it from the store before each call.

    ``state`` is the ReplicationState of the relationship the call targets (None = that relationship does
    not exist); ``index`` says which relationship that is. For ChangeReplicationModeToPrimary, ``state`` is
    the failed-over primary relationship's state. Collection operations read ``mode`` (the collection's
    ReplicationMode) and ``collection_state``; ``vm_state`` is DISABLED for a collection when every member
    is off.
    """

    mode: ReplicationMode
    state: ReplicationState | None = None
    index: RelationshipIndex = RelationshipIndex.PRIMARY
    vm_state: EnabledState = EnabledState.DISABLED
    #: LastReplicationTime is set: at least one replication reached the replica.
    replication_received: bool = False
    #: Initial replication finished once; decides cancel-IR in 7/8 and where resume leads.
    initial_replication_complete: bool = True
    has_extended_relationship: bool = False
    #: A test VM (or test collection) of this replica exists.
    test_system_exists: bool = False
    #: A non-terminal job already runs on the element (VM or collection).
    job_running: bool = False
    #: The recovery point the call names (None = latest) exists and is a Replica-type point of this element.
    point_valid: bool = True
    #: Where a reverted failover returns to (Relationship.state_before_failover).
    state_before_failover: ReplicationState | None = None
    collection_state: CollectionReplicationState | None = None


Predicate = Callable[[PreconditionFacts], bool]


@dataclass(frozen=True, slots=True)
class Check:
    """A named extra condition of a rule, with the code and message id used when it fails."""

    name: str
    passes: Predicate
    code: ReturnCode
    message_id: str
    requirement: str


@dataclass(frozen=True, slots=True)
class Allowance:
    """One mode/state combination that allows an operation.

    ``states`` None = any state (the relationship must still exist unless the rule says otherwise);
    ``index`` None = either relationship.
    """

    modes: frozenset[ReplicationMode]
    states: frozenset[int] | None = None
    index: RelationshipIndex | None = None

    def admits(self, mode: ReplicationMode, state: int | None, index: RelationshipIndex) -> bool:
        """Whether the mode, state and targeted relationship fit this combination."""
        if mode not in self.modes or (self.index is not None and index != self.index):
            return False
        return self.states is None or (state is not None and state in self.states)


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the precondition table; see the module docstring for the evaluation order."""

    operation: Operation
    allowances: tuple[Allowance, ...]
    checks: tuple[Check, ...] = ()
    #: False for operations that create the relationship (state None is fine).
    needs_relationship: bool = True
    #: False for cancels and read-only calls, which must work while a job runs.
    blocked_by_job: bool = True
    #: Where the spec is [I]/unconfirmed: the choice made and why.
    note: str = ""


# ---------------------------------------------------------------------------------------------------------
# Building blocks of the table
# ---------------------------------------------------------------------------------------------------------

_M = ReplicationMode
_S = ReplicationState
_C = CollectionReplicationState
_I = RelationshipIndex

ANY_MODE = frozenset(_M)
#: "any enabled" of hyperv-api §10: a mode that replicates (a test replica never does).
ENABLED_MODES = frozenset({_M.PRIMARY, _M.REPLICA, _M.EXTENDED_REPLICA})
RECOVERY_MODES = frozenset({_M.REPLICA, _M.EXTENDED_REPLICA})


def _modes(*modes: ReplicationMode) -> frozenset[ReplicationMode]:
    return frozenset(modes)


def _states(*states: int) -> frozenset[int]:
    return frozenset(int(state) for state in states)


def _allow(
    modes: Iterable[ReplicationMode],
    states: Iterable[int] | None = None,
    index: RelationshipIndex | None = None,
) -> Allowance:
    return Allowance(frozenset(modes), None if states is None else _states(*states), index)


_NOT_DISABLED = _states(*(s for s in _S if s != _S.DISABLED))
_COLLECTION_NOT_DISABLED = _states(*(s for s in _C if s != _C.DISABLED))

VM_OFF = Check(
    "vm_off",
    lambda f: f.vm_state == EnabledState.DISABLED,
    ReturnCode.INVALID_STATE,
    "PreconditionVmNotOff",
    "the virtual machine must be turned off",
)
REPLICATION_RECEIVED = Check(
    "replication_received",
    lambda f: f.replication_received,
    ReturnCode.INVALID_STATE,
    "PreconditionNothingReceived",
    "at least one replication must have been received",
)
POINT_VALID = Check(
    "point_valid",
    lambda f: f.point_valid,
    ReturnCode.INVALID_PARAMETER,
    "PreconditionNoRecoveryPoint",
    "the recovery point must exist and be a replica recovery point of this element",
)
NO_TEST_SYSTEM = Check(
    "no_test_system",
    lambda f: not f.test_system_exists,
    ReturnCode.INVALID_STATE,
    "PreconditionTestSystemExists",
    "no test system may exist yet (only one at a time)",
)
TEST_SYSTEM_EXISTS = Check(
    "test_system_exists",
    lambda f: f.test_system_exists,
    ReturnCode.INVALID_STATE,
    "PreconditionNoTestSystem",
    "a test system must exist",
)
NO_EXTENDED = Check(
    "no_extended_relationship",
    lambda f: not f.has_extended_relationship,
    ReturnCode.INVALID_STATE,
    "PreconditionExtendedExists",
    "extended replication must not be enabled yet",
)
HAS_EXTENDED = Check(
    "has_extended_relationship",
    lambda f: f.has_extended_relationship,
    ReturnCode.INVALID_STATE,
    "PreconditionNoExtended",
    "extended replication must be enabled",
)
PRIMARY_FREE_OF_EXTENDED = Check(
    "primary_free_of_extended",
    lambda f: not (f.mode == _M.REPLICA and f.index == _I.PRIMARY and f.has_extended_relationship),
    ReturnCode.INVALID_STATE,
    "PreconditionExtendedBlocksRemoval",
    "the extended relationship must be removed before the primary relationship of a replica",
)
_IR_STATE = int(_S.WAITING_TO_COMPLETE_INITIAL_REPLICATION)  # same number for collections
IR_PENDING = Check(
    "initial_replication_pending",
    lambda f: not f.initial_replication_complete or _current_state(f) == _IR_STATE,
    ReturnCode.INVALID_STATE,
    "PreconditionInitialReplicationDone",
    "initial replication must not be complete yet",
)


def _current_state(facts: PreconditionFacts) -> int | None:
    """The VM relationship state, or the collection state when only that is given."""
    if facts.state is not None:
        return int(facts.state)
    return None if facts.collection_state is None else int(facts.collection_state)


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------


def _row(
    operation: Operation,
    *allowances: Allowance,
    checks: tuple[Check, ...] = (),
    creates: bool = False,
    runs_beside_jobs: bool = False,
    note: str = "",
) -> Rule:
    return Rule(operation, allowances, checks, not creates, not runs_beside_jobs, note)


_O = Operation
_PRIMARY_ONLY = _modes(_M.PRIMARY)
_REPLICA_ONLY = _modes(_M.REPLICA)
_BOTH_SIDES = _modes(_M.PRIMARY, _M.REPLICA)
_SUSPENDABLE = _states(_S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, _S.REPLICATING, _S.RESYNCHRONIZING)
_RESUMABLE = _states(
    _S.SUSPENDED,
    _S.CRITICAL,
    _S.WAITING_TO_START_RESYNCHRONIZATION,
    _S.RESYNCHRONIZATION_SUSPENDED,
    _S.DISK_UPDATE_CRITICAL,
)
_IR_CANCELLABLE = _states(_S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, _S.SUSPENDED, _S.CRITICAL)
_FAILOVER_FROM = _states(_S.REPLICATING, _S.SUSPENDED, _S.RESYNCHRONIZING, _S.DISK_UPDATE_IN_PROGRESS)
_FAILED_OVER = _states(_S.RECOVERED, _S.COMMITTED)
_C_SUSPENDABLE = _states(_C.WAITING_TO_COMPLETE_INITIAL_REPLICATION, _C.REPLICATING, _C.RESYNCHRONIZING)
_C_RESUMABLE = _states(_C.SUSPENDED, _C.CRITICAL, _C.WAITING_TO_START_RESYNCHRONIZATION)
_C_IR_CANCELLABLE = _states(_C.WAITING_TO_COMPLETE_INITIAL_REPLICATION, _C.SUSPENDED, _C.CRITICAL)

# fmt: off
# The table is data: one rule per line group, kept compact on purpose.
_VM_RULES: tuple[Rule, ...] = (
    _row(_O.CREATE_RELATIONSHIP, _allow(_modes(_M.NONE)), creates=True,
         note="Only a VM that does not replicate yet; on a replica VM Create means the extended one."),
    _row(_O.CREATE_EXTENDED_RELATIONSHIP, _allow(_REPLICA_ONLY), checks=(NO_EXTENDED,), creates=True,
         note="Interval 300/900 >= primary's is a settings check (settings.validate_extended_settings)."),
    _row(_O.ENABLE_AS_REPLICA, _allow(_modes(_M.NONE)), creates=True,
         note="The authorization entry is bound afterwards (SetAuthorizationEntry, PS order)."),
    _row(_O.START_REPLICATION,
         _allow(_PRIMARY_ONLY, (_S.READY_FOR_REPLICATION,), _I.PRIMARY),
         _allow(_REPLICA_ONLY, (_S.READY_FOR_REPLICATION,), _I.EXTENDED)),
    _row(_O.IMPORT_INITIAL_REPLICA, _allow(_REPLICA_ONLY, (_S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,)),
         note="[I] state 2: the replica waits for the exported initial copy."),
    _row(_O.CANCEL_INITIAL_REPLICATION, _allow(_BOTH_SIDES, _IR_CANCELLABLE), checks=(IR_PENDING,),
         runs_beside_jobs=True,
         note="Suspended/Critical count as 'IR suspended / in error' only while IR is still pending."),
    _row(_O.SUSPEND_REPLICATION, _allow(ENABLED_MODES, _SUSPENDABLE)),
    _row(_O.RESUME_REPLICATION, _allow(ENABLED_MODES, _RESUMABLE)),
    _row(_O.RESYNCHRONIZE, _allow(ENABLED_MODES, _RESUMABLE),
         note="A forced resync of a healthy VM means suspend first (blog), so Replicating is refused."),
    _row(_O.CANCEL_RESYNCHRONIZATION, _allow(ENABLED_MODES, (_S.RESYNCHRONIZING,)), runs_beside_jobs=True,
         note="A running resync job always shows state 10, so it needs no allowance of its own."),
    _row(_O.PREPARE_PLANNED_FAILOVER,
         _allow(_PRIMARY_ONLY, (_S.REPLICATING,), _I.PRIMARY),
         _allow(_REPLICA_ONLY, (_S.REPLICATING, _S.DISK_UPDATE_IN_PROGRESS, _S.DISK_UPDATE_CRITICAL),
                _I.EXTENDED),
         checks=(VM_OFF,)),
    _row(_O.INITIATE_FAILOVER, _allow(RECOVERY_MODES, _FAILOVER_FROM),
         checks=(REPLICATION_RECEIVED, VM_OFF, POINT_VALID),
         note="Suspended/Resynchronizing accepted (PS forces Replicating first); a resync is cancelled."),
    _row(_O.TEST_REPLICA_SYSTEM, _allow(RECOVERY_MODES, (_S.REPLICATING, _S.SUSPENDED)),
         checks=(REPLICATION_RECEIVED, NO_TEST_SYSTEM, POINT_VALID),
         note="[I] a second test VM is refused with 32775 (blog: one test VM at a time)."),
    _row(_O.REVERT_FAILOVER,
         _allow(RECOVERY_MODES, (_S.RECOVERED, _S.FAILOVER_IN_PROGRESS)),
         _allow(_PRIMARY_ONLY, (_S.SYNCED_REPLICATION_COMPLETE,)),
         note="On a primary it cancels a planned-failover prepare (PS)."),
    _row(_O.COMMIT_FAILOVER, _allow(RECOVERY_MODES, (_S.RECOVERED,))),
    _row(_O.REVERSE_REPLICATION, _allow(_REPLICA_ONLY, _FAILED_OVER),
         note="[I] Recovered (planned flow) or Committed; never on a primary (PS)."),
    _row(_O.CHANGE_MODE_TO_PRIMARY, _allow(_REPLICA_ONLY, (_S.COMMITTED,)), checks=(HAS_EXTENDED,),
         note="state = the failed-over primary relationship's; the failover must be committed [D]."),
    _row(_O.REMOVE_RELATIONSHIP, _allow(ANY_MODE, _NOT_DISABLED), checks=(PRIMARY_FREE_OF_EXTENDED,)),
    _row(_O.MODIFY_REPLICATION_SETTINGS,
         _allow(_PRIMARY_ONLY, None, _I.PRIMARY), _allow(_REPLICA_ONLY, None, _I.EXTENDED),
         note="Not on a replica's primary relationship (PS); extended disk changes: settings check."),
    _row(_O.SET_FAILOVER_NETWORK_SETTINGS, _allow(ANY_MODE - {_M.TEST_REPLICA}), creates=True,
         note="[I] any VM but a test replica may store failover IP settings, as the PS cmdlet allows."),
    _row(_O.GET_REPLICATION_STATISTICS, _allow(ENABLED_MODES), runs_beside_jobs=True),
    _row(_O.RESET_REPLICATION_STATISTICS, _allow(ENABLED_MODES), runs_beside_jobs=True),
    _row(_O.INITIATE_FAILBACK, _allow(RECOVERY_MODES, _FAILED_OVER),
         note="[I] provider-driven failback of a failed-over recovery VM (hyperv-api §3.2, §12.5)."),
    _row(_O.SET_AUTHORIZATION_ENTRY, _allow(RECOVERY_MODES), creates=True,
         note="[I] binds a replica VM to an entry (PS: right after enable-as-replica)."),
)

_COLLECTION_RULES: tuple[Rule, ...] = (
    _row(_O.COLLECTION_CREATE_RELATIONSHIP, _allow(_modes(_M.NONE), (_C.DISABLED,))),
    _row(_O.COLLECTION_START_REPLICATION, _allow(_PRIMARY_ONLY, (_C.READY_FOR_REPLICATION,))),
    _row(_O.COLLECTION_MODIFY_REPLICATION_SETTINGS, _allow(_PRIMARY_ONLY, _COLLECTION_NOT_DISABLED)),
    _row(_O.COLLECTION_INITIATE_FAILOVER,
         _allow(_REPLICA_ONLY, (_C.REPLICATING, _C.SUSPENDED, _C.RESYNCHRONIZING)),
         checks=(REPLICATION_RECEIVED, VM_OFF, POINT_VALID),
         note="[I] as the per-VM rule (hyperv-api §9.10: collection preconditions unconfirmed)."),
    _row(_O.COLLECTION_REVERT_FAILOVER, _allow(_REPLICA_ONLY, (_C.FAILOVER_INITIATED, _C.RECOVERED)),
         note="[D] only after InitiateFailover."),
    _row(_O.COLLECTION_COMMIT_FAILOVER, _allow(_REPLICA_ONLY, (_C.RECOVERED,))),
    _row(_O.COLLECTION_INITIATE_PLANNED_FAILOVER, _allow(_PRIMARY_ONLY, (_C.REPLICATING,)),
         checks=(VM_OFF,), note="[I] as the per-VM prepare: every member off, replicating."),
    _row(_O.COLLECTION_REVERT_PLANNED_FAILOVER,
         _allow(_PRIMARY_ONLY, (_C.PLANNED_FAILOVER_INITIATED, _C.FAILOVER_INITIATED)),
         note="[D] PreparedForPlannedFailover / FailoverInitiated; 11 read as planned failover initiated."),
    _row(_O.COLLECTION_PREPARE_FOR_REVERSE_REPLICATION, _allow(_REPLICA_ONLY, (_C.RECOVERED, _C.COMMITTED)),
         note="[I] a failed-over recovery collection."),
    _row(_O.COLLECTION_REVERSE_REPLICATION, _allow(_REPLICA_ONLY, (_C.COMMITTED,)),
         note="[D] requires a recovery collection in failover-committed state."),
    _row(_O.COLLECTION_REMOVE_RELATIONSHIP, _allow(ANY_MODE, _COLLECTION_NOT_DISABLED)),
    _row(_O.COLLECTION_SUSPEND_REPLICATION, _allow(_BOTH_SIDES, _C_SUSPENDABLE)),
    _row(_O.COLLECTION_RESUME_REPLICATION, _allow(_BOTH_SIDES, _C_RESUMABLE)),
    _row(_O.COLLECTION_RESYNCHRONIZE, _allow(_BOTH_SIDES, _C_RESUMABLE)),
    _row(_O.COLLECTION_TEST_REPLICA, _allow(_REPLICA_ONLY, (_C.REPLICATING, _C.SUSPENDED)),
         checks=(REPLICATION_RECEIVED, NO_TEST_SYSTEM, POINT_VALID)),
    _row(_O.COLLECTION_REVERT_TEST_REPLICA, _allow(_REPLICA_ONLY), checks=(TEST_SYSTEM_EXISTS,)),
    _row(_O.COLLECTION_CANCEL_INITIAL_REPLICATION, _allow(_BOTH_SIDES, _C_IR_CANCELLABLE),
         checks=(IR_PENDING,), runs_beside_jobs=True),
    _row(_O.COLLECTION_CANCEL_RESYNCHRONIZE, _allow(_BOTH_SIDES, (_C.RESYNCHRONIZING,)),
         runs_beside_jobs=True),
    _row(_O.COLLECTION_CANCEL_UPDATE_DISK_SET, _allow(_BOTH_SIDES, _COLLECTION_NOT_DISABLED),
         runs_beside_jobs=True,
         note="[I] collections have no disk-update state; the engine cancels the update job if one runs."),
    _row(_O.COLLECTION_GET_REPLICATION_STATISTICS, _allow(_BOTH_SIDES, _COLLECTION_NOT_DISABLED),
         runs_beside_jobs=True),
    _row(_O.COLLECTION_RESET_REPLICATION_STATISTICS, _allow(_BOTH_SIDES, _COLLECTION_NOT_DISABLED),
         runs_beside_jobs=True),
)
# fmt: on

RULES: Mapping[Operation, Rule] = MappingProxyType(
    {rule.operation: rule for rule in _VM_RULES + _COLLECTION_RULES}
)


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a rule refused: the return code, the catalog id and the English requirement."""

    code: ReturnCode
    message_id: str
    requirement: str


def _rule_state(rule: Rule, facts: PreconditionFacts) -> int | None:
    if rule.operation.is_collection:
        # A collection always has a state; unknown means it does not replicate.
        return int(facts.collection_state if facts.collection_state is not None else _C.DISABLED)
    return None if facts.state is None else int(facts.state)


def evaluate(operation: Operation, facts: PreconditionFacts) -> Failure | None:
    """The first failing condition of the operation's rule, or None when the operation may run."""
    rule = RULES[operation]
    if rule.blocked_by_job and facts.job_running:
        return Failure(
            ReturnCode.SYSTEM_IN_USE, "PreconditionJobRunning", "another job is still running on it"
        )
    state = _rule_state(rule, facts)
    if state is None and rule.needs_relationship:
        return Failure(ReturnCode.INVALID_STATE, "PreconditionModeState", describe_requirement(rule))
    if not any(allowance.admits(facts.mode, state, facts.index) for allowance in rule.allowances):
        return Failure(ReturnCode.INVALID_STATE, "PreconditionModeState", describe_requirement(rule))
    for extra in rule.checks:
        if not extra.passes(facts):
            return Failure(extra.code, extra.message_id, extra.requirement)
    return None


def check(operation: Operation, facts: PreconditionFacts) -> ReturnCode | None:
    """The Hyper-V return code refusing the operation (32773/32774/32775), or None when it is allowed."""
    failure = evaluate(operation, facts)
    return None if failure is None else failure.code


_ERRORS: Mapping[ReturnCode, type[StandbyError]] = MappingProxyType(
    {
        ReturnCode.INVALID_STATE: InvalidState,
        ReturnCode.SYSTEM_IN_USE: InUse,
        ReturnCode.INVALID_PARAMETER: InvalidParameter,
    }
)


def require(operation: Operation, facts: PreconditionFacts) -> None:
    """Raise ``InvalidState`` / ``InUse`` / ``InvalidParameter`` unless the operation may run now.

    The message names the operation, the current mode and state, and what is required; the exception's
    ``message_id`` and ``args_map`` (operation, mode, state, required) let the catalog translate it.
    """
    failure = evaluate(operation, facts)
    if failure is None:
        return
    mode = _name(facts.mode)
    state = _describe_state(operation, facts)
    element = "collection" if operation.is_collection else "virtual machine"
    message = f"Cannot {operation.label}: the {element} is in {mode} and {state}; {failure.requirement}."
    raise _ERRORS[failure.code](
        message,
        message_id=failure.message_id,
        operation=operation.value,
        mode=mode,
        state=state,
        required=failure.requirement,
    )


def _name(value: ReplicationMode | ReplicationState | CollectionReplicationState) -> str:
    words = value.name.replace("_", " ").lower()
    if isinstance(value, ReplicationMode):
        return f"replication mode {words} ({int(value)})"
    return f"{words} ({int(value)})"


def _describe_state(operation: Operation, facts: PreconditionFacts) -> str:
    if operation.is_collection:
        state = facts.collection_state if facts.collection_state is not None else _C.DISABLED
        return f"in state {_name(state)}"
    relationship = "extended" if facts.index == _I.EXTENDED else "primary"
    if facts.state is None:
        return f"has no {relationship} relationship"
    return f"its {relationship} relationship is in state {_name(facts.state)}"


def describe_requirement(rule: Rule) -> str:
    """English summary of a rule's allowed modes and states, for messages and documentation."""
    enum: type[ReplicationState] | type[CollectionReplicationState] = (
        _C if rule.operation.is_collection else _S
    )
    parts = [_describe_allowance(allowance, enum, rule.needs_relationship) for allowance in rule.allowances]
    return "it requires " + "; or ".join(parts)


def _describe_allowance(
    allowance: Allowance,
    enum: type[ReplicationState] | type[CollectionReplicationState],
    needs_relationship: bool,
) -> str:
    names = [mode.name.replace("_", " ").lower() + f" ({int(mode)})" for mode in sorted(allowance.modes)]
    modes = "replication mode " + " or ".join(names)
    relation = {
        None: "",
        _I.PRIMARY: " on the primary relationship",
        _I.EXTENDED: " on the extended relationship",
    }
    text = modes + relation[allowance.index]
    if allowance.states is not None:
        states = ", ".join(_name(enum(state)) for state in sorted(allowance.states))
        text += f" in state {states}"
    elif needs_relationship:
        text += " with replication enabled"
    return text


# ---------------------------------------------------------------------------------------------------------
# Where an allowed state change leads
# ---------------------------------------------------------------------------------------------------------

_FIXED_TARGETS: Mapping[Operation, ReplicationState] = MappingProxyType(
    {
        Operation.CREATE_RELATIONSHIP: _S.READY_FOR_REPLICATION,
        Operation.CREATE_EXTENDED_RELATIONSHIP: _S.READY_FOR_REPLICATION,
        Operation.ENABLE_AS_REPLICA: _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        Operation.START_REPLICATION: _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        Operation.IMPORT_INITIAL_REPLICA: _S.REPLICATING,
        Operation.CANCEL_INITIAL_REPLICATION: _S.READY_FOR_REPLICATION,
        Operation.PREPARE_PLANNED_FAILOVER: _S.SYNCED_REPLICATION_COMPLETE,
        Operation.INITIATE_FAILOVER: _S.RECOVERED,
        Operation.COMMIT_FAILOVER: _S.COMMITTED,
        Operation.RESYNCHRONIZE: _S.RESYNCHRONIZING,
        Operation.REMOVE_RELATIONSHIP: _S.DISABLED,
        Operation.INITIATE_FAILBACK: _S.FAILBACK_IN_PROGRESS,
    }
)


def target_state(operation: Operation, facts: PreconditionFacts) -> ReplicationState | None:
    """The relationship state an allowed per-VM operation leads to; None = unchanged or decided by the work.

    Call it after ``require``. Choices where the spec is [I]/unconfirmed:
    - suspend: 2, 3 → 7; 10 → 11 Resynchronization suspended (the state exists for exactly this; §9.7 says a
      suspended resync continues on resume);
    - resume: 16 → 15; 11 and 9 → 10 (the resync continues / starts: tracking alone cannot close the gap);
      7 and 8 → 3, or → 2 while initial replication is still pending;
    - cancel resync: → 9 on the primary, → 3 on a replica (§4);
    - revert failover: a primary (4) → 3; a replica → its state before the failover (default 3);
    - remove: → 0 (the relationship is gone).
    """
    if operation.is_collection:
        raise ValueError(f"{operation.value} is a collection operation; use collection_target_state")
    if operation in _FIXED_TARGETS:
        return _FIXED_TARGETS[operation]
    state = facts.state
    if operation is Operation.SUSPEND_REPLICATION:
        return _S.RESYNCHRONIZATION_SUSPENDED if state == _S.RESYNCHRONIZING else _S.SUSPENDED
    if operation is Operation.RESUME_REPLICATION:
        return _resume_target(state, facts.initial_replication_complete)
    if operation is Operation.CANCEL_RESYNCHRONIZATION:
        return _S.WAITING_TO_START_RESYNCHRONIZATION if facts.mode == _M.PRIMARY else _S.REPLICATING
    if operation is Operation.REVERT_FAILOVER:
        if facts.mode == _M.PRIMARY:
            return _S.REPLICATING
        return facts.state_before_failover or _S.REPLICATING
    return None


def _resume_target(state: ReplicationState | None, ir_complete: bool) -> ReplicationState:
    if state == _S.DISK_UPDATE_CRITICAL:
        return _S.DISK_UPDATE_IN_PROGRESS
    if state in (_S.RESYNCHRONIZATION_SUSPENDED, _S.WAITING_TO_START_RESYNCHRONIZATION):
        return _S.RESYNCHRONIZING
    return _S.REPLICATING if ir_complete else _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION


_FIXED_COLLECTION_TARGETS: Mapping[Operation, CollectionReplicationState] = MappingProxyType(
    {
        Operation.COLLECTION_CREATE_RELATIONSHIP: _C.READY_FOR_REPLICATION,
        Operation.COLLECTION_START_REPLICATION: _C.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        Operation.COLLECTION_CANCEL_INITIAL_REPLICATION: _C.READY_FOR_REPLICATION,
        Operation.COLLECTION_SUSPEND_REPLICATION: _C.SUSPENDED,
        Operation.COLLECTION_RESYNCHRONIZE: _C.RESYNCHRONIZING,
        Operation.COLLECTION_INITIATE_FAILOVER: _C.RECOVERED,
        Operation.COLLECTION_REVERT_FAILOVER: _C.REPLICATING,
        Operation.COLLECTION_COMMIT_FAILOVER: _C.COMMITTED,
        Operation.COLLECTION_INITIATE_PLANNED_FAILOVER: _C.PLANNED_FAILOVER_INITIATED,
        Operation.COLLECTION_REVERT_PLANNED_FAILOVER: _C.REPLICATING,
        Operation.COLLECTION_REMOVE_RELATIONSHIP: _C.DISABLED,
    }
)


def collection_target_state(
    operation: Operation, facts: PreconditionFacts
) -> CollectionReplicationState | None:
    """``target_state`` for collection operations (hyperv-api §8.1/§9.10, mostly [I]).

    A collection has no "resynchronization suspended" state, so suspend always leads to 7; resume from 9
    starts the resync (10); cancel resync → 9 on the primary, 3 on the replica.
    """
    if not operation.is_collection:
        raise ValueError(f"{operation.value} is a per-VM operation; use target_state")
    if operation in _FIXED_COLLECTION_TARGETS:
        return _FIXED_COLLECTION_TARGETS[operation]
    state = facts.collection_state
    if operation is Operation.COLLECTION_RESUME_REPLICATION:
        if state == _C.WAITING_TO_START_RESYNCHRONIZATION:
            return _C.RESYNCHRONIZING
        return (
            _C.REPLICATING
            if facts.initial_replication_complete
            else _C.WAITING_TO_COMPLETE_INITIAL_REPLICATION
        )
    if operation is Operation.COLLECTION_CANCEL_RESYNCHRONIZE:
        return _C.WAITING_TO_START_RESYNCHRONIZATION if facts.mode == _M.PRIMARY else _C.REPLICATING
    return None


#: Every message id this module raises with (for the i18n catalog).
MESSAGE_IDS: tuple[str, ...] = (
    "UnsupportedRequestedState",
    "PreconditionJobRunning",
    "PreconditionModeState",
    *sorted({check.message_id for rule in RULES.values() for check in rule.checks}),
)
