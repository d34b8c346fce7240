"""The required table-driven matrix: every replication method × every mode × every state → the exact code.

Cases are generated from the precondition table (``domain.preconditions.RULES``), not picked by hand: for
every method of hyperv-api §3 (per-VM), §4 (every RequestedState) and §8.1 (collections), the VM or
collection is
put in the store in each ReplicationMode × ReplicationState (and, where the rule looks at them, VM on/off, "a
replication was received", an extended relationship, a running job); the method is invoked through the real
object manager with pywbem values (REFs as CIMInstanceName, embedded instances as CIM-XML text, scalars
untyped as a wbemcli client sends them). The methods run through the daemon's real composition (engine
entries over the fake hypervisor; jobs are persisted, not run). The expected code is the table's verdict when
it refuses — and then nothing in the store changed — else 4096 with a persisted job of the method's JobType
for the methods that work as jobs, 0 for those that finish at once, and 32770 for InitiateFailback (only
external providers fail back that way).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pywbem import Uint16

from standby.domain.enums import (
    CollectionReplicationState,
    EnabledState,
    JobType,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.preconditions import (
    HAS_EXTENDED,
    IR_PENDING,
    NO_EXTENDED,
    POINT_VALID,
    PRIMARY_FREE_OF_EXTENDED,
    REPLICATION_RECEIVED,
    RULES,
    STATE_CHANGE_OPERATIONS,
    VM_OFF,
    Operation,
    PreconditionFacts,
    check,
)
from standby.engine.collections import GUARDS
from standby.engine.operations import CollectionUseCase, UseCase
from tests.unit.test_cim_support import (
    CLUSTER,
    VM_ID,
    World,
    collection_path,
    embedded,
    entry_xml,
    make_world,
    network_xml,
    put_collection,
    put_running_job,
    put_vm,
    relationship_xml,
    service_path,
    settings_xml,
    vm_path,
)

#: An existing (empty) folder: the import job starts; what it finds there is the job's business.
IMPORT_FOLDER = tempfile.mkdtemp(prefix="standby-import-")
_M = ReplicationMode
_I = RelationshipIndex
_O = Operation
_RECEIVED_CHECKS = (REPLICATION_RECEIVED, POINT_VALID, IR_PENDING)
_EXTENDED_CHECKS = (NO_EXTENDED, HAS_EXTENDED, PRIMARY_FREE_OF_EXTENDED)
#: States a running job is tried in (the job check comes first, so these show both kinds of rules).
_S = ReplicationState
_JOB_STATES = (_S.READY_FOR_REPLICATION, _S.REPLICATING, _S.RECOVERED, _S.SUSPENDED, _S.RESYNCHRONIZING,
               _S.COMMITTED)


@dataclass(frozen=True)
class VmMethod:
    """One per-VM method: which rule guards it, which relationship it targets, its other parameters."""

    name: str
    use_case: UseCase
    operation: Callable[[ReplicationMode], Operation]
    params: Callable[[], dict[str, object]] = dict
    extended_on_replica: bool = False
    on_vm: bool = False  # an Msvm_ComputerSystem method (RequestReplicationStateChange[Ex])
    requested_state: int | None = None

    def index(self, mode: ReplicationMode) -> RelationshipIndex:
        """The relationship the call targets."""
        if self.extended_on_replica and mode == _M.REPLICA:
            return _I.EXTENDED
        return _I.EXTENDED if self.name == "ChangeReplicationModeToPrimary" else _I.PRIMARY


def _fixed(operation: Operation) -> Callable[[ReplicationMode], Operation]:
    return lambda mode: operation


def _create(mode: ReplicationMode) -> Operation:
    return _O.CREATE_EXTENDED_RELATIONSHIP if mode == _M.REPLICA else _O.CREATE_RELATIONSHIP


def _rsd() -> dict[str, object]:
    return {"ReplicationSettingData": settings_xml()}


def _rel(index: int) -> Callable[[], dict[str, object]]:
    return lambda: {"ReplicationRelationship": relationship_xml(index)}


U = UseCase
VM_METHODS: list[VmMethod] = [
    VmMethod("CreateReplicationRelationship", U.CREATE_REPLICATION_RELATIONSHIP, _create, _rsd,
             extended_on_replica=True),
    VmMethod("StartReplication", U.START_REPLICATION, _fixed(_O.START_REPLICATION),
             lambda: {"InitialReplicationType": "1", "StartTime": None}, extended_on_replica=True),
    VmMethod("ImportInitialReplica", U.IMPORT_INITIAL_REPLICA, _fixed(_O.IMPORT_INITIAL_REPLICA),
             lambda: {"InitialReplicationImportLocation": IMPORT_FOLDER}),
    VmMethod("InitiateFailover", U.INITIATE_FAILOVER, _fixed(_O.INITIATE_FAILOVER),
             lambda: {"SnapshotSettingData": None}),
    VmMethod("TestReplicaSystem", U.TEST_REPLICA_SYSTEM, _fixed(_O.TEST_REPLICA_SYSTEM)),
    VmMethod("RevertFailover", U.REVERT_FAILOVER, _fixed(_O.REVERT_FAILOVER)),
    VmMethod("CommitFailover", U.COMMIT_FAILOVER, _fixed(_O.COMMIT_FAILOVER)),
    VmMethod("ReverseReplicationRelationship", U.REVERSE_REPLICATION_RELATIONSHIP,
             _fixed(_O.REVERSE_REPLICATION), _rsd),
    VmMethod("ChangeReplicationModeToPrimary", U.CHANGE_REPLICATION_MODE_TO_PRIMARY,
             _fixed(_O.CHANGE_MODE_TO_PRIMARY), _rel(1)),
    VmMethod("RemoveReplicationRelationship", U.REMOVE_REPLICATION_RELATIONSHIP,
             _fixed(_O.REMOVE_RELATIONSHIP)),
    VmMethod("RemoveReplicationRelationshipEx", U.REMOVE_REPLICATION_RELATIONSHIP,
             _fixed(_O.REMOVE_RELATIONSHIP), _rel(0)),
    VmMethod("ModifyReplicationSettings", U.MODIFY_REPLICATION_SETTINGS,
             _fixed(_O.MODIFY_REPLICATION_SETTINGS), _rsd, extended_on_replica=True),
    VmMethod("Resynchronize", U.RESYNCHRONIZE, _fixed(_O.RESYNCHRONIZE), lambda: {"StartTime": None},
             extended_on_replica=True),
    VmMethod("SetFailoverNetworkAdapterSettings", U.SET_FAILOVER_NETWORK_ADAPTER_SETTINGS,
             _fixed(_O.SET_FAILOVER_NETWORK_SETTINGS), lambda: {"NetworkSettings": [network_xml()]}),
    VmMethod("GetReplicationStatistics", U.GET_REPLICATION_STATISTICS,
             _fixed(_O.GET_REPLICATION_STATISTICS)),
    VmMethod("GetReplicationStatisticsEx", U.GET_REPLICATION_STATISTICS,
             _fixed(_O.GET_REPLICATION_STATISTICS), _rel(0)),
    VmMethod("ResetReplicationStatistics", U.RESET_REPLICATION_STATISTICS,
             _fixed(_O.RESET_REPLICATION_STATISTICS)),
    VmMethod("ResetReplicationStatisticsEx", U.RESET_REPLICATION_STATISTICS,
             _fixed(_O.RESET_REPLICATION_STATISTICS), _rel(0)),
    VmMethod("InitiateFailback", U.INITIATE_FAILBACK, _fixed(_O.INITIATE_FAILBACK),
             lambda: {**_rsd(), "RecoveryPointIdentifier": None}),
    VmMethod("SetAuthorizationEntry", U.SET_AUTHORIZATION_ENTRY, _fixed(_O.SET_AUTHORIZATION_ENTRY),
             lambda: {"AuthorizationEntry": entry_xml()}),
]
for _state, _operation in STATE_CHANGE_OPERATIONS.items():
    VM_METHODS.append(VmMethod("RequestReplicationStateChange", U.REQUEST_REPLICATION_STATE_CHANGE,
                               _fixed(_operation), lambda s=_state: {"RequestedState": str(s)}, on_vm=True,
                               requested_state=_state))
    VM_METHODS.append(VmMethod("RequestReplicationStateChangeEx", U.REQUEST_REPLICATION_STATE_CHANGE,
                               _fixed(_operation),
                               lambda s=_state: {"RequestedState": str(s), **_rel(0)()}, on_vm=True,
                               requested_state=_state))


@dataclass(frozen=True)
class VmCase:
    """One row of the per-VM matrix."""

    method: VmMethod
    mode: ReplicationMode
    state: ReplicationState | None
    on: bool = False
    received: bool = True
    extended: bool = False
    job_running: bool = False
    #: A recovery point is stored (normally whenever a replication was received).
    point: bool | None = None

    @property
    def has_point(self) -> bool:
        """Whether the store holds a recovery point of the VM."""
        return self.received if self.point is None else self.point

    @property
    def id(self) -> str:
        """A readable pytest id."""
        state = "none" if self.state is None else str(int(self.state))
        rs = f"[{self.method.requested_state}]" if self.method.requested_state is not None else ""
        flags = "".join(f for f, on in (("-on", self.on), ("-rx", self.received), ("-ext", self.extended),
                                         ("-job", self.job_running), ("-nopoint", not self.has_point))
                        if on)
        return f"{self.method.name}{rs}-m{int(self.mode)}-s{state}{flags}"


def _vm_cases() -> Iterator[VmCase]:
    states: list[ReplicationState | None] = [None, *ReplicationState]
    for method in VM_METHODS:
        for mode in _M:
            rule = RULES[method.operation(mode)]
            ons = (False, True) if VM_OFF in rule.checks else (False,)
            receiveds = (False, True) if any(c in rule.checks for c in _RECEIVED_CHECKS) else (True,)
            relevant = method.extended_on_replica or any(c in rule.checks for c in _EXTENDED_CHECKS)
            extendeds = (False, True) if mode == _M.REPLICA and relevant else (False,)
            for state in states:
                for on in ons:
                    for received in receiveds:
                        for extended in extendeds:
                            yield VmCase(method, mode, state, on, received, extended)
                if POINT_VALID in rule.checks:
                    yield VmCase(method, mode, state, received=True, point=False)
                if state in _JOB_STATES:
                    yield VmCase(method, mode, state, job_running=True)


VM_CASES = list(_vm_cases())


def expected_vm_code(case: VmCase) -> int:
    """The code the spec table gives for this case (built from the case, independently of the engine)."""
    method, mode = case.method, case.mode
    operation = method.operation(mode)
    index = method.index(mode)
    states = {_I.PRIMARY: case.state}
    if case.extended and case.state is not None:
        states[_I.EXTENDED] = case.state
    judged = states.get(_I.PRIMARY if operation is _O.CHANGE_MODE_TO_PRIMARY else index)
    received = case.received and judged is not None
    facts = PreconditionFacts(
        mode=mode, state=judged, index=index,
        vm_state=EnabledState.ENABLED if case.on else EnabledState.DISABLED,
        replication_received=received, initial_replication_complete=received,
        has_extended_relationship=_I.EXTENDED in states, job_running=case.job_running,
        point_valid=case.has_point,
    )
    verdict = check(operation, facts)
    if verdict is not None:
        return int(verdict)
    if method.use_case is U.INITIATE_FAILBACK:
        return 32770
    if method.name == "CreateReplicationRelationship" and mode == _M.REPLICA and case.state is None:
        return 32773  # the extended relationship is built on the primary one, which is missing
    return 0 if method.use_case in _SYNCHRONOUS else 4096


#: Methods that finish their work before they answer.
_SYNCHRONOUS = frozenset({U.GET_REPLICATION_STATISTICS, U.RESET_REPLICATION_STATISTICS,
                          U.SET_FAILOVER_NETWORK_ADAPTER_SETTINGS, U.SET_AUTHORIZATION_ENTRY})


def expected_job_type(case: VmCase) -> JobType:
    """The JobType the admitted method's job carries (docs/hyperv-api.md §3.2, §4, §7)."""
    method, mode = case.method, case.mode
    if method.requested_state is not None:
        return JobType.REPLICATE_STATE_CHANGE
    resync = JobType.RESYNCHRONIZING_EXTENDED_REPLICATION if mode == _M.REPLICA else JobType.RESYNCHRONIZING
    table = {
        U.CREATE_REPLICATION_RELATIONSHIP: JobType.CREATE_REPLICATION_RELATIONSHIP,
        U.IMPORT_INITIAL_REPLICA: JobType.IMPORT_REPLICATION,
        U.INITIATE_FAILOVER: JobType.INITIATE_FAILOVER,
        U.TEST_REPLICA_SYSTEM: JobType.INITIATE_TEST_REPLICA,
        U.REVERT_FAILOVER: JobType.REVERT_FAILOVER,
        U.COMMIT_FAILOVER: JobType.COMMIT_FAILOVER,
        U.REVERSE_REPLICATION_RELATIONSHIP: JobType.REVERSE_REPLICATION,
        U.CHANGE_REPLICATION_MODE_TO_PRIMARY: JobType.CHANGE_REPLICATION_MODE_TO_PRIMARY,
        U.REMOVE_REPLICATION_RELATIONSHIP: JobType.REMOVE_REPLICATION_RELATIONSHIP,
        U.MODIFY_REPLICATION_SETTINGS: JobType.MODIFY_REPLICATION_RELATIONSHIP_SETTINGS,
        U.START_REPLICATION: JobType.START_INBAND_INITIAL_REPLICATION,
        U.RESYNCHRONIZE: resync,
    }
    return table[method.use_case]


def snapshot(world: World) -> tuple[object, ...]:
    """What a refused call must leave as it was: every VM, relationship, point, job and entry."""
    db = world.db
    return (db.vms.list(), db.relationships.list(),
            db.recovery_points.list(), db.jobs.list(), db.auth_entries.list(), db.collections.list(),
            db.failover_network.list())


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.mark.parametrize("case", VM_CASES, ids=[c.id for c in VM_CASES])
def test_vm_method_matrix(world: World, case: VmCase) -> None:
    world.reset()
    put_vm(world, mode=case.mode, state=case.state, on=case.on, received=case.received,
           extended=case.extended, point=case.has_point)
    if case.job_running:
        put_running_job(world, VM_ID)
    params = case.method.params()
    before = snapshot(world)
    if case.method.on_vm:
        code, out = world.invoke(vm_path(), case.method.name, **params)
    else:
        code, out = world.invoke(service_path(), case.method.name, ComputerSystem=vm_path(), **params)
    expected = expected_vm_code(case)
    assert code == expected
    if expected == 4096:
        job = world.db.jobs.get(str(out["Job"].keybindings["InstanceID"]))
        assert job.job_type == expected_job_type(case)
        assert job.element_id.split(":")[0] in (VM_ID, _test_vm_of(world))
    elif expected != 0:
        assert out.get("Job") is None
        assert snapshot(world) == before


@pytest.mark.parametrize("requested", [0, 5, 6, 8, 10, 15, 65535])
@pytest.mark.parametrize("method", ["RequestReplicationStateChange", "RequestReplicationStateChangeEx"])
def test_unsupported_requested_state_is_invalid_parameter(world: World, method: str, requested: int) -> None:
    world.reset()
    put_vm(world, mode=_M.PRIMARY, state=ReplicationState.REPLICATING, received=True)
    code, _ = world.invoke(vm_path(), method, RequestedState=str(requested))
    assert code == 32773


# -- collections (hyperv-api §8.1) ---------------------------------------------------------------------------


def _collection_params(use_case: CollectionUseCase) -> dict[str, object]:
    xml = embedded("Msvm_CollectionReplicationSettingData", ElementName="group",
                   RecoveryConnectionPoint="replica.example.com", RecoveryServerPortNumber=Uint16(8443),
                   ReplicationInterval=Uint16(300))
    return {
        CollectionUseCase.CREATE_REPLICATION_RELATIONSHIP: {"CollectionReplicationSettingData": xml},
        CollectionUseCase.MODIFY_REPLICATION_SETTINGS: {"CollectionReplicationSettingData": xml},
        CollectionUseCase.REVERSE_REPLICATION_RELATIONSHIP: {"CollectionReplicationSettingData": xml},
        CollectionUseCase.START_REPLICATION: {"InitialReplicationType": "3"},
        CollectionUseCase.INITIATE_FAILOVER: {"CollectionRecoveryPoint": None},
        CollectionUseCase.TEST_REPLICA_COLLECTION: {"CollectionRecoveryPoint": None},
        CollectionUseCase.RESYNCHRONIZE: {"StartTime": None, "IncludeSuspended": "TRUE"},
    }.get(use_case, {})


@dataclass(frozen=True)
class CollectionCase:
    """One row of the collection matrix."""

    use_case: CollectionUseCase
    mode: ReplicationMode
    state: CollectionReplicationState
    on: bool = False
    received: bool = True
    job_running: bool = False

    @property
    def id(self) -> str:
        """A readable pytest id."""
        flags = "".join(f for f, on in (("-on", self.on), ("-rx", self.received), ("-job", self.job_running))
                        if on)
        return f"{self.use_case.value}-m{int(self.mode)}-s{int(self.state)}{flags}"


_C = CollectionReplicationState
_COLLECTION_JOB_STATES = (_C.READY_FOR_REPLICATION, _C.REPLICATING, _C.RECOVERED, _C.RESYNCHRONIZING)


def _collection_cases() -> Iterator[CollectionCase]:
    for use_case, operation in GUARDS.items():
        rule = RULES[operation]
        ons = (False, True) if VM_OFF in rule.checks else (False,)
        receiveds = (False, True) if any(c in rule.checks for c in _RECEIVED_CHECKS) else (True,)
        for mode in _M:
            for state in CollectionReplicationState:
                for on in ons:
                    for received in receiveds:
                        yield CollectionCase(use_case, mode, state, on, received)
                if state in _COLLECTION_JOB_STATES:
                    yield CollectionCase(use_case, mode, state, job_running=True)


COLLECTION_CASES = list(_collection_cases())


def expected_collection_code(case: CollectionCase) -> int:
    """The table's verdict for a collection case, else 0 / 32770."""
    operation = GUARDS[case.use_case]
    facts = PreconditionFacts(
        mode=case.mode, vm_state=EnabledState.ENABLED if case.on else EnabledState.DISABLED,
        replication_received=case.received, initial_replication_complete=case.received,
        job_running=case.job_running, point_valid=case.received, collection_state=case.state,
    )
    verdict = check(operation, facts)
    if verdict is not None:
        return int(verdict)
    if case.use_case is CollectionUseCase.CANCEL_UPDATE_DISK_SET:
        return 32770
    return 0 if case.use_case in _COLLECTION_SYNCHRONOUS else 4096


_COLLECTION_SYNCHRONOUS = frozenset({CollectionUseCase.GET_REPLICATION_STATISTICS,
                                     CollectionUseCase.RESET_REPLICATION_STATISTICS})


@pytest.mark.parametrize("case", COLLECTION_CASES, ids=[c.id for c in COLLECTION_CASES])
def test_collection_method_matrix(world: World, case: CollectionCase) -> None:
    world.reset()
    put_collection(world, mode=case.mode, state=case.state, on=case.on, received=case.received)
    if case.job_running:
        put_running_job(world, "GROUP-1")
    target = service_path("Msvm_CollectionReplicationService", "CollectionReplicationService", CLUSTER)
    before = snapshot(world)
    code, out = world.invoke(target, case.use_case.value, Collection=collection_path(),
                             **_collection_params(case.use_case))
    expected = expected_collection_code(case)
    assert code == expected
    if expected == 4096:
        job = world.db.jobs.get(str(out["Job"].keybindings["InstanceID"]))
        assert not job.state.is_terminal
    elif expected != 0:
        assert snapshot(world) == before


def test_matrix_is_large_and_covers_every_method() -> None:
    assert len(VM_CASES) + len(COLLECTION_CASES) > 5000
    assert {m.name for m in VM_METHODS} >= {
        "CreateReplicationRelationship", "StartReplication", "ImportInitialReplica", "InitiateFailover",
        "TestReplicaSystem", "RevertFailover", "CommitFailover", "ReverseReplicationRelationship",
        "ChangeReplicationModeToPrimary", "RemoveReplicationRelationship", "RemoveReplicationRelationshipEx",
        "ModifyReplicationSettings", "Resynchronize", "SetFailoverNetworkAdapterSettings",
        "GetReplicationStatistics", "GetReplicationStatisticsEx", "ResetReplicationStatistics",
        "ResetReplicationStatisticsEx", "InitiateFailback", "SetAuthorizationEntry",
        "RequestReplicationStateChange", "RequestReplicationStateChangeEx",
    }
    assert {c.use_case for c in COLLECTION_CASES} == set(GUARDS)
    # Every code the table can give shows up somewhere, besides 0 and 32770.
    codes = {expected_vm_code(c) for c in VM_CASES} | {expected_collection_code(c) for c in COLLECTION_CASES}
    assert codes >= {0, 4096, 32770, 32773, 32774, 32775}


def _test_vm_of(world: World) -> str | None:
    tests = [vm for vm in world.db.vms.list() if vm.replication_mode == _M.TEST_REPLICA]
    return tests[0].vm_id if tests else None
