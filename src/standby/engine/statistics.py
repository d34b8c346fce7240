"""Replication statistics (``Msvm_ReplicationStatistics``, hyperv-api §5.5) and health (hyperv-api §6.2) of a
relationship, from the cycle records of ``db.cycles``.

Both sides keep records, as Hyper-V counts on both: the primary one per cycle attempt (``engine.cycle``),
the replica one per applied log and per heartbeat it took (``engine.apply``, ``engine.replica``), with the
log's kind, sequence and bytes as received. So a replica VM's statistics count the replications it received
and applied; misses and send failures are the primary's to count.

The window is the service's monitoring window (MonitoringStartTime + MonitoringInterval) holding ``now``;
ResetReplicationStatistics starts counting again at the reset time within it.

Health is stored on the relationship and refreshed after each recorded cycle; ``success_keeps_health`` tells
when a success cannot change a Normal health, so that refresh (which reads the whole window: up to 1440
records at 30 s in the default 12 h) is skipped for the cycles of healthy, mostly idle VMs.

An idle VM's cycle is a heartbeat (``engine.cycle``: no log, ``detail`` "heartbeat"): a successful cycle of
0 bytes. It counts in ReplicationSuccessCount and the health like any success, but the average replication
size is over the cycles that shipped a log, so a mostly idle VM's average is the size of its logs, not
diluted towards 0. The totals and the maximum are sums and maxima, which 0-byte cycles leave alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta

from standby.domain.cycles import HEARTBEAT_DETAIL, CycleOutcome, CycleRecord, CycleTotals, totals
from standby.domain.entities import Relationship, ServiceSettings
from standby.domain.enums import RelationshipIndex, ReplicationHealth, ReplicationMode, ReplicationState
from standby.domain.health import (
    HealthInputs,
    HealthVerdict,
    Side,
    evaluate_health,
    max_average_latency,
)
from standby.store.errors import StaleWrite
from standby.store.port import Store


@dataclass(frozen=True, slots=True)
class HealthIssue:
    """One replication health issue (an ``Msvm_Error`` on the CIM surface)."""

    message_id: str
    message: str
    severity: int  # CIM PerceivedSeverity: 3 warning, 6 critical


@dataclass(frozen=True, slots=True, kw_only=True)
class StatisticsReport(CycleTotals):
    """Replication statistics of one relationship over the current monitoring window (hyperv-api §5.5): the
    window's counters as ``domain.cycles.totals`` adds them up, and what the records alone do not tell."""

    vm_id: str
    index: RelationshipIndex
    start: datetime
    end: datetime
    health: ReplicationHealth
    pending_bytes: int = 0
    last_test_failover_time: datetime | None = None
    issues: tuple[HealthIssue, ...] = ()
    #: Extras Measure-VMReplication shows (the average size over the successful cycles that shipped a log,
    #: the reasons of the health; the average latency is ``CycleTotals``').
    average_size_bytes: float | None = None
    last_replication_time: datetime | None = None
    reasons: tuple[str, ...] = ()


def monitoring_window(settings: ServiceSettings, now: datetime) -> tuple[datetime, datetime]:
    """The statistics window holding ``now``: it starts at MonitoringStartTime and lasts the interval."""
    interval = timedelta(seconds=max(settings.monitoring_interval_seconds, 1))
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = start_of_day + timedelta(hours=settings.monitoring_start_time.hour,
                                      minutes=settings.monitoring_start_time.minute)
    if anchor > now:
        anchor -= timedelta(days=1)
    start = anchor + interval * ((now - anchor) // interval)
    return start, start + interval


def window_totals(db: Store, vm_id: str, index: RelationshipIndex, now: datetime) -> tuple[
        datetime, datetime, CycleTotals, int]:
    """(window start, end, the totals since max(start, last reset), pending bytes)."""
    start, end, records = _window_records(db, vm_id, index, now)
    return start, end, totals(records), _pending(records)


def _window_records(db: Store, vm_id: str, index: RelationshipIndex, now: datetime) -> tuple[
        datetime, datetime, list[CycleRecord]]:
    start, end = monitoring_window(db.service_settings.get(), now)
    reset = db.cycles.reset_at(vm_id, int(index))
    since = max(start, reset) if reset is not None else start
    return start, end, db.cycles.list(vm_id, int(index), since=since)


def _pending(records: Sequence[CycleRecord]) -> int:
    pending = 0
    for record in records:  # the dirty data of failed attempts since the last success is still to send
        pending = 0 if record.outcome is CycleOutcome.SUCCESS else max(pending, record.dirty_bytes)
    return pending


def average_log_size(records: Sequence[CycleRecord]) -> float | None:
    """Mean bytes sent per successful cycle that shipped a log (heartbeats left out); None without one."""
    shipped = [r.wire_bytes for r in records
               if r.outcome is CycleOutcome.SUCCESS and r.detail != HEARTBEAT_DETAIL]
    return sum(shipped) / len(shipped) if shipped else None


def verdict(db: Store, rel: Relationship, now: datetime) -> HealthVerdict:
    """The health of a relationship at ``now`` (this host's side of it)."""
    vm = db.vms.get(rel.vm_id)
    _, _, sums, _ = window_totals(db, rel.vm_id, rel.index, now)
    primary = vm.replication_mode in (ReplicationMode.PRIMARY, ReplicationMode.NONE)
    side = Side.PRIMARY if primary else Side.REPLICA
    last = max((t for t in (rel.last_replication_time, sums.last_success_at) if t is not None), default=None)
    latency = sums.average_latency_seconds
    inputs = HealthInputs(
        state=rel.state, mode=vm.replication_mode, side=side, interval_seconds=rel.settings.interval_seconds,
        missed_cycles=sums.miss_count, total_cycles=sums.total_cycles, last_transfer_at=last,
        initial_replication_complete=rel.last_replication_time is not None,
        send_failing=side is Side.PRIMARY and sums.failures_since_success >= 3,
        average_latency=None if latency is None else timedelta(seconds=latency))
    return evaluate_health(inputs, now)


def success_keeps_health(health: ReplicationHealth, latency_ms: int, interval_seconds: int) -> bool:
    """Whether recording one more successful cycle leaves a stored Normal health Normal (hyperv-api §6.2
    rules).

    A success helps every rule or leaves it alone: it lowers the missed share, ends a failure streak and a
    stale send, and changes no state. Only the average latency can get worse, and only through a success
    slower than the threshold (an average of values within a bound stays within it); such a success, and
    every miss and failure, still refreshes. A window that rolls over or is reset holds a subset of those
    records, each of which was judged when it was recorded.
    """
    seconds = -(-latency_ms // 1000)  # the statistics count whole seconds, rounded up
    limit = max_average_latency(interval_seconds).total_seconds()
    return health is ReplicationHealth.OK and seconds <= limit


def refresh_health(db: Store, vm_id: str, index: RelationshipIndex, now: datetime) -> ReplicationHealth:
    """Recompute and store the health of a relationship; returns it."""
    for _ in range(5):
        rel = db.relationships.find(vm_id, int(index))
        if rel is None:
            return ReplicationHealth.NOT_APPLICABLE
        health = verdict(db, rel, now).health
        if health == rel.health:
            return health
        try:
            db.relationships.update(replace(rel, health=health))
            return health
        except StaleWrite:
            continue
    return health


def report(db: Store, rel: Relationship, now: datetime) -> StatisticsReport:
    """GetReplicationStatistics: every field of hyperv-api §5.5 plus Measure-VMReplication's extras."""
    start, end, records = _window_records(db, rel.vm_id, rel.index, now)
    sums, pending = totals(records), _pending(records)
    judged = verdict(db, rel, now)
    counters = {counter.name: getattr(sums, counter.name) for counter in fields(CycleTotals)}
    return StatisticsReport(
        **counters, vm_id=rel.vm_id, index=rel.index, start=start, end=end, health=judged.health,
        pending_bytes=pending, issues=health_issues(rel, judged),
        average_size_bytes=average_log_size(records), last_replication_time=rel.last_replication_time,
        reasons=judged.reasons,
        last_test_failover_time=db.test_failovers.last_time(rel.vm_id))


def health_issues(rel: Relationship, judged: HealthVerdict) -> tuple[HealthIssue, ...]:
    """One summary issue (Warning or Critical) naming the reasons; none when healthy."""
    reasons = f": {', '.join(judged.reasons)}" if judged.reasons else ""
    state = ReplicationState(rel.state)
    if judged.health == ReplicationHealth.CRITICAL:
        text = f"Replication of {rel.instance_id} is critical (state {int(state)}){reasons}"
        return (HealthIssue("ReplicationHealthCritical", text, 6),)
    if judged.health == ReplicationHealth.WARNING:
        return (HealthIssue("ReplicationHealthWarning",
                            f"Replication of {rel.instance_id} needs attention (state {int(state)}){reasons}",
                            3),)
    return ()
