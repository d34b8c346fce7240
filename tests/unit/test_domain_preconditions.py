"""The precondition table against the API reference (``docs/hyperv-api.md``).

The expectation for every row of hyperv-api §10 is built from the markdown table itself (the "Mode required"
and "State required" columns, plus the "VM Off" / "received" / "extended" words), not from the implementation;
``check`` must agree on every mode × state × VM on/off × received combination. Explicit tables cover the
"Other" checks, the operations §10 does not list, the collection methods and the target states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    ReturnCode,
)
from standby.domain.errors import InUse, InvalidParameter, InvalidState
from standby.domain.preconditions import (
    MESSAGE_IDS,
    RULES,
    STATE_CHANGE_OPERATIONS,
    Operation,
    PreconditionFacts,
    check,
    collection_target_state,
    operation_for_requested_state,
    require,
    target_state,
)

SPEC = Path(__file__).resolve().parents[2] / "docs" / "hyperv-api.md"

M = ReplicationMode
S = ReplicationState
C = CollectionReplicationState
IDX = RelationshipIndex
ON, OFF = EnabledState.ENABLED, EnabledState.DISABLED

# ------------------------------------------------------------------------------------------------------
# An independent reading of hyperv-api §10
# ------------------------------------------------------------------------------------------------------

#: Row label prefix in §10 → the operation it describes (the only link between spec words and our enum).
ROW_OPERATIONS = {
    "CreateReplicationRelationship (primary)": Operation.CREATE_RELATIONSHIP,
    "CreateReplicationRelationship (extended)": Operation.CREATE_EXTENDED_RELATIONSHIP,
    'RequestReplicationStateChange(2) "as replica"': Operation.ENABLE_AS_REPLICA,
    "StartReplication": Operation.START_REPLICATION,
    "ImportInitialReplica": Operation.IMPORT_INITIAL_REPLICA,
    "RequestReplicationStateChange(1) cancel IR": Operation.CANCEL_INITIAL_REPLICATION,
    "RequestReplicationStateChange(7) suspend": Operation.SUSPEND_REPLICATION,
    "Resume (→3)": Operation.RESUME_REPLICATION,
    "Resynchronize": Operation.RESYNCHRONIZE,
    "Cancel resync": Operation.CANCEL_RESYNCHRONIZATION,
    "Prepare planned failover": Operation.PREPARE_PLANNED_FAILOVER,
    "InitiateFailover": Operation.INITIATE_FAILOVER,
    "TestReplicaSystem": Operation.TEST_REPLICA_SYSTEM,
    "RevertFailover": Operation.REVERT_FAILOVER,
    "CommitFailover": Operation.COMMIT_FAILOVER,
    "ReverseReplicationRelationship": Operation.REVERSE_REPLICATION,
    "ChangeReplicationModeToPrimary": Operation.CHANGE_MODE_TO_PRIMARY,
    "RemoveReplicationRelationship": Operation.REMOVE_RELATIONSHIP,
    "ModifyReplicationSettings": Operation.MODIFY_REPLICATION_SETTINGS,
}

#: "any enabled": the modes in which a VM replicates (a test replica never does).
ANY_ENABLED = frozenset({M.PRIMARY, M.REPLICA, M.EXTENDED_REPLICA})
#: The words of the cancel-IR row: IR in progress (2) / suspended (7) / error (8 Critical).
WORD_STATES = {
    "IR in progress": S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    "suspended": S.SUSPENDED,
    "error": S.CRITICAL,
}


@dataclass
class ModeClause:
    """One mode group of the "Mode required" cell, e.g. ``2 (extended)`` or ``2/4 (state 5 or 12)``."""

    modes: frozenset[ReplicationMode]
    extended: bool = False
    states: frozenset[int] | None = None  # a "(state …)" parenthesis overrides the State column


@dataclass
class SpecRow:
    label: str
    operation: Operation
    clauses: list[ModeClause]
    states: frozenset[int] | None  # None = "—": any
    extended_extra: frozenset[int] = frozenset()  # "(or 15/16 on extended)"
    needs_received: bool = False
    needs_off: bool = False
    needs_extended: bool | None = None  # True: must exist, False: must not, None: not mentioned
    creates: bool = False
    notes: list[str] = field(default_factory=list)

    def index_for(self, mode: ReplicationMode) -> RelationshipIndex:
        for clause in self.clauses:
            if mode in clause.modes and clause.extended:
                return IDX.EXTENDED
        return IDX.PRIMARY

    def expected(
        self, mode: ReplicationMode, state: ReplicationState | None, facts: PreconditionFacts
    ) -> bool:
        """Whether the spec row allows the operation for these facts."""
        clause = next((c for c in self.clauses if mode in c.modes), None)
        if clause is None:
            return False
        states = clause.states if clause.states is not None else self.states
        if states is None:
            state_ok = self.creates or state is not None
        else:
            extra = self.extended_extra if facts.index == IDX.EXTENDED else frozenset()
            state_ok = state is not None and (int(state) in states or int(state) in extra)
        if self.needs_off and facts.vm_state != OFF:
            return False
        if self.needs_received and not facts.replication_received:
            return False
        return state_ok


def _strip_tags(text: str) -> str:
    return re.sub(r"\[[^\]]*\]", "", text).strip()


def parse_modes(cell: str) -> list[ModeClause]:
    text = _strip_tags(cell)
    if text == "any":
        return [ModeClause(frozenset(M))]
    if text == "any enabled":
        return [ModeClause(ANY_ENABLED)]
    clauses = []
    for match in re.finditer(r"(\d(?:/\d)*)(?:\s+[A-Za-z]+)?\s*(?:\(([^)]*)\))?", text):
        modes = frozenset(M(int(d)) for d in match.group(1).split("/"))
        paren = match.group(2) or ""
        states = None
        if paren.startswith("state"):
            states = frozenset(int(d) for d in re.findall(r"\d+", paren))
        clauses.append(ModeClause(modes, extended="extended" in paren, states=states))
    return clauses


def parse_states(cell: str) -> tuple[frozenset[int] | None, frozenset[int], list[str]]:
    """(states or None for any, extra states on the extended relationship, remaining words)."""
    text = _strip_tags(cell)
    extra: frozenset[int] = frozenset()
    on_extended = re.search(r"\(or ([\d/]+) on extended\)", text)
    if on_extended:
        extra = frozenset(int(d) for d in on_extended.group(1).split("/"))
    text = re.sub(r"\([^)]*\)", "", text).strip()
    if text in ("—", "-"):
        return None, extra, []
    if text.startswith("not "):
        excluded = {int(d) for d in re.findall(r"\d+", text)}
        return frozenset(int(s) for s in S if int(s) not in excluded), extra, []
    if "extended rel not yet enabled" in text:
        return None, extra, ["no-extended"]
    words = [state for word, state in WORD_STATES.items() if word in text]
    if words:
        return frozenset(int(s) for s in words), extra, []
    head, _, rest = text.partition(";")
    numbers = frozenset(int(d) for d in re.findall(r"\b\d+\b", head))
    notes = ["received"] if ("received" in text or "LastReplicationTime" in text) else []
    if "extended relationship enabled" in rest:
        notes.append("extended")
    return numbers, extra, notes


def load_spec_rows() -> list[SpecRow]:
    # The reference is part of the checkout: a missing file fails collection instead of skipping §10.
    body = SPEC.read_text(encoding="utf-8").split("## 10.", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("Operation", "") or set(cells[0]) <= {"-"}:
            continue
        label, mode_cell, state_cell, other = cells
        operation = next((op for prefix, op in ROW_OPERATIONS.items() if label.startswith(prefix)), None)
        assert operation is not None, f"§10 row {label!r} has no operation mapping"
        states, extra, notes = parse_states(state_cell)
        rows.append(
            SpecRow(
                label=label,
                operation=operation,
                clauses=parse_modes(mode_cell),
                states=states,
                extended_extra=extra,
                needs_received="received" in notes,
                needs_off="VM Off" in other,
                needs_extended=True if "extended" in notes else (False if "no-extended" in notes else None),
                creates="Create" in label or "as replica" in label,
            )
        )
    return rows


SPEC_ROWS = load_spec_rows()
STATES: list[ReplicationState | None] = [None, *S]


def test_spec_table_is_fully_mapped() -> None:
    rows = load_spec_rows()
    assert len(rows) == len(ROW_OPERATIONS)
    assert {row.operation for row in rows} == set(ROW_OPERATIONS.values())


def _facts_for(
    row: SpecRow, mode: ReplicationMode, state: ReplicationState | None, vm, received
) -> PreconditionFacts:
    # Facts the table does not vary are set to their favourable value for this row.
    return PreconditionFacts(
        mode=mode,
        state=state,
        index=row.index_for(mode),
        vm_state=vm,
        replication_received=received,
        initial_replication_complete=False,
        has_extended_relationship=bool(row.needs_extended),
    )


@pytest.mark.parametrize("row", SPEC_ROWS, ids=[row.label for row in SPEC_ROWS])
def test_check_agrees_with_spec_section_10(row: SpecRow) -> None:
    mismatches = []
    for mode in M:
        for state in STATES:
            for vm in (ON, OFF):
                for received in (False, True):
                    facts = _facts_for(row, mode, state, vm, received)
                    verdict = check(row.operation, facts)
                    wanted = None if row.expected(mode, state, facts) else ReturnCode.INVALID_STATE
                    if verdict != wanted:
                        mismatches.append((mode.name, state, vm.name, received, verdict))
    assert not mismatches, f"{row.label}: {len(mismatches)} mismatches, e.g. {mismatches[:5]}"


# ------------------------------------------------------------------------------------------------------
# Explicit rows: the "Other" column and the checks beyond mode/state
# ------------------------------------------------------------------------------------------------------

BASE_REPLICA = PreconditionFacts(mode=M.REPLICA, state=S.REPLICATING, vm_state=OFF, replication_received=True)
BASE_PRIMARY = PreconditionFacts(mode=M.PRIMARY, state=S.REPLICATING, vm_state=OFF, replication_received=True)

OTHER_CASES = [
    # (operation, facts, expected verdict)
    (Operation.INITIATE_FAILOVER, BASE_REPLICA, None),
    (Operation.INITIATE_FAILOVER, replace(BASE_REPLICA, vm_state=ON), ReturnCode.INVALID_STATE),
    (
        Operation.INITIATE_FAILOVER,
        replace(BASE_REPLICA, vm_state=EnabledState.QUIESCE),
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.INITIATE_FAILOVER,
        replace(BASE_REPLICA, replication_received=False),
        ReturnCode.INVALID_STATE,
    ),
    (Operation.INITIATE_FAILOVER, replace(BASE_REPLICA, point_valid=False), ReturnCode.INVALID_PARAMETER),
    (Operation.INITIATE_FAILOVER, replace(BASE_REPLICA, job_running=True), ReturnCode.SYSTEM_IN_USE),
    (Operation.INITIATE_FAILOVER, replace(BASE_REPLICA, mode=M.EXTENDED_REPLICA), None),
    (Operation.TEST_REPLICA_SYSTEM, BASE_REPLICA, None),
    (Operation.TEST_REPLICA_SYSTEM, replace(BASE_REPLICA, vm_state=ON), None),
    (Operation.TEST_REPLICA_SYSTEM, replace(BASE_REPLICA, test_system_exists=True), ReturnCode.INVALID_STATE),
    (
        Operation.TEST_REPLICA_SYSTEM,
        replace(BASE_REPLICA, replication_received=False),
        ReturnCode.INVALID_STATE,
    ),
    (Operation.TEST_REPLICA_SYSTEM, replace(BASE_REPLICA, point_valid=False), ReturnCode.INVALID_PARAMETER),
    (Operation.TEST_REPLICA_SYSTEM, replace(BASE_REPLICA, state=S.RESYNCHRONIZING), ReturnCode.INVALID_STATE),
    (Operation.PREPARE_PLANNED_FAILOVER, BASE_PRIMARY, None),
    (Operation.PREPARE_PLANNED_FAILOVER, replace(BASE_PRIMARY, vm_state=ON), ReturnCode.INVALID_STATE),
    (Operation.PREPARE_PLANNED_FAILOVER, replace(BASE_PRIMARY, index=IDX.EXTENDED), ReturnCode.INVALID_STATE),
    (
        Operation.PREPARE_PLANNED_FAILOVER,
        replace(BASE_REPLICA, index=IDX.EXTENDED, state=S.DISK_UPDATE_CRITICAL),
        None,
    ),
    (
        Operation.PREPARE_PLANNED_FAILOVER,
        replace(BASE_REPLICA, state=S.DISK_UPDATE_CRITICAL),
        ReturnCode.INVALID_STATE,
    ),
    (Operation.REMOVE_RELATIONSHIP, BASE_REPLICA, None),
    (
        Operation.REMOVE_RELATIONSHIP,
        replace(BASE_REPLICA, has_extended_relationship=True),
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.REMOVE_RELATIONSHIP,
        replace(BASE_REPLICA, has_extended_relationship=True, index=IDX.EXTENDED),
        None,
    ),
    (Operation.REMOVE_RELATIONSHIP, replace(BASE_PRIMARY, has_extended_relationship=True), None),
    (Operation.REMOVE_RELATIONSHIP, replace(BASE_PRIMARY, state=S.DISABLED), ReturnCode.INVALID_STATE),
    (Operation.REMOVE_RELATIONSHIP, replace(BASE_PRIMARY, state=None), ReturnCode.INVALID_STATE),
    (
        Operation.CREATE_EXTENDED_RELATIONSHIP,
        replace(BASE_REPLICA, has_extended_relationship=True),
        ReturnCode.INVALID_STATE,
    ),
    (Operation.CREATE_EXTENDED_RELATIONSHIP, BASE_REPLICA, None),
    (Operation.CHANGE_MODE_TO_PRIMARY, replace(BASE_REPLICA, state=S.COMMITTED), ReturnCode.INVALID_STATE),
    (
        Operation.CHANGE_MODE_TO_PRIMARY,
        replace(BASE_REPLICA, state=S.COMMITTED, has_extended_relationship=True),
        None,
    ),
    (
        Operation.CHANGE_MODE_TO_PRIMARY,
        replace(BASE_REPLICA, state=S.RECOVERED, has_extended_relationship=True),
        ReturnCode.INVALID_STATE,
    ),
    (Operation.MODIFY_REPLICATION_SETTINGS, BASE_REPLICA, ReturnCode.INVALID_STATE),
    (Operation.MODIFY_REPLICATION_SETTINGS, replace(BASE_REPLICA, index=IDX.EXTENDED), None),
    (
        Operation.MODIFY_REPLICATION_SETTINGS,
        replace(BASE_REPLICA, index=IDX.EXTENDED, state=None),
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.START_REPLICATION,
        replace(BASE_REPLICA, state=S.READY_FOR_REPLICATION),
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.START_REPLICATION,
        replace(BASE_REPLICA, state=S.READY_FOR_REPLICATION, index=IDX.EXTENDED),
        None,
    ),
    # cancels run while the job they cancel is running; cancel IR needs IR still pending in 7/8
    (
        Operation.CANCEL_RESYNCHRONIZATION,
        replace(BASE_PRIMARY, state=S.RESYNCHRONIZING, job_running=True),
        None,
    ),
    (
        Operation.CANCEL_INITIAL_REPLICATION,
        replace(BASE_PRIMARY, state=S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, job_running=True),
        None,
    ),
    (
        Operation.CANCEL_INITIAL_REPLICATION,
        replace(BASE_PRIMARY, state=S.SUSPENDED),
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.CANCEL_INITIAL_REPLICATION,
        replace(BASE_PRIMARY, state=S.SUSPENDED, initial_replication_complete=False),
        None,
    ),
    (
        Operation.CANCEL_INITIAL_REPLICATION,
        replace(BASE_PRIMARY, state=S.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        None,
    ),
    # a job on the element blocks mutating calls first, before mode/state
    (Operation.SUSPEND_REPLICATION, replace(BASE_PRIMARY, job_running=True), ReturnCode.SYSTEM_IN_USE),
    (Operation.COMMIT_FAILOVER, replace(BASE_PRIMARY, job_running=True), ReturnCode.SYSTEM_IN_USE),
    (Operation.GET_REPLICATION_STATISTICS, replace(BASE_PRIMARY, job_running=True), None),
]


@pytest.mark.parametrize(("operation", "facts", "expected"), OTHER_CASES)
def test_other_checks(operation: Operation, facts: PreconditionFacts, expected: ReturnCode | None) -> None:
    assert check(operation, facts) == expected


# Operations §10 does not list: (operation, mode, state, expected)
UNLISTED_CASES = [
    (Operation.SET_FAILOVER_NETWORK_SETTINGS, M.NONE, None, None),
    (Operation.SET_FAILOVER_NETWORK_SETTINGS, M.PRIMARY, S.REPLICATING, None),
    (Operation.SET_FAILOVER_NETWORK_SETTINGS, M.TEST_REPLICA, None, ReturnCode.INVALID_STATE),
    (Operation.GET_REPLICATION_STATISTICS, M.PRIMARY, S.REPLICATING, None),
    (Operation.GET_REPLICATION_STATISTICS, M.REPLICA, S.RECOVERED, None),
    (Operation.GET_REPLICATION_STATISTICS, M.NONE, None, ReturnCode.INVALID_STATE),
    (Operation.GET_REPLICATION_STATISTICS, M.PRIMARY, None, ReturnCode.INVALID_STATE),
    (Operation.RESET_REPLICATION_STATISTICS, M.EXTENDED_REPLICA, S.REPLICATING, None),
    (Operation.RESET_REPLICATION_STATISTICS, M.TEST_REPLICA, S.REPLICATING, ReturnCode.INVALID_STATE),
    (Operation.INITIATE_FAILBACK, M.REPLICA, S.COMMITTED, None),
    (Operation.INITIATE_FAILBACK, M.REPLICA, S.REPLICATING, ReturnCode.INVALID_STATE),
    (Operation.INITIATE_FAILBACK, M.PRIMARY, S.COMMITTED, ReturnCode.INVALID_STATE),
    (Operation.SET_AUTHORIZATION_ENTRY, M.REPLICA, S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, None),
    (Operation.SET_AUTHORIZATION_ENTRY, M.PRIMARY, S.REPLICATING, ReturnCode.INVALID_STATE),
]


@pytest.mark.parametrize(("operation", "mode", "state", "expected"), UNLISTED_CASES)
def test_operations_outside_section_10(operation, mode, state, expected) -> None:
    assert check(operation, PreconditionFacts(mode=mode, state=state)) == expected


# Collections (hyperv-api §8.1, §9.10): (operation, mode, collection state, extra facts, expected)
COLLECTION_CASES = [
    (Operation.COLLECTION_CREATE_RELATIONSHIP, M.NONE, C.DISABLED, {}, None),
    (Operation.COLLECTION_CREATE_RELATIONSHIP, M.NONE, None, {}, None),
    (Operation.COLLECTION_CREATE_RELATIONSHIP, M.PRIMARY, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_START_REPLICATION, M.PRIMARY, C.READY_FOR_REPLICATION, {}, None),
    (Operation.COLLECTION_START_REPLICATION, M.PRIMARY, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_INITIATE_FAILOVER, M.REPLICA, C.REPLICATING, {"replication_received": True}, None),
    (Operation.COLLECTION_INITIATE_FAILOVER, M.REPLICA, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (
        Operation.COLLECTION_INITIATE_FAILOVER,
        M.REPLICA,
        C.REPLICATING,
        {"replication_received": True, "vm_state": ON},
        ReturnCode.INVALID_STATE,
    ),
    (
        Operation.COLLECTION_INITIATE_FAILOVER,
        M.REPLICA,
        C.REPLICATING,
        {"replication_received": True, "point_valid": False},
        ReturnCode.INVALID_PARAMETER,
    ),
    (
        Operation.COLLECTION_INITIATE_FAILOVER,
        M.PRIMARY,
        C.REPLICATING,
        {"replication_received": True},
        ReturnCode.INVALID_STATE,
    ),
    (Operation.COLLECTION_REVERT_FAILOVER, M.REPLICA, C.RECOVERED, {}, None),
    (Operation.COLLECTION_REVERT_FAILOVER, M.REPLICA, C.COMMITTED, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_COMMIT_FAILOVER, M.REPLICA, C.RECOVERED, {}, None),
    (Operation.COLLECTION_COMMIT_FAILOVER, M.REPLICA, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_INITIATE_PLANNED_FAILOVER, M.PRIMARY, C.REPLICATING, {}, None),
    (
        Operation.COLLECTION_INITIATE_PLANNED_FAILOVER,
        M.PRIMARY,
        C.REPLICATING,
        {"vm_state": ON},
        ReturnCode.INVALID_STATE,
    ),
    (Operation.COLLECTION_REVERT_PLANNED_FAILOVER, M.PRIMARY, C.PLANNED_FAILOVER_INITIATED, {}, None),
    (Operation.COLLECTION_REVERT_PLANNED_FAILOVER, M.PRIMARY, C.FAILOVER_INITIATED, {}, None),
    (Operation.COLLECTION_REVERT_PLANNED_FAILOVER, M.PRIMARY, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_PREPARE_FOR_REVERSE_REPLICATION, M.REPLICA, C.RECOVERED, {}, None),
    (Operation.COLLECTION_REVERSE_REPLICATION, M.REPLICA, C.COMMITTED, {}, None),
    (Operation.COLLECTION_REVERSE_REPLICATION, M.REPLICA, C.RECOVERED, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_REMOVE_RELATIONSHIP, M.PRIMARY, C.CRITICAL, {}, None),
    (Operation.COLLECTION_REMOVE_RELATIONSHIP, M.NONE, C.DISABLED, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_SUSPEND_REPLICATION, M.PRIMARY, C.REPLICATING, {}, None),
    (Operation.COLLECTION_SUSPEND_REPLICATION, M.PRIMARY, C.SUSPENDED, {}, ReturnCode.INVALID_STATE),
    (
        Operation.COLLECTION_SUSPEND_REPLICATION,
        M.PRIMARY,
        C.REPLICATING,
        {"job_running": True},
        ReturnCode.SYSTEM_IN_USE,
    ),
    (Operation.COLLECTION_RESUME_REPLICATION, M.REPLICA, C.SUSPENDED, {}, None),
    (Operation.COLLECTION_RESUME_REPLICATION, M.REPLICA, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_RESYNCHRONIZE, M.PRIMARY, C.WAITING_TO_START_RESYNCHRONIZATION, {}, None),
    (Operation.COLLECTION_TEST_REPLICA, M.REPLICA, C.REPLICATING, {"replication_received": True}, None),
    (
        Operation.COLLECTION_TEST_REPLICA,
        M.REPLICA,
        C.REPLICATING,
        {"replication_received": True, "test_system_exists": True},
        ReturnCode.INVALID_STATE,
    ),
    (Operation.COLLECTION_REVERT_TEST_REPLICA, M.REPLICA, C.REPLICATING, {"test_system_exists": True}, None),
    (Operation.COLLECTION_REVERT_TEST_REPLICA, M.REPLICA, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (
        Operation.COLLECTION_CANCEL_INITIAL_REPLICATION,
        M.PRIMARY,
        C.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        {"job_running": True},
        None,
    ),
    (Operation.COLLECTION_CANCEL_RESYNCHRONIZE, M.PRIMARY, C.RESYNCHRONIZING, {"job_running": True}, None),
    (Operation.COLLECTION_CANCEL_RESYNCHRONIZE, M.PRIMARY, C.REPLICATING, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_CANCEL_UPDATE_DISK_SET, M.PRIMARY, C.REPLICATING, {}, None),
    (Operation.COLLECTION_GET_REPLICATION_STATISTICS, M.REPLICA, C.REPLICATING, {"job_running": True}, None),
    (Operation.COLLECTION_RESET_REPLICATION_STATISTICS, M.NONE, C.DISABLED, {}, ReturnCode.INVALID_STATE),
    (Operation.COLLECTION_MODIFY_REPLICATION_SETTINGS, M.PRIMARY, C.REPLICATING, {}, None),
    (
        Operation.COLLECTION_MODIFY_REPLICATION_SETTINGS,
        M.REPLICA,
        C.REPLICATING,
        {},
        ReturnCode.INVALID_STATE,
    ),
]


@pytest.mark.parametrize(("operation", "mode", "state", "extra", "expected"), COLLECTION_CASES)
def test_collection_operations(operation, mode, state, extra, expected) -> None:
    facts = PreconditionFacts(mode=mode, collection_state=state, **extra)
    assert check(operation, facts) == expected


# ------------------------------------------------------------------------------------------------------
# Every operation × every state × every mode: check and require agree, nothing raises unexpectedly
# ------------------------------------------------------------------------------------------------------

ERROR_FOR = {
    ReturnCode.INVALID_STATE: InvalidState,
    ReturnCode.SYSTEM_IN_USE: InUse,
    ReturnCode.INVALID_PARAMETER: InvalidParameter,
}


@pytest.mark.parametrize("operation", list(Operation))
def test_require_matches_check_everywhere(operation: Operation) -> None:
    assert RULES[operation].operation is operation
    for mode in M:
        for state in STATES:
            for vm in (ON, OFF):
                for received in (False, True):
                    facts = PreconditionFacts(
                        mode=mode,
                        state=state,
                        vm_state=vm,
                        replication_received=received,
                        collection_state=None if state is None or state > 16 else C(int(state)),
                    )
                    verdict = check(operation, facts)
                    assert verdict in (None, *ERROR_FOR)
                    if verdict is None:
                        require(operation, facts)
                        continue
                    with pytest.raises(ERROR_FOR[verdict]) as raised:
                        require(operation, facts)
                    error = raised.value
                    assert error.code == verdict
                    assert error.message_id in MESSAGE_IDS
                    assert operation.label in error.message
                    assert mode.name.replace("_", " ").lower() in error.message


def test_require_message_names_operation_state_and_requirement() -> None:
    facts = PreconditionFacts(mode=M.PRIMARY, state=S.REPLICATING, vm_state=ON)
    with pytest.raises(InvalidState) as raised:
        require(Operation.COMMIT_FAILOVER, facts)
    message = str(raised.value)
    assert message.startswith(
        "Cannot commit failover: the virtual machine is in replication mode primary (1)"
    )
    assert "its primary relationship is in state replicating (3)" in message
    assert "requires replication mode replica (2) or extended replica (4) in state recovered (5)" in message
    assert raised.value.message_id == "PreconditionModeState"
    assert raised.value.args_map["operation"] == "commit_failover"


def test_require_in_use_message() -> None:
    with pytest.raises(InUse) as raised:
        require(Operation.SUSPEND_REPLICATION, replace(BASE_PRIMARY, job_running=True))
    assert raised.value.code == ReturnCode.SYSTEM_IN_USE
    assert raised.value.message_id == "PreconditionJobRunning"


def test_require_bad_point_is_invalid_parameter() -> None:
    with pytest.raises(InvalidParameter) as raised:
        require(Operation.INITIATE_FAILOVER, replace(BASE_REPLICA, point_valid=False))
    assert raised.value.message_id == "PreconditionNoRecoveryPoint"


# ------------------------------------------------------------------------------------------------------
# RequestReplicationStateChange values and target states
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "operation"),
    [
        (1, Operation.CANCEL_INITIAL_REPLICATION),
        (2, Operation.ENABLE_AS_REPLICA),
        (3, Operation.RESUME_REPLICATION),
        (4, Operation.PREPARE_PLANNED_FAILOVER),
        (7, Operation.SUSPEND_REPLICATION),
        (9, Operation.CANCEL_RESYNCHRONIZATION),
    ],
)
def test_requested_state_values(value: int, operation: Operation) -> None:
    assert operation_for_requested_state(value) is operation
    assert STATE_CHANGE_OPERATIONS[value] is operation


@pytest.mark.parametrize("value", [0, 5, 6, 8, 10, 11, 15, 16, 99, -1])
def test_unsupported_requested_state_is_invalid_parameter(value: int) -> None:
    with pytest.raises(InvalidParameter) as raised:
        operation_for_requested_state(value)
    assert raised.value.code == ReturnCode.INVALID_PARAMETER
    assert raised.value.message_id == "UnsupportedRequestedState"
    assert str(value) in str(raised.value)


TARGET_CASES = [
    # (operation, facts, target)
    (Operation.SUSPEND_REPLICATION, PreconditionFacts(M.PRIMARY, S.REPLICATING), S.SUSPENDED),
    (
        Operation.SUSPEND_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        S.SUSPENDED,
    ),
    (
        Operation.SUSPEND_REPLICATION,
        PreconditionFacts(M.REPLICA, S.RESYNCHRONIZING),
        S.RESYNCHRONIZATION_SUSPENDED,
    ),
    (Operation.RESUME_REPLICATION, PreconditionFacts(M.PRIMARY, S.SUSPENDED), S.REPLICATING),
    (Operation.RESUME_REPLICATION, PreconditionFacts(M.PRIMARY, S.CRITICAL), S.REPLICATING),
    (
        Operation.RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.SUSPENDED, initial_replication_complete=False),
        S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    ),
    (
        Operation.RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.WAITING_TO_START_RESYNCHRONIZATION),
        S.RESYNCHRONIZING,
    ),
    (
        Operation.RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.RESYNCHRONIZATION_SUSPENDED),
        S.RESYNCHRONIZING,
    ),
    (
        Operation.RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.DISK_UPDATE_CRITICAL),
        S.DISK_UPDATE_IN_PROGRESS,
    ),
    (
        Operation.CANCEL_RESYNCHRONIZATION,
        PreconditionFacts(M.PRIMARY, S.RESYNCHRONIZING),
        S.WAITING_TO_START_RESYNCHRONIZATION,
    ),
    (Operation.CANCEL_RESYNCHRONIZATION, PreconditionFacts(M.REPLICA, S.RESYNCHRONIZING), S.REPLICATING),
    (
        Operation.CANCEL_RESYNCHRONIZATION,
        PreconditionFacts(M.EXTENDED_REPLICA, S.RESYNCHRONIZING),
        S.REPLICATING,
    ),
    (
        Operation.CANCEL_INITIAL_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        S.READY_FOR_REPLICATION,
    ),
    (
        Operation.PREPARE_PLANNED_FAILOVER,
        PreconditionFacts(M.PRIMARY, S.REPLICATING),
        S.SYNCED_REPLICATION_COMPLETE,
    ),
    (Operation.ENABLE_AS_REPLICA, PreconditionFacts(M.NONE), S.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
    (Operation.CREATE_RELATIONSHIP, PreconditionFacts(M.NONE), S.READY_FOR_REPLICATION),
    (
        Operation.START_REPLICATION,
        PreconditionFacts(M.PRIMARY, S.READY_FOR_REPLICATION),
        S.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    ),
    (
        Operation.IMPORT_INITIAL_REPLICA,
        PreconditionFacts(M.REPLICA, S.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        S.REPLICATING,
    ),
    (Operation.INITIATE_FAILOVER, PreconditionFacts(M.REPLICA, S.REPLICATING), S.RECOVERED),
    (Operation.COMMIT_FAILOVER, PreconditionFacts(M.REPLICA, S.RECOVERED), S.COMMITTED),
    (Operation.REVERT_FAILOVER, PreconditionFacts(M.REPLICA, S.RECOVERED), S.REPLICATING),
    (
        Operation.REVERT_FAILOVER,
        PreconditionFacts(M.REPLICA, S.RECOVERED, state_before_failover=S.SUSPENDED),
        S.SUSPENDED,
    ),
    (Operation.REVERT_FAILOVER, PreconditionFacts(M.PRIMARY, S.SYNCED_REPLICATION_COMPLETE), S.REPLICATING),
    (
        Operation.RESYNCHRONIZE,
        PreconditionFacts(M.PRIMARY, S.WAITING_TO_START_RESYNCHRONIZATION),
        S.RESYNCHRONIZING,
    ),
    (Operation.REMOVE_RELATIONSHIP, PreconditionFacts(M.PRIMARY, S.REPLICATING), S.DISABLED),
    (Operation.INITIATE_FAILBACK, PreconditionFacts(M.REPLICA, S.COMMITTED), S.FAILBACK_IN_PROGRESS),
    (Operation.TEST_REPLICA_SYSTEM, PreconditionFacts(M.REPLICA, S.REPLICATING), None),
    (Operation.MODIFY_REPLICATION_SETTINGS, PreconditionFacts(M.PRIMARY, S.REPLICATING), None),
    (Operation.REVERSE_REPLICATION, PreconditionFacts(M.REPLICA, S.COMMITTED), None),
    (Operation.GET_REPLICATION_STATISTICS, PreconditionFacts(M.PRIMARY, S.REPLICATING), None),
]


@pytest.mark.parametrize(("operation", "facts", "target"), TARGET_CASES)
def test_target_state(
    operation: Operation, facts: PreconditionFacts, target: ReplicationState | None
) -> None:
    assert check(operation, facts) is None or operation in (
        Operation.INITIATE_FAILOVER,
        Operation.TEST_REPLICA_SYSTEM,
    )
    assert target_state(operation, facts) == target


COLLECTION_TARGET_CASES = [
    (
        Operation.COLLECTION_SUSPEND_REPLICATION,
        PreconditionFacts(M.PRIMARY, collection_state=C.RESYNCHRONIZING),
        C.SUSPENDED,
    ),
    (
        Operation.COLLECTION_RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, collection_state=C.SUSPENDED),
        C.REPLICATING,
    ),
    (
        Operation.COLLECTION_RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, collection_state=C.SUSPENDED, initial_replication_complete=False),
        C.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    ),
    (
        Operation.COLLECTION_RESUME_REPLICATION,
        PreconditionFacts(M.PRIMARY, collection_state=C.WAITING_TO_START_RESYNCHRONIZATION),
        C.RESYNCHRONIZING,
    ),
    (
        Operation.COLLECTION_CANCEL_RESYNCHRONIZE,
        PreconditionFacts(M.PRIMARY, collection_state=C.RESYNCHRONIZING),
        C.WAITING_TO_START_RESYNCHRONIZATION,
    ),
    (
        Operation.COLLECTION_CANCEL_RESYNCHRONIZE,
        PreconditionFacts(M.REPLICA, collection_state=C.RESYNCHRONIZING),
        C.REPLICATING,
    ),
    (
        Operation.COLLECTION_INITIATE_PLANNED_FAILOVER,
        PreconditionFacts(M.PRIMARY, collection_state=C.REPLICATING),
        C.PLANNED_FAILOVER_INITIATED,
    ),
    (
        Operation.COLLECTION_REVERT_PLANNED_FAILOVER,
        PreconditionFacts(M.PRIMARY, collection_state=C.PLANNED_FAILOVER_INITIATED),
        C.REPLICATING,
    ),
    (
        Operation.COLLECTION_INITIATE_FAILOVER,
        PreconditionFacts(M.REPLICA, collection_state=C.REPLICATING),
        C.RECOVERED,
    ),
    (
        Operation.COLLECTION_COMMIT_FAILOVER,
        PreconditionFacts(M.REPLICA, collection_state=C.RECOVERED),
        C.COMMITTED,
    ),
    (
        Operation.COLLECTION_REMOVE_RELATIONSHIP,
        PreconditionFacts(M.PRIMARY, collection_state=C.REPLICATING),
        C.DISABLED,
    ),
    (Operation.COLLECTION_TEST_REPLICA, PreconditionFacts(M.REPLICA, collection_state=C.REPLICATING), None),
]


@pytest.mark.parametrize(("operation", "facts", "target"), COLLECTION_TARGET_CASES)
def test_collection_target_state(operation, facts, target) -> None:
    assert collection_target_state(operation, facts) == target


def test_target_state_refuses_the_wrong_scope() -> None:
    with pytest.raises(ValueError, match="collection"):
        target_state(Operation.COLLECTION_SUSPEND_REPLICATION, PreconditionFacts(M.PRIMARY))
    with pytest.raises(ValueError, match="per-VM"):
        collection_target_state(Operation.SUSPEND_REPLICATION, PreconditionFacts(M.PRIMARY))


def test_every_rule_is_documented_where_the_spec_is_inferred() -> None:
    inferred = [rule for rule in RULES.values() if rule.note.startswith("[I]")]
    assert inferred, "the [I] choices must be written down in the rows"
    assert all(rule.allowances for rule in RULES.values())
