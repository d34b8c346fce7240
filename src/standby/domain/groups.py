"""Pure rules of VM groups and redundancy sets (hyperv-api §8, §9.10; issue 7).

- ``CutTag``: what a group cut writes into every member's log header (``extra["collection"]``) so the
  replica can assemble the ``Msvm_CollectionRecoveryPoint`` once every member's log of that cut is applied;
- ``assemble``: that decision, from the member points found;
- ``GroupCycleRecord`` and ``group_statistics``: the collection's cycles and its
  ``Msvm_CollectionReplicationStatistics``;
- ``failover_unit`` / ``require_member_failover``: a member's own failover operations are refused while its
  collection is failed over (or prepared for a planned failover) as a whole;
- ``redundancy_status``: RedundancyStatus of a VM's set from its relationship;
- ``failover_code``: the seed-000 code (0-4) for an error of ``Msvm_RedundancySet.Failover``;
- ``FailoverIndication``: one ``Msvm_FailoverIndication`` record per move.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from standby.domain import errors
from standby.domain.entities import Collection, CollectionRecoveryPoint, Relationship
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    FailoverCode,
    FailoverIndicationType,
    PerceivedSeverity,
    RedundancyStatus,
    ReplicationHealth,
    ReplicationState,
)
from standby.domain.errors import (
    IncorrectDataType,
    InUse,
    InvalidParameter,
    InvalidState,
    NotSupported,
    StandbyError,
)
from standby.domain.preconditions import Operation

#: The key of a group cut's tag in a log header's ``extra``.
CUT_TAG_KEY = "collection"
#: Relationship states of a replica that is failed over and not reversed yet.
_FAILED_OVER = frozenset({ReplicationState.RECOVERED, ReplicationState.COMMITTED,
                          ReplicationState.FAILOVER_IN_PROGRESS})


class MalformedTag(InvalidParameter):
    """A log header's collection tag is not what a group cut writes."""


@dataclass(frozen=True, slots=True)
class CutTag:
    """One group cut, as every member's log carries it."""

    collection_id: str
    name: str
    cut_id: str
    members: tuple[str, ...]
    created_at: str
    pause_ms: float
    app_consistent: bool = False

    def to_extra(self) -> dict[str, object]:
        """The JSON-able mapping for ``LogHeader.extra[CUT_TAG_KEY]``."""
        return {"id": self.collection_id, "name": self.name, "cut": self.cut_id,
                "members": list(self.members), "created_at": self.created_at, "pause_ms": self.pause_ms,
                "app": self.app_consistent}

    @classmethod
    def from_extra(cls, extra: Mapping[str, object]) -> CutTag | None:
        """The tag in a header's ``extra`` (None when the log is not part of a group cut)."""
        raw = extra.get(CUT_TAG_KEY)
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise MalformedTag("the collection tag of the log is not an object",
                               message_id="CollectionTagMalformed", missing="object")
        try:
            members = raw["members"]
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members) or not members:
                raise TypeError("members")
            return cls(str(raw["id"]), str(raw["name"]), str(raw["cut"]), tuple(members),
                       str(raw["created_at"]), float(raw["pause_ms"]), bool(raw.get("app", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedTag(f"the collection tag of the log lacks {exc}",
                               message_id="CollectionTagMalformed", missing=str(exc)) from exc


def consistency(app_consistent: Iterable[bool]) -> ConsistencyLevel:
    """1 Application Consistent when every member froze through its guest agent, else 3 Group Crash
    Consistent (hyperv-api §8.3)."""
    flags = list(app_consistent)
    return ConsistencyLevel.APPLICATION_CONSISTENT if flags and all(flags) \
        else ConsistencyLevel.GROUP_CRASH_CONSISTENT


def assemble(tag: CutTag, found: Mapping[str, tuple[str, bool]], created_at: datetime
             ) -> CollectionRecoveryPoint | None:
    """The collection point of ``tag`` once every member has its point (``found``: vm → (point id,
    app-consistent)); None while one is missing."""
    if any(member not in found for member in tag.members):
        return None
    members = tuple((vm, found[vm][0]) for vm in tag.members)
    return CollectionRecoveryPoint(tag.cut_id, tag.collection_id, created_at,
                                   consistency(found[vm][1] for vm in tag.members), members, tag.pause_ms)


def complete(point: CollectionRecoveryPoint, existing_point_ids: set[str]) -> bool:
    """Whether every member point of a collection point still exists (retention may merge one away)."""
    return bool(point.members) and all(rp in existing_point_ids for _, rp in point.members)


# -- group cycles and statistics -----------------------------------------------------------------------------


class GroupOutcome(StrEnum):
    """How one group cycle ended."""

    SUCCESS = "success"
    MISS = "miss"  # not every member could take part (one not replicating, the last cycle overran)
    NETWORK = "network"  # a member's log could not reach the replica
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class GroupCycleRecord:
    """One group cycle of a collection."""

    collection_id: str
    cut_id: str
    outcome: GroupOutcome
    started_at: datetime
    finished_at: datetime
    wire_bytes: int = 0
    pause_ms: float = 0.0
    consistency: ConsistencyLevel = ConsistencyLevel.UNKNOWN
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    """``Msvm_CollectionReplicationStatistics`` over one window (hyperv-api §8.4)."""

    start: datetime
    end: datetime
    success_count: int
    miss_count: int
    size: int
    max_size: int
    network_failures: int
    failures: int
    app_consistent_failures: int
    health: ReplicationHealth
    max_latency_seconds: int
    last_success: datetime | None
    max_pause_ms: float
    last_pause_ms: float
    last_test_failover: datetime | None = None


def group_statistics(records: Sequence[GroupCycleRecord], start: datetime, end: datetime,
                     health: ReplicationHealth, *, app_failures: int = 0,
                     last_test_failover: datetime | None = None) -> GroupStatistics:
    """Totals of the group cycles finished in ``[start, end)``."""
    window = [r for r in records if start <= r.finished_at < end or r.finished_at == end]
    ok = [r for r in window if r.outcome is GroupOutcome.SUCCESS]
    latency = [max(0, int(-(-(r.finished_at - r.started_at).total_seconds() // 1))) for r in ok]
    return GroupStatistics(
        start=start, end=end, success_count=len(ok),
        miss_count=sum(r.outcome is GroupOutcome.MISS for r in window),
        size=sum(r.wire_bytes for r in ok), max_size=max((r.wire_bytes for r in ok), default=0),
        network_failures=sum(r.outcome is GroupOutcome.NETWORK for r in window),
        failures=sum(r.outcome is GroupOutcome.FAILURE for r in window),
        app_consistent_failures=app_failures, health=health,
        max_latency_seconds=max(latency, default=0),
        last_success=max((r.finished_at for r in ok), default=None),
        max_pause_ms=max((r.pause_ms for r in ok), default=0.0),
        last_pause_ms=ok[-1].pause_ms if ok else 0.0,
        last_test_failover=last_test_failover,
    )


def group_health(member_health: Iterable[ReplicationHealth]) -> ReplicationHealth:
    """A collection is as healthy as its least healthy member."""
    values = [h for h in member_health if h is not ReplicationHealth.NOT_APPLICABLE]
    return max(values, default=ReplicationHealth.NOT_APPLICABLE)


# -- failover of a member: the collection is the unit -------------------------------------------------------

#: Collection states that carry a failover of the members as a whole (on the primary: the prepare of a planned
#: one). Hyper-V then takes failover operations on the collection only, never on one of its members.
COLLECTION_FAILOVER_STATES = frozenset({
    CollectionReplicationState.FAILOVER_INITIATED, CollectionReplicationState.RECOVERED,
    CollectionReplicationState.COMMITTED, CollectionReplicationState.PLANNED_FAILOVER_INITIATED,
    CollectionReplicationState.PARTIALLY_RECOVERED})
#: The per-VM operations this concerns, with the method of the collection to use instead.
MEMBER_FAILOVER_OPERATIONS: Mapping[Operation, str] = {
    Operation.INITIATE_FAILOVER: "InitiateFailover",
    Operation.REVERT_FAILOVER: "RevertFailover",
    Operation.COMMIT_FAILOVER: "CommitFailover",
}


def failover_unit(operation: Operation, collections: Iterable[Collection]) -> Collection | None:
    """The collection (of those holding the VM) whose failover as a whole rules out ``operation`` on the VM
    itself, or None when the VM may have it (another operation, or no collection in a failover state)."""
    if operation not in MEMBER_FAILOVER_OPERATIONS:
        return None
    for collection in collections:
        if collection.replication_state in COLLECTION_FAILOVER_STATES:
            return collection
    return None


def require_member_failover(operation: Operation, vm_name: str, collections: Iterable[Collection]) -> None:
    """Raise ``InvalidState`` (32775, ``CollectionIsFailoverUnit``, naming the collection) when
    ``failover_unit`` finds one; else nothing."""
    collection = failover_unit(operation, collections)
    if collection is None:
        return
    method = MEMBER_FAILOVER_OPERATIONS[operation]
    state = int(collection.replication_state)
    raise InvalidState(f"{vm_name} is a member of collection {collection.name}, which is failed over as a "
                       f"whole (collection state {state}): call {method} on the collection, not on a member",
                       message_id="CollectionIsFailoverUnit", vm=vm_name, collection=collection.name,
                       state=state, method=method)


# -- redundancy sets ----------------------------------------------------------------------------------------


def redundancy_status(relationship: Relationship | None, *, can_run: bool = True) -> RedundancyStatus:
    """RedundancyStatus of a VM's set (issue 7): 2 when replicating with health Ok, 3 on Warning, 4 on
    Critical or failed over and not reversed, 5 when no member can run."""
    if not can_run:
        return RedundancyStatus.OVERALL_FAILURE
    if relationship is None:
        return RedundancyStatus.UNKNOWN
    if relationship.state in _FAILED_OVER or relationship.health is ReplicationHealth.CRITICAL:
        return RedundancyStatus.REDUNDANCY_LOST
    if relationship.state is ReplicationState.REPLICATING and relationship.health is ReplicationHealth.OK:
        return RedundancyStatus.FULLY_REDUNDANT
    return RedundancyStatus.DEGRADED_REDUNDANCY  # Warning, or not replicating yet (IR, suspended, resync)


def failover_code(error: BaseException) -> FailoverCode:
    """The seed-000 code of a Failover refusal: 1 not supported, 3 busy, 4 parameter error, 2 else."""
    if isinstance(error, NotSupported):
        return FailoverCode.NOT_SUPPORTED
    if isinstance(error, InUse):
        return FailoverCode.BUSY
    if isinstance(error, (InvalidParameter, IncorrectDataType)):
        return FailoverCode.PARAMETER_ERROR
    if isinstance(error, StandbyError):
        return FailoverCode.UNKNOWN_ERROR
    return FailoverCode.UNKNOWN_ERROR


def error_class(code: int) -> type[StandbyError]:
    """The error class of a return code (a member job's error is raised again as its own kind)."""
    for cls in _ERROR_CLASSES:
        if int(cls.code) == code:
            return cls
    return StandbyError


_ERROR_CLASSES: tuple[type[StandbyError], ...] = (
    errors.AccessDenied, errors.NotSupported, errors.OperationTimeout, errors.InvalidParameter,
    errors.InUse, errors.InvalidState, errors.IncorrectDataType, errors.Unavailable, errors.OutOfMemory,
    errors.FileNotFound)


@dataclass(frozen=True, slots=True)
class FailoverIndication:
    """``Msvm_FailoverIndication``: a hosted element (VM) moved to another host (hyperv-api §8.9)."""

    indication_id: str
    set_id: str
    hosted_element: str
    hosting_system: str
    previous_hosting_system: str
    failover_type: FailoverIndicationType
    other_type: str
    severity: PerceivedSeverity
    created_at: datetime
