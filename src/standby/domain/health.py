"""Replication health policy (hyperv-api §6.2), pure: pass ``now``.

Hyper-V's rules (team blog, WS2012 when the interval was fixed at 5 minutes):

* Critical: the primary cannot send (network/storage problems, or resynchronization required), or
  replication is paused on the replica side.
* Warning: more than 20 % of cycles missed in the monitoring window; more than 1 hour since the last send
  (primary) / receive (replica); initial replication not complete; failover initiated but not yet reverse
  replicated; replication paused on the primary.
* Normal: otherwise (≤ 20 % missed, last sync < 1 h ago, average latency ≤ 5 min).

With a configurable interval the two time thresholds scale with it ([I] in the spec), but never drop
below Hyper-V's values: staleness = max(1 h, 12 intervals), latency = max(5 min, 1 interval).
Reasons are message ids for the catalog, critical ones first, each at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from standby.domain.enums import ReplicationHealth, ReplicationMode, ReplicationState

#: Hyper-V's thresholds at its original fixed 5-minute interval.
HYPERV_STALE_AFTER = timedelta(hours=1)
HYPERV_MAX_AVERAGE_LATENCY = timedelta(minutes=5)
HYPERV_INTERVAL = timedelta(minutes=5)
#: More than this share of missed cycles in the window is a Warning.
MAX_MISSED_RATIO = 0.20


class Side(StrEnum):
    """Which end of a relationship this host is."""

    PRIMARY = "primary"
    REPLICA = "replica"


class Reason(StrEnum):
    """Why health is not Normal; the values are catalog message ids."""

    RESYNC_REQUIRED = "HealthResyncRequired"
    REPLICATION_ERROR = "HealthReplicationError"
    CANNOT_SEND = "HealthCannotSend"
    PAUSED_ON_REPLICA = "HealthPausedOnReplica"
    DISK_UPDATE_ERROR = "HealthDiskUpdateError"
    MISSED_CYCLES = "HealthMissedCycles"
    NO_RECENT_SEND = "HealthNoRecentSend"
    NO_RECENT_RECEIVE = "HealthNoRecentReceive"
    HIGH_LATENCY = "HealthHighLatency"
    INITIAL_REPLICATION_INCOMPLETE = "HealthInitialReplicationIncomplete"
    FAILOVER_NOT_REVERSED = "HealthFailoverNotReversed"
    PAUSED_ON_PRIMARY = "HealthPausedOnPrimary"
    RESYNCHRONIZING = "HealthResynchronizing"
    DISK_UPDATE_IN_PROGRESS = "HealthDiskUpdateInProgress"


_CRITICAL = frozenset(
    {
        Reason.RESYNC_REQUIRED,
        Reason.REPLICATION_ERROR,
        Reason.CANNOT_SEND,
        Reason.PAUSED_ON_REPLICA,
        Reason.DISK_UPDATE_ERROR,
    }
)

#: States in which a failover is under way or done but not yet reversed (5, 6, 12 replica; 4 primary).
_FAILOVER_STATES = frozenset(
    {
        ReplicationState.SYNCED_REPLICATION_COMPLETE,
        ReplicationState.RECOVERED,
        ReplicationState.COMMITTED,
        ReplicationState.FAILOVER_IN_PROGRESS,
        ReplicationState.FAILBACK_IN_PROGRESS,
        ReplicationState.FAILBACK_COMPLETE,
    }
)
_PAUSED_STATES = frozenset({ReplicationState.SUSPENDED, ReplicationState.RESYNCHRONIZATION_SUSPENDED})
_IR_STATES = frozenset(
    {ReplicationState.READY_FOR_REPLICATION, ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION}
)


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """Everything the health policy looks at, for one relationship on one side.

    ``missed_cycles`` and ``total_cycles`` count the current monitoring window (total includes the missed
    ones); ``last_transfer_at`` is the last successful send (primary) or receive (replica);
    ``paused_side`` says where replication was suspended (None: not paused, or unknown - then a
    Suspended state counts as paused on this side).
    """

    state: ReplicationState
    mode: ReplicationMode
    side: Side
    interval_seconds: int
    missed_cycles: int = 0
    total_cycles: int = 0
    last_transfer_at: datetime | None = None
    initial_replication_complete: bool = True
    failed_over_not_reversed: bool = False
    paused_side: Side | None = None
    resync_required: bool = False
    #: The primary's last cycles failed to reach the replica (network or storage errors).
    send_failing: bool = False
    average_latency: timedelta | None = None


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    """The health value and why (message ids; empty when Normal or not applicable)."""

    health: ReplicationHealth
    reasons: tuple[str, ...] = ()


def stale_after(interval_seconds: int) -> timedelta:
    """How long without a send/receive before Warning: 1 h at 5 min, scaled, never below 1 h."""
    scaled = timedelta(seconds=interval_seconds) * (HYPERV_STALE_AFTER / HYPERV_INTERVAL)
    return max(HYPERV_STALE_AFTER, scaled)


def max_average_latency(interval_seconds: int) -> timedelta:
    """The highest average cycle latency still Normal: 5 min at 5 min, scaled, never below 5 min."""
    scaled = timedelta(seconds=interval_seconds) * (HYPERV_MAX_AVERAGE_LATENCY / HYPERV_INTERVAL)
    return max(HYPERV_MAX_AVERAGE_LATENCY, scaled)


def evaluate_health(inputs: HealthInputs, now: datetime) -> HealthVerdict:
    """Health of one relationship at ``now`` (an aware UTC datetime) under hyperv-api §6.2."""
    if not _applicable(inputs):
        return HealthVerdict(ReplicationHealth.NOT_APPLICABLE)
    reasons = _critical_reasons(inputs) + _warning_reasons(inputs, now)
    unique = tuple(dict.fromkeys(reasons))
    if any(reason in _CRITICAL for reason in unique):
        health = ReplicationHealth.CRITICAL
    elif unique:
        health = ReplicationHealth.WARNING
    else:
        health = ReplicationHealth.OK
    ordered = sorted(unique, key=lambda reason: reason not in _CRITICAL)
    return HealthVerdict(health, tuple(str(reason) for reason in ordered))


def _applicable(inputs: HealthInputs) -> bool:
    # A VM that does not replicate (or a test VM) has no replication health.
    if inputs.mode in (ReplicationMode.NONE, ReplicationMode.TEST_REPLICA):
        return False
    return inputs.state not in (ReplicationState.DISABLED, ReplicationState.UNKNOWN)


def _paused_side(inputs: HealthInputs) -> Side | None:
    if inputs.paused_side is not None:
        return inputs.paused_side
    return inputs.side if inputs.state in _PAUSED_STATES else None


def _critical_reasons(inputs: HealthInputs) -> list[Reason]:
    reasons = []
    if inputs.resync_required or inputs.state == ReplicationState.WAITING_TO_START_RESYNCHRONIZATION:
        reasons.append(Reason.RESYNC_REQUIRED)
    if inputs.state == ReplicationState.CRITICAL:
        reasons.append(Reason.REPLICATION_ERROR)
    if inputs.state == ReplicationState.DISK_UPDATE_CRITICAL:
        reasons.append(Reason.DISK_UPDATE_ERROR)
    if inputs.send_failing and inputs.side == Side.PRIMARY:
        reasons.append(Reason.CANNOT_SEND)
    if _paused_side(inputs) == Side.REPLICA:
        reasons.append(Reason.PAUSED_ON_REPLICA)
    return reasons


def _warning_reasons(inputs: HealthInputs, now: datetime) -> list[Reason]:
    reasons = []
    failed_over = inputs.failed_over_not_reversed or inputs.state in _FAILOVER_STATES
    if failed_over:
        reasons.append(Reason.FAILOVER_NOT_REVERSED)
    ir_pending = not inputs.initial_replication_complete or inputs.state in _IR_STATES
    if ir_pending:
        reasons.append(Reason.INITIAL_REPLICATION_INCOMPLETE)
    paused = _paused_side(inputs)
    if paused == Side.PRIMARY:
        reasons.append(Reason.PAUSED_ON_PRIMARY)
    if inputs.state == ReplicationState.RESYNCHRONIZING:
        reasons.append(Reason.RESYNCHRONIZING)
    if inputs.state == ReplicationState.DISK_UPDATE_IN_PROGRESS:
        reasons.append(Reason.DISK_UPDATE_IN_PROGRESS)
    # Traffic-based rules only mean something while cycles are expected to flow.
    if failed_over or ir_pending or paused is not None or inputs.state != ReplicationState.REPLICATING:
        return reasons
    reasons.extend(_traffic_reasons(inputs, now))
    return reasons


def _traffic_reasons(inputs: HealthInputs, now: datetime) -> list[Reason]:
    reasons = []
    if inputs.total_cycles > 0 and inputs.missed_cycles / inputs.total_cycles > MAX_MISSED_RATIO:
        reasons.append(Reason.MISSED_CYCLES)
    stale = inputs.last_transfer_at is None or now - inputs.last_transfer_at > stale_after(
        inputs.interval_seconds
    )
    if stale:
        reasons.append(Reason.NO_RECENT_SEND if inputs.side == Side.PRIMARY else Reason.NO_RECENT_RECEIVE)
    latency = inputs.average_latency
    if latency is not None and latency > max_average_latency(inputs.interval_seconds):
        reasons.append(Reason.HIGH_LATENCY)
    return reasons


#: Every message id this module reports (for the i18n catalog).
MESSAGE_IDS: tuple[str, ...] = tuple(str(reason) for reason in Reason)
