"""Health policy (hyperv-api §6.2): a table of (inputs, now) → verdict, with ``now`` passed in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from standby.domain.enums import ReplicationHealth, ReplicationMode, ReplicationState
from standby.domain.health import (
    MESSAGE_IDS,
    HealthInputs,
    Reason,
    Side,
    evaluate_health,
    max_average_latency,
    stale_after,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
S = ReplicationState
H = ReplicationHealth
M = ReplicationMode

PRIMARY = HealthInputs(
    state=S.REPLICATING,
    mode=M.PRIMARY,
    side=Side.PRIMARY,
    interval_seconds=300,
    missed_cycles=0,
    total_cycles=100,
    last_transfer_at=NOW - timedelta(minutes=4),
    average_latency=timedelta(seconds=20),
)
REPLICA = replace(PRIMARY, mode=M.REPLICA, side=Side.REPLICA)


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


CASES = [
    # (id, inputs, health, reasons)
    ("healthy primary", PRIMARY, H.OK, ()),
    ("healthy replica", REPLICA, H.OK, ()),
    ("healthy extended replica", replace(REPLICA, mode=M.EXTENDED_REPLICA), H.OK, ()),
    ("not replicating", replace(PRIMARY, mode=M.NONE, state=S.DISABLED), H.NOT_APPLICABLE, ()),
    ("disabled relationship", replace(PRIMARY, state=S.DISABLED), H.NOT_APPLICABLE, ()),
    ("test replica", replace(REPLICA, mode=M.TEST_REPLICA), H.NOT_APPLICABLE, ()),
    ("unknown state", replace(PRIMARY, state=S.UNKNOWN), H.NOT_APPLICABLE, ()),
    # missed cycles: > 20 % is Warning, exactly 20 % is still Normal
    ("20% missed", replace(PRIMARY, missed_cycles=20, total_cycles=100), H.OK, ()),
    ("21% missed", replace(PRIMARY, missed_cycles=21, total_cycles=100), H.WARNING, (Reason.MISSED_CYCLES,)),
    ("all missed", replace(PRIMARY, missed_cycles=3, total_cycles=3), H.WARNING, (Reason.MISSED_CYCLES,)),
    ("no cycles in window yet", replace(PRIMARY, missed_cycles=0, total_cycles=0), H.OK, ()),
    # last send / receive: 1 h at a 5-min interval
    ("sent 59 min ago", replace(PRIMARY, last_transfer_at=ago(minutes=59)), H.OK, ()),
    ("sent exactly 1 h ago", replace(PRIMARY, last_transfer_at=ago(hours=1)), H.OK, ()),
    (
        "sent 61 min ago",
        replace(PRIMARY, last_transfer_at=ago(minutes=61)),
        H.WARNING,
        (Reason.NO_RECENT_SEND,),
    ),
    (
        "received 61 min ago",
        replace(REPLICA, last_transfer_at=ago(minutes=61)),
        H.WARNING,
        (Reason.NO_RECENT_RECEIVE,),
    ),
    ("never sent after IR", replace(PRIMARY, last_transfer_at=None), H.WARNING, (Reason.NO_RECENT_SEND,)),
    # the staleness threshold scales with the interval, never below 1 h
    (
        "30 s interval, 61 min",
        replace(PRIMARY, interval_seconds=30, last_transfer_at=ago(minutes=61)),
        H.WARNING,
        (Reason.NO_RECENT_SEND,),
    ),
    (
        "1 s interval, 59 min",
        replace(PRIMARY, interval_seconds=1, last_transfer_at=ago(minutes=59)),
        H.OK,
        (),
    ),
    (
        "900 s interval, 2.5 h",
        replace(PRIMARY, interval_seconds=900, last_transfer_at=ago(hours=2.5)),
        H.OK,
        (),
    ),
    (
        "900 s interval, 3 h 1 min",
        replace(PRIMARY, interval_seconds=900, last_transfer_at=ago(hours=3, minutes=1)),
        H.WARNING,
        (Reason.NO_RECENT_SEND,),
    ),
    # latency: 5 min at 5 min, scaled, never below 5 min
    ("latency 5 min", replace(PRIMARY, average_latency=timedelta(minutes=5)), H.OK, ()),
    (
        "latency 6 min",
        replace(PRIMARY, average_latency=timedelta(minutes=6)),
        H.WARNING,
        (Reason.HIGH_LATENCY,),
    ),
    (
        "30 s interval, 4 min latency",
        replace(PRIMARY, interval_seconds=30, average_latency=timedelta(minutes=4)),
        H.OK,
        (),
    ),
    (
        "900 s interval, 14 min latency",
        replace(PRIMARY, interval_seconds=900, average_latency=timedelta(minutes=14)),
        H.OK,
        (),
    ),
    (
        "900 s interval, 16 min latency",
        replace(PRIMARY, interval_seconds=900, average_latency=timedelta(minutes=16)),
        H.WARNING,
        (Reason.HIGH_LATENCY,),
    ),
    ("no latency data", replace(PRIMARY, average_latency=None), H.OK, ()),
    # initial replication
    (
        "ready, IR not started",
        replace(PRIMARY, state=S.READY_FOR_REPLICATION, last_transfer_at=None),
        H.WARNING,
        (Reason.INITIAL_REPLICATION_INCOMPLETE,),
    ),
    (
        "IR in progress",
        replace(PRIMARY, state=S.WAITING_TO_COMPLETE_INITIAL_REPLICATION, last_transfer_at=None),
        H.WARNING,
        (Reason.INITIAL_REPLICATION_INCOMPLETE,),
    ),
    (
        "IR flag pending",
        replace(REPLICA, initial_replication_complete=False, last_transfer_at=None),
        H.WARNING,
        (Reason.INITIAL_REPLICATION_INCOMPLETE,),
    ),
    # failover not reversed (state or flag); traffic rules do not apply then
    (
        "recovered",
        replace(REPLICA, state=S.RECOVERED, last_transfer_at=ago(hours=5)),
        H.WARNING,
        (Reason.FAILOVER_NOT_REVERSED,),
    ),
    (
        "committed",
        replace(REPLICA, state=S.COMMITTED, last_transfer_at=ago(days=2)),
        H.WARNING,
        (Reason.FAILOVER_NOT_REVERSED,),
    ),
    (
        "failover in progress",
        replace(REPLICA, state=S.FAILOVER_IN_PROGRESS),
        H.WARNING,
        (Reason.FAILOVER_NOT_REVERSED,),
    ),
    (
        "prepared for planned failover",
        replace(PRIMARY, state=S.SYNCED_REPLICATION_COMPLETE),
        H.WARNING,
        (Reason.FAILOVER_NOT_REVERSED,),
    ),
    (
        "flag failed over",
        replace(REPLICA, failed_over_not_reversed=True, missed_cycles=50),
        H.WARNING,
        (Reason.FAILOVER_NOT_REVERSED,),
    ),
    # paused: Warning on the primary, Critical on the replica
    (
        "suspended on primary",
        replace(PRIMARY, state=S.SUSPENDED, last_transfer_at=ago(hours=3)),
        H.WARNING,
        (Reason.PAUSED_ON_PRIMARY,),
    ),
    ("suspended on replica", replace(REPLICA, state=S.SUSPENDED), H.CRITICAL, (Reason.PAUSED_ON_REPLICA,)),
    (
        "primary sees replica-side pause",
        replace(PRIMARY, state=S.SUSPENDED, paused_side=Side.REPLICA),
        H.CRITICAL,
        (Reason.PAUSED_ON_REPLICA,),
    ),
    (
        "replica sees primary-side pause",
        replace(REPLICA, state=S.SUSPENDED, paused_side=Side.PRIMARY),
        H.WARNING,
        (Reason.PAUSED_ON_PRIMARY,),
    ),
    # critical
    (
        "resync required state",
        replace(PRIMARY, state=S.WAITING_TO_START_RESYNCHRONIZATION),
        H.CRITICAL,
        (Reason.RESYNC_REQUIRED,),
    ),
    ("resync required flag", replace(PRIMARY, resync_required=True), H.CRITICAL, (Reason.RESYNC_REQUIRED,)),
    ("replication error", replace(PRIMARY, state=S.CRITICAL), H.CRITICAL, (Reason.REPLICATION_ERROR,)),
    (
        "disk update error",
        replace(PRIMARY, state=S.DISK_UPDATE_CRITICAL),
        H.CRITICAL,
        (Reason.DISK_UPDATE_ERROR,),
    ),
    ("primary cannot send", replace(PRIMARY, send_failing=True), H.CRITICAL, (Reason.CANNOT_SEND,)),
    ("send failure reported on replica is ignored", replace(REPLICA, send_failing=True), H.OK, ()),
    # resync in progress / suspended
    ("resynchronizing", replace(PRIMARY, state=S.RESYNCHRONIZING), H.WARNING, (Reason.RESYNCHRONIZING,)),
    (
        "resync suspended on primary",
        replace(PRIMARY, state=S.RESYNCHRONIZATION_SUSPENDED),
        H.WARNING,
        (Reason.PAUSED_ON_PRIMARY,),
    ),
    (
        "disk update in progress",
        replace(PRIMARY, state=S.DISK_UPDATE_IN_PROGRESS),
        H.WARNING,
        (Reason.DISK_UPDATE_IN_PROGRESS,),
    ),
    # several reasons: critical first, then warnings, each once
    (
        "critical and warnings",
        replace(PRIMARY, send_failing=True, missed_cycles=50, last_transfer_at=ago(hours=2)),
        H.CRITICAL,
        (Reason.CANNOT_SEND, Reason.MISSED_CYCLES, Reason.NO_RECENT_SEND),
    ),
    (
        "three warnings",
        replace(
            PRIMARY, missed_cycles=30, last_transfer_at=ago(hours=2), average_latency=timedelta(minutes=9)
        ),
        H.WARNING,
        (Reason.MISSED_CYCLES, Reason.NO_RECENT_SEND, Reason.HIGH_LATENCY),
    ),
    (
        "resync state and flag once",
        replace(PRIMARY, state=S.WAITING_TO_START_RESYNCHRONIZATION, resync_required=True, send_failing=True),
        H.CRITICAL,
        (Reason.RESYNC_REQUIRED, Reason.CANNOT_SEND),
    ),
]


@pytest.mark.parametrize(("inputs", "health", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_table(inputs: HealthInputs, health: ReplicationHealth, reasons: tuple[Reason, ...]) -> None:
    verdict = evaluate_health(inputs, NOW)
    assert verdict.health == health
    assert verdict.reasons == tuple(str(r) for r in reasons)
    assert all(reason in MESSAGE_IDS for reason in verdict.reasons)


def test_now_is_what_counts() -> None:
    inputs = replace(PRIMARY, last_transfer_at=NOW)
    assert evaluate_health(inputs, NOW + timedelta(minutes=30)).health == H.OK
    assert evaluate_health(inputs, NOW + timedelta(hours=1, seconds=1)).health == H.WARNING


@pytest.mark.parametrize(
    ("interval", "stale", "latency"),
    [
        (1, timedelta(hours=1), timedelta(minutes=5)),
        (30, timedelta(hours=1), timedelta(minutes=5)),
        (300, timedelta(hours=1), timedelta(minutes=5)),
        (900, timedelta(hours=3), timedelta(minutes=15)),
    ],
)
def test_thresholds_scale_but_never_below_hyperv(interval: int, stale: timedelta, latency: timedelta) -> None:
    assert stale_after(interval) == stale
    assert max_average_latency(interval) == latency


def test_message_ids_are_unique() -> None:
    assert len(set(MESSAGE_IDS)) == len(MESSAGE_IDS) == len(Reason)
