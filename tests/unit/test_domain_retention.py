"""Retention policy: tables of (points, now, history, app interval) → plan, and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from standby.domain.entities import RecoveryPoint
from standby.domain.enums import VirtualSystemType
from standby.domain.retention import KeepReason, Merge, PointInfo, plan_retention

NOW = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)  # half past: buckets do not line up with "1 h ago"
STD = VirtualSystemType.REPLICA_STANDARD
APP = VirtualSystemType.REPLICA_APPLICATION_CONSISTENT


def at(
    minutes_ago: float, name: str | None = None, kind: VirtualSystemType = STD, in_use: bool = False
) -> PointInfo:
    return PointInfo(name or f"p{minutes_ago:g}", NOW - timedelta(minutes=minutes_ago), kind, in_use)


def every(step_minutes: int, span_minutes: int) -> list[PointInfo]:
    """A point every ``step`` minutes going back ``span`` minutes (newest is 0 min old)."""
    return [at(m) for m in range(span_minutes, -1, -step_minutes)]


def test_no_points() -> None:
    plan = plan_retention([], NOW, 4)
    assert plan.keep == () and plan.drop == ()


def test_history_zero_keeps_only_newest() -> None:
    points = every(5, 120)
    plan = plan_retention(points, NOW, 0)
    assert plan.kept_ids == ("p0",)
    assert [m.point_id for m in plan.drop] == [p.point_id for p in points[:-1]]
    assert plan.drop[-1] == Merge("p5", "p0")


def test_history_zero_keeps_in_use_and_its_older_neighbour() -> None:
    points = [at(30), at(20), at(10, in_use=True), at(0)]
    plan = plan_retention(points, NOW, 0)
    assert dict((k.point_id, k.reason) for k in plan.keep) == {
        "p20": KeepReason.NEIGHBOUR_IN_USE,
        "p10": KeepReason.IN_USE,
        "p0": KeepReason.NEWEST,
    }
    assert plan.drop == (Merge("p30", "p20"),)


def test_keeps_last_hour_and_one_per_clock_hour() -> None:
    # every 5 min for 6 h; history 3 → last hour (12 points + newest) and 3 clock hours before it
    points = every(5, 360)
    plan = plan_retention(points, NOW, 3)
    reasons = {k.point_id: k.reason for k in plan.keep}
    recent = [p.point_id for p in points if NOW - p.created_at < timedelta(hours=1)]
    assert all(reasons[name] in (KeepReason.RECENT, KeepReason.NEWEST) for name in recent)
    hourly = sorted(
        (k.point_id for k in plan.keep if k.reason == KeepReason.HOURLY), key=lambda n: -float(n[1:])
    )
    # 1 h ago = 11:30; clock hours 11:00-11:30 (partial), 10:00, 09:00 → newest of each: 11:30, 10:55, 09:55
    assert hourly == ["p155", "p95", "p60"]
    assert len(plan.keep) + len(plan.drop) == len(points)


def test_points_older_than_history_are_merged_oldest_first() -> None:
    points = every(60, 600)  # on the half hour, 10 h back
    plan = plan_retention(points, NOW, 2)
    assert plan.kept_ids == ("p120", "p60", "p0")
    assert [m.point_id for m in plan.drop] == [f"p{m}" for m in range(600, 120, -60)]
    # each merges into the next newer point
    assert plan.drop[0] == Merge("p600", "p540")
    assert plan.drop[-1] == Merge("p180", "p120")


def test_app_consistent_preferred_when_interval_asks() -> None:
    points = [at(100, "std-old"), at(95, "app", APP), at(92, "std-new"), at(0, "newest")]
    with_interval = plan_retention(points, NOW, 4, app_consistent_interval_hours=4)
    without = plan_retention(points, NOW, 4, app_consistent_interval_hours=0)
    assert "app" in with_interval.kept_ids and "std-new" not in with_interval.kept_ids
    assert "std-new" in without.kept_ids and "app" not in without.kept_ids


def test_app_consistent_not_needed_in_every_hour() -> None:
    points = [at(100, "std1"), at(92, "std2"), at(0, "newest")]
    plan = plan_retention(points, NOW, 4, app_consistent_interval_hours=2)
    assert plan.kept_ids == ("std2", "newest")


def test_in_use_point_is_kept_and_never_a_merge_target() -> None:
    points = [at(600, "a"), at(540, "b", in_use=True), at(480, "c"), at(0, "newest")]
    plan = plan_retention(points, NOW, 1)
    reasons = {k.point_id: k.reason for k in plan.keep}
    assert reasons == {"a": KeepReason.NEIGHBOUR_IN_USE, "b": KeepReason.IN_USE, "newest": KeepReason.NEWEST}
    assert plan.drop == (Merge("c", "newest"),)


def test_unsorted_input_is_ordered_by_time() -> None:
    points = [at(0, "n"), at(600, "old"), at(300, "mid")]
    plan = plan_retention(points, NOW, 0)
    assert plan.drop == (Merge("old", "mid"), Merge("mid", "n"))


def test_future_points_count_as_recent() -> None:
    points = [at(200, "old"), at(-5, "future"), at(0, "now")]
    plan = plan_retention(points, NOW, 1)
    assert "now" in plan.kept_ids and "future" in plan.kept_ids


def test_repeated_planning_converges() -> None:
    points = every(5, 24 * 60)
    plan = plan_retention(points, NOW, 6)
    survivors = [p for p in points if p.point_id in plan.kept_ids]
    again = plan_retention(survivors, NOW, 6)
    assert again.drop == ()
    later = NOW + timedelta(minutes=20)
    # twenty minutes on, points leave the "last hour" and the hour buckets shrink to one point each again
    after = plan_retention(survivors, later, 6)
    kept_after = [p for p in survivors if p.point_id in after.kept_ids]
    assert plan_retention(kept_after, later, 6).drop == ()


def test_from_recovery_point() -> None:
    point = RecoveryPoint("rp-1", "VM", 7, NOW, APP)
    info = PointInfo.of(point, in_use=True)
    assert info == PointInfo("rp-1", NOW, APP, True)
    assert info.app_consistent


@pytest.mark.parametrize(("history", "interval"), [(-1, 0), (1, -1)])
def test_negative_settings_rejected(history: int, interval: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_retention([at(0)], NOW, history, interval)


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        plan_retention([at(0, "x"), at(5, "x")], NOW, 1)


# ------------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------------

_point = st.tuples(
    st.integers(min_value=-30, max_value=60 * 48),  # minutes ago
    st.sampled_from([STD, APP, VirtualSystemType.REPLICA_PLANNED_FAILOVER]),
    st.sampled_from([False, False, False, True]),  # in use, now and then
)


@st.composite
def periodic(draw: st.DrawFn) -> list[tuple[int, VirtualSystemType, bool]]:
    """A point every `step` minutes, as replication makes them, so every hour bucket is populated."""
    offset = draw(st.integers(min_value=-5, max_value=59))
    step = draw(st.integers(min_value=1, max_value=120))
    count = draw(st.integers(min_value=1, max_value=200))
    app_every = draw(st.integers(min_value=0, max_value=8))
    in_use = draw(st.sets(st.integers(min_value=0, max_value=count - 1), max_size=3))
    return [
        (offset + i * step, APP if app_every and i % app_every == 0 else STD, i in in_use)
        for i in range(count)
    ]


points_strategy = st.lists(_point, max_size=60) | periodic()


@settings(max_examples=300, deadline=None)
@given(
    raw=points_strategy,
    history=st.integers(min_value=0, max_value=30),
    app_interval=st.integers(min_value=0, max_value=12),
)
def test_retention_properties(
    raw: list[tuple[int, VirtualSystemType, bool]], history: int, app_interval: int
) -> None:
    points = [
        PointInfo(f"p{i}", NOW - timedelta(minutes=minutes), kind, in_use)
        for i, (minutes, kind, in_use) in enumerate(raw)
    ]
    plan = plan_retention(points, NOW, history, app_interval)
    kept = set(plan.kept_ids)
    dropped = [m.point_id for m in plan.drop]
    # kept ∪ dropped = all, disjoint
    assert kept.isdisjoint(dropped)
    assert kept | set(dropped) == {p.point_id for p in points}
    assert len(dropped) == len(set(dropped))
    if not points:
        return
    ordered = sorted(points, key=lambda p: p.created_at)
    position = {p.point_id: i for i, p in enumerate(ordered)}
    # the newest is always kept, in-use always kept
    assert ordered[-1].point_id in kept
    assert all(p.point_id in kept for p in points if p.in_use)
    # merges go oldest first, each into its next newer neighbour, never into an in-use point
    assert [position[name] for name in dropped] == sorted(position[name] for name in dropped)
    by_id = {p.point_id: p for p in points}
    for merge in plan.drop:
        assert position[merge.into_id] == position[merge.point_id] + 1
        assert not by_id[merge.into_id].in_use
    # hour buckets beyond the last hour: at most one per clock hour, at most `history` of them
    hourly = [by_id[k.point_id] for k in plan.keep if k.reason == KeepReason.HOURLY]
    hours = [int(p.created_at.timestamp() // 3600) for p in hourly]
    assert len(hours) == len(set(hours)) <= history
    assert all(NOW - p.created_at >= timedelta(hours=1) for p in hourly)
    assert all(NOW - p.created_at < timedelta(hours=history + 1) for p in hourly)
    # every point of the last hour stays when any history is asked for; with history 0 only the forced ones
    if history > 0:
        assert all(p.point_id in kept for p in points if NOW - p.created_at < timedelta(hours=1))
    else:
        assert all(k.reason not in (KeepReason.RECENT, KeepReason.HOURLY) for k in plan.keep)
