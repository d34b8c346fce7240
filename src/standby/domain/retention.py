"""Which recovery points to keep and which to merge away (hyperv-api §9.4, DESIGN §4), pure: pass ``now``.

Policy:
* always keep the newest point, and every point in use (a failover or test VM, an apply or an export
  holds its file);
* ``recovery_history`` 0: nothing else (Hyper-V keeps only the latest point);
* otherwise keep every point of the last hour, and beyond that one point per clock hour for
  ``recovery_history`` hours: the newest of the hour, or - when ``app_consistent_interval_hours`` > 0 -
  the newest app-consistent point of that hour if it has one (the primary only takes those every N hours,
  so preferring them keeps one at that spacing);
* a point is dropped by merging it into its next newer neighbour (DESIGN §7: commit the newer delta into
  it, then rename it over the newer one). That rewrites the neighbour's file, so a point whose newer
  neighbour is in use is kept as well.

Hour buckets are clock hours (UTC), so a point's bucket never changes between runs and repeated planning
converges instead of shifting which point represents an hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise

from standby.domain.entities import RecoveryPoint
from standby.domain.enums import VirtualSystemType

HOUR = timedelta(hours=1)
#: Every point younger than this is kept (when any history is asked for).
KEEP_ALL_WITHIN = HOUR


class KeepReason(StrEnum):
    """Why a point stays."""

    NEWEST = "newest"
    IN_USE = "in_use"
    RECENT = "recent"
    HOURLY = "hourly"
    #: Its newer neighbour is in use, so it cannot be merged into it now.
    NEIGHBOUR_IN_USE = "neighbour_in_use"


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What retention needs to know about one recovery point."""

    point_id: str
    created_at: datetime
    kind: VirtualSystemType = VirtualSystemType.REPLICA_STANDARD
    in_use: bool = False

    @property
    def app_consistent(self) -> bool:
        """Whether the point was taken with the guest's file systems frozen."""
        return self.kind == VirtualSystemType.REPLICA_APPLICATION_CONSISTENT

    @classmethod
    def of(cls, point: RecoveryPoint, *, in_use: bool = False) -> PointInfo:
        """The retention view of a stored recovery point."""
        return cls(point.point_id, point.created_at, point.kind, in_use)


@dataclass(frozen=True, slots=True)
class Kept:
    """A point that stays, and why (the first reason that applies)."""

    point_id: str
    reason: KeepReason


@dataclass(frozen=True, slots=True)
class Merge:
    """Drop ``point_id`` by merging it into its next newer neighbour ``into_id``."""

    point_id: str
    into_id: str


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The outcome: kept points and merges, both oldest first; run the merges in this order."""

    keep: tuple[Kept, ...]
    drop: tuple[Merge, ...]

    @property
    def kept_ids(self) -> tuple[str, ...]:
        """The ids of the kept points, oldest first."""
        return tuple(kept.point_id for kept in self.keep)


def plan_retention(
    points: Iterable[PointInfo],
    now: datetime,
    recovery_history: int,
    app_consistent_interval_hours: int = 0,
) -> RetentionPlan:
    """Decide which points to keep and how to merge the others away (see the module docstring)."""
    if recovery_history < 0 or app_consistent_interval_hours < 0:
        raise ValueError("recovery_history and app_consistent_interval_hours must not be negative")
    ordered = sorted(points, key=lambda point: point.created_at)
    if len({point.point_id for point in ordered}) != len(ordered):
        raise ValueError("recovery point ids must be unique")
    if not ordered:
        return RetentionPlan((), ())
    reasons = _base_reasons(ordered, now, recovery_history, app_consistent_interval_hours > 0)
    _keep_neighbours_of_in_use(ordered, reasons)
    keep = tuple(
        Kept(point.point_id, reasons[point.point_id]) for point in ordered if point.point_id in reasons
    )
    drop = tuple(
        Merge(point.point_id, ordered[position + 1].point_id)
        for position, point in enumerate(ordered)
        if point.point_id not in reasons
    )
    return RetentionPlan(keep, drop)


def _base_reasons(
    ordered: Sequence[PointInfo], now: datetime, recovery_history: int, prefer_app_consistent: bool
) -> dict[str, KeepReason]:
    reasons: dict[str, KeepReason] = {}
    for point in ordered:
        if point.in_use:
            reasons[point.point_id] = KeepReason.IN_USE
    reasons.setdefault(ordered[-1].point_id, KeepReason.NEWEST)
    if recovery_history == 0:
        return reasons
    recent_after = now - KEEP_ALL_WITHIN
    for point in ordered:
        if point.created_at > recent_after:
            reasons.setdefault(point.point_id, KeepReason.RECENT)
    window_start = recent_after - recovery_history * HOUR
    older = [point for point in ordered if window_start < point.created_at <= recent_after]
    for chosen in _hourly(older, recovery_history, prefer_app_consistent):
        reasons.setdefault(chosen.point_id, KeepReason.HOURLY)
    return reasons


def _hour_of(moment: datetime) -> int:
    return int(moment.timestamp() // HOUR.total_seconds())


def _hourly(older: Sequence[PointInfo], buckets: int, prefer_app_consistent: bool) -> list[PointInfo]:
    """One representative for each of the newest ``buckets`` clock hours among ``older`` (oldest first)."""
    by_hour: dict[int, list[PointInfo]] = {}
    for point in older:
        by_hour.setdefault(_hour_of(point.created_at), []).append(point)
    chosen = []
    for hour in sorted(by_hour, reverse=True)[:buckets]:
        members = by_hour[hour]
        app_consistent = [point for point in members if point.app_consistent]
        pool = app_consistent if prefer_app_consistent and app_consistent else members
        chosen.append(pool[-1])
    return chosen


def _keep_neighbours_of_in_use(ordered: Sequence[PointInfo], reasons: dict[str, KeepReason]) -> None:
    # Merging into an in-use point would rewrite a file someone holds.
    for older, newer in pairwise(ordered):
        if newer.in_use and older.point_id not in reasons:
            reasons[older.point_id] = KeepReason.NEIGHBOUR_IN_USE
