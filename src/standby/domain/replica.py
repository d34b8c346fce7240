"""Pure rules of the replica side (issue 4): who may replicate in, which logs apply, names on disk.

- Authorization (hyperv-api §5.3, §9.2): a caller (the host name in its certificate) is admitted when the
  replication service accepts inbound replication and an authorization entry's ``AllowedPrimaryHostSystem``
  matches it: exactly (case-insensitive), as ``*.domain`` (any host below ``domain``, at any depth, not
  ``domain`` itself) or as ``*`` (anyone). The most specific matching entry wins: exact, then the longest
  wildcard suffix, then ``*``. Which admitted caller may act on which relationship is the table of
  ``domain.peer_access``.
- Log acceptance (DESIGN §7): a log with ``sequence`` ≤ head is a repeat (answer the head); otherwise it
  applies when its ``parent_sequence`` is the head or an ancestor still in the replica's lineage
  (``base`` ≤ parent ≤ head) — a lost acknowledgement is harmless because the primary's next log then
  carries every block changed since that older parent. Anything else is out of sequence (409, resync).
- Who may start (hyperv-api §5.8: "replica VMs cannot be started until a failover has been initiated"): a
replica
  only once failed over (5 Recovered, 6 Committed), and no VM a planned-failover prepare locked from starting.
- Names: ``<VMName>_<VMGUID>`` folders and ``rp-<seq:010d>.qcow2`` files (docs/replication.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from standby.domain.entities import AuthorizationEntry, Relationship, VirtualMachine
from standby.domain.enums import ReplicationMode, ReplicationState
from standby.domain.errors import AccessDenied, InvalidParameter, InvalidState

POINT_PREFIX = "rp-"
POINT_SUFFIX = ".qcow2"
PARTIAL_SUFFIX = ".partial"
_POINT_FILE = re.compile(r"^rp-(?P<seq>\d{10})\.qcow2(?P<partial>\.partial)?$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UNSAFE_NAME_CHARS = re.compile(r"[/\\\x00-\x1f]")
#: Replication states in which the replica is failed over: logs are kept aside, not applied.
FAILED_OVER_STATES = frozenset(
    {ReplicationState.RECOVERED, ReplicationState.COMMITTED, ReplicationState.FAILOVER_IN_PROGRESS}
)
#: States in which a log may be applied.
APPLYING_STATES = frozenset(
    {
        ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
        ReplicationState.REPLICATING,
        ReplicationState.RESYNCHRONIZING,
        ReplicationState.WAITING_TO_START_RESYNCHRONIZATION,
        ReplicationState.CRITICAL,
    }
)

#: Replica states in which the replica VM may run: failed over (5 Recovered, 6 Committed).
STARTABLE_REPLICA_STATES = frozenset({ReplicationState.RECOVERED, ReplicationState.COMMITTED})


# -- authorization ------------------------------------------------------------------------------------------


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` matches an ``AllowedPrimaryHostSystem`` pattern (see the module docstring)."""
    pattern, host = pattern.strip().lower().rstrip("."), host.strip().lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".domain"
        return "*" not in suffix and host.endswith(suffix) and len(host) > len(suffix)
    if "*" in pattern:
        return False  # only a leading "*." or a lone "*" is a wildcard
    return pattern == host


def _specificity(pattern: str) -> tuple[int, int]:
    pattern = pattern.strip().lower()
    if pattern == "*":
        return (0, 0)
    if pattern.startswith("*."):
        return (1, len(pattern))
    return (2, len(pattern))


def matching_entry(entries: Iterable[AuthorizationEntry], host: str) -> AuthorizationEntry | None:
    """The most specific entry whose pattern matches ``host``, or None."""
    matches = [entry for entry in entries if host_matches(entry.allowed_primary_host, host)]
    if not matches:
        return None
    return max(matches, key=lambda entry: _specificity(entry.allowed_primary_host))


# -- log acceptance -----------------------------------------------------------------------------------------


class OutOfSequence(InvalidState):
    """The log's parent is neither the replica's head nor an ancestor of it (409; the primary resyncs)."""

    def __init__(self, head_sequence: int, reason: str) -> None:
        super().__init__(f"the log is out of sequence: {reason}", message_id="LogOutOfSequence",
                         head=str(head_sequence), reason=reason)
        self.head_sequence = head_sequence
        self.reason = reason


class LogAnswer(Protocol):
    """The replica's answer to one log, as the primary reads it (``peer.client.LogAck``)."""

    @property
    def head_sequence(self) -> int:
        """The replica's head after the log."""
        ...

    @property
    def applied(self) -> bool:
        """Whether this log made a new point (False for a repeat)."""
        ...

    @property
    def kept_aside(self) -> bool:
        """Whether the failed-over replica kept it to apply after a revert."""
        ...


def check_log_answer(sequence: int, answer: LogAnswer) -> None:
    """Count log ``sequence`` as shipped only when the replica's head is now that point: applied, or a
    repeat of exactly it (its first answer was lost), or kept aside while failed over. Any other head means
    the replica holds a lineage this primary did not send; ``OutOfSequence`` makes it resynchronize."""
    if answer.kept_aside or answer.head_sequence == sequence:
        return
    verb = "applied" if answer.applied else "did not apply"
    raise OutOfSequence(answer.head_sequence, f"the replica {verb} log {sequence} and answered head "
                                              f"{answer.head_sequence}")


class LogVerdict(StrEnum):
    """What to do with an arriving log."""

    APPLY = "apply"
    #: ``sequence`` ≤ head: already applied (a retried request); answer with the head.
    REPEAT = "repeat"
    OUT_OF_SEQUENCE = "out_of_sequence"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict and, when refused, why (a sentence for the 409 answer)."""

    verdict: LogVerdict
    reason: str = ""


def judge_log(
    *, head: int | None, base: int | None, sequence: int, parent: int, initial: bool, resync: bool = False
) -> Judgement:
    """Decide whether a log applies (see the module docstring).

    ``head`` is the newest point's sequence (None: no point yet), ``base`` the oldest sequence of the
    current lineage (the initial or resync point). An initial log applies only to an empty replica; a
    resync log only on the head itself (its blocks were compared against the head).
    """
    if sequence < 1 or parent < 0:
        return Judgement(LogVerdict.OUT_OF_SEQUENCE, f"sequence {sequence} / parent {parent} are invalid")
    if head is not None and sequence <= head:
        return Judgement(LogVerdict.REPEAT)
    if head is None:
        if initial or resync:
            return Judgement(LogVerdict.APPLY)
        return Judgement(LogVerdict.OUT_OF_SEQUENCE, "the replica has no recovery point yet: initial "
                                                     "replication must come first")
    if initial:
        return Judgement(LogVerdict.OUT_OF_SEQUENCE, f"the replica already holds point {head}; an initial "
                                                     "log cannot apply over it")
    if resync:
        if parent == head:
            return Judgement(LogVerdict.APPLY)
        return Judgement(LogVerdict.OUT_OF_SEQUENCE, f"resync log compared against {parent}, head is {head}")
    lowest = head if base is None else base
    if lowest <= parent <= head:
        return Judgement(LogVerdict.APPLY)
    return Judgement(
        LogVerdict.OUT_OF_SEQUENCE,
        f"parent {parent} is neither the head {head} nor an ancestor of it (lineage starts at {lowest})",
    )


# -- state mirror -------------------------------------------------------------------------------------------


def mirrored_state(current: ReplicationState, requested: int, *, has_points: bool) -> ReplicationState:
    """The replica relationship's new state when the primary mirrors a state change to it.

    3 resume, 7 suspend, 1 cancel initial replication, 9 cancel resync (the replica goes back to 3),
    10 resynchronizing. Failed-over replicas take no mirrored change (32775).
    """
    if current in FAILED_OVER_STATES:
        raise InvalidState(f"the replica is failed over (state {int(current)})",
                           message_id="ReplicaFailedOver", state=str(int(current)))
    waiting = ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
    settled = ReplicationState.REPLICATING if has_points else waiting
    table: dict[int, ReplicationState] = {
        int(ReplicationState.REPLICATING): settled,
        int(ReplicationState.SUSPENDED): ReplicationState.SUSPENDED,
        int(ReplicationState.READY_FOR_REPLICATION): waiting,
        int(ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION): waiting,
        int(ReplicationState.WAITING_TO_START_RESYNCHRONIZATION): settled,
        int(ReplicationState.RESYNCHRONIZING): ReplicationState.RESYNCHRONIZING,
    }
    if requested not in table:
        raise InvalidParameter(f"requested state {requested} cannot be mirrored to a replica",
                               message_id="MirrorStateUnsupported", state=str(requested))
    if requested == int(ReplicationState.READY_FOR_REPLICATION) and has_points:
        raise InvalidState("initial replication already completed on the replica",
                           message_id="InitialReplicationDone")
    return table[requested]


# -- who may start ------------------------------------------------------------------------------------------


def check_startable(vm: VirtualMachine, relationship: Relationship | None) -> None:
    """Refuse (32775) to start a VM locked by a planned-failover prepare, or a replica that is not failed
    over; everything else may start (a test replica, a primary, a plain VM). ``relationship`` is the VM's
    primary one (index 0), None when it has none."""
    if vm.locked_from_start:
        raise InvalidState(
            f"virtual machine {vm.name} is prepared for a planned failover and locked from starting; "
            "revert the failover to start it here", message_id="VmLockedForFailover", vm=vm.name)
    recovery = vm.replication_mode in (ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA)
    if recovery and (relationship is None or relationship.state not in STARTABLE_REPLICA_STATES):
        raise InvalidState(
            f"virtual machine {vm.name} is a replica; it starts only after a failover",
            message_id="ReplicaNotFailedOver", vm=vm.name)


# -- names --------------------------------------------------------------------------------------------------


def check_disk_id(disk_id: str) -> str:
    """A disk id usable as one path component (letters, digits, ``_.-``; not ``.``/``..``)."""
    if not _SAFE_ID.match(disk_id) or disk_id in (".", ".."):
        raise InvalidParameter(f"disk id {disk_id!r} is not a safe file name",
                               message_id="UnsafeDiskId", disk=disk_id)
    return disk_id


def replica_folder_name(vm_name: str, vm_id: str) -> str:
    """``<VMName>_<VMGUID>``; refuses names that are not one plain path component (``/``, ``..``)."""
    if not vm_name or _UNSAFE_NAME_CHARS.search(vm_name) or vm_name in (".", ".."):
        raise AccessDenied(f"virtual machine name {vm_name!r} cannot name a folder inside the replica "
                           "storage location", message_id="StorageLocationEscape", path=vm_name)
    check_disk_id(vm_id)
    return f"{vm_name}_{vm_id}"


def point_file_name(sequence: int, *, partial: bool = False) -> str:
    """``rp-<seq:010d>.qcow2`` (with ``.partial`` while a log is being applied)."""
    if sequence < 0 or sequence >= 10**10:
        raise InvalidParameter(f"sequence {sequence} is out of range", message_id="SequenceOutOfRange")
    name = f"{POINT_PREFIX}{sequence:010d}{POINT_SUFFIX}"
    return name + PARTIAL_SUFFIX if partial else name


def parse_point_file(name: str) -> tuple[int, bool] | None:
    """``(sequence, partial)`` of a point file name, or None for any other name."""
    match = _POINT_FILE.match(name)
    if match is None:
        return None
    return int(match["seq"]), match["partial"] is not None


@dataclass(frozen=True, slots=True)
class ReplicaSite:
    """Where a replica VM lives on this host and whom it belongs to (``db.replicas``)."""

    vm_id: str
    primary_host: str
    trust_group: str
    storage_root: str
    created_at: datetime
    base_sequence: int | None = None
    version: int = 0
