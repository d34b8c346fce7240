"""Msvm_CollectionReplicationService methods → the daemon's group use cases (``daemon/group_wiring.Groups``).

``route(use_case, call)`` answers a method when the daemon has the engine for it: the primary side's group
replication (create, start, modify, suspend/resume, resync, cancel, remove) or the replica side's collection
failover (initiate, revert, commit, test, planned steps). Statistics work on either side. Without an engine
(a world without a hypervisor) it answers None and the caller runs the guard alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pywbem import CIMInstance

from standby.cim import convert, naming
from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.providers._base import done, job_started
from standby.cim.providers.registry import MethodCall, MethodResult
from standby.domain.entities import ReplicationSettings
from standby.domain.errors import InvalidParameter
from standby.domain.groups import GroupStatistics
from standby.engine.group_replication import collection_statistics, reset_collection_statistics
from standby.engine.operations import CollectionUseCase

STATISTICS = "Msvm_CollectionReplicationStatistics"
_U = CollectionUseCase
_STATE_CHANGES = frozenset({_U.SUSPEND_REPLICATION, _U.RESUME_REPLICATION, _U.CANCEL_INITIAL_REPLICATION,
                            _U.CANCEL_RESYNCHRONIZE})
_PLANNED = frozenset({_U.INITIATE_PLANNED_FAILOVER, _U.REVERT_PLANNED_FAILOVER,
                      _U.PREPARE_FOR_REVERSE_REPLICATION, _U.REVERSE_REPLICATION_RELATIONSHIP})


def settings_of(call: MethodCall) -> tuple[ReplicationSettings, str]:
    """The embedded Msvm_CollectionReplicationSettingData as settings, with its (required) ElementName."""
    value = call.param("CollectionReplicationSettingData")
    if value is None:
        raise InvalidParameter("CollectionReplicationSettingData is required", message_id="ParameterRequired",
                               parameter="CollectionReplicationSettingData")
    assert isinstance(value, CIMInstance)
    name = property_value(value, "ElementName")
    return convert.replication_settings(value), str(name or "")


def statistics_instance(call: MethodCall, stats: GroupStatistics, collection_id: str) -> CIMInstance:
    """An embedded Msvm_CollectionReplicationStatistics."""
    instance = make_instance(call.runtime.schema, call.namespace, STATISTICS, {
        "InstanceID": f"Microsoft:{collection_id}\\Statistics",
        "StartStatisticTime": stats.start,
        "EndStatisticTime": stats.end,
        "ReplicationWALSuccessCount": stats.success_count,
        "ReplicationWALMissCount": stats.miss_count,
        "ReplicationSize": stats.size,
        "MaxReplicationSize": stats.max_size,
        "PendingReplicationSize": 0,
        "NetworkFailureCount": stats.network_failures,
        "ReplicationFailureCount": stats.failures,
        "ApplicationConsistentSnapshotFailureCount": stats.app_consistent_failures,
        "ReplicationHealth": int(stats.health),
        "MaxReplicationLatency": stats.max_latency_seconds,
        "LastWALReplicationTime": stats.last_success,
        "LastTestFailoverTime": stats.last_test_failover,
    })
    instance.path = None
    return instance


def statistics(call: MethodCall, collection_id: str) -> MethodResult:
    """GetReplicationStatistics: synchronous, on either side."""
    runtime = call.runtime
    stats, issues = collection_statistics(runtime.db, runtime.clock, runtime.collections, collection_id)
    return done({"ReplicationStatistics": statistics_instance(call, stats, collection_id),
                 "ReplicationHealthIssues": issues})


def route(use_case: CollectionUseCase, call: MethodCall, collection_id: str,
          point_id: str | None) -> MethodResult | None:
    """Carry the method out through the group engine; None when this daemon has no engine for it."""
    runtime = call.runtime
    if use_case is _U.GET_REPLICATION_STATISTICS:
        return statistics(call, collection_id)
    if use_case is _U.RESET_REPLICATION_STATISTICS:
        reset_collection_statistics(runtime.db, runtime.clock, runtime.collections, collection_id)
        return done()
    groups = getattr(runtime.services, "groups", None)
    if groups is None:
        return None
    handler = _primary_handler(use_case, groups.replication) or _replica_handler(use_case, groups.failover)
    return handler(call, collection_id, point_id) if handler is not None else None


Handler = Callable[[MethodCall, str, "str | None"], MethodResult]


def _primary_handler(use_case: CollectionUseCase, engine: Any) -> Handler | None:
    if engine is None:
        return None
    if use_case is _U.CREATE_REPLICATION_RELATIONSHIP:
        return lambda call, cid, _: job_started(call, engine.submit_create(cid, *settings_of(call)))
    if use_case is _U.MODIFY_REPLICATION_SETTINGS:
        return lambda call, cid, _: job_started(call, engine.submit_modify(cid, *settings_of(call)))
    if use_case is _U.START_REPLICATION:
        return _start(engine)
    if use_case is _U.REMOVE_REPLICATION_RELATIONSHIP:
        return lambda call, cid, _: job_started(call, engine.submit_remove(cid))
    if use_case in _STATE_CHANGES:
        return lambda call, cid, _: job_started(call, engine.submit_state_change(use_case, cid))
    if use_case is _U.RESYNCHRONIZE:
        return _resynchronize(engine)
    if use_case is _U.CANCEL_UPDATE_DISK_SET:
        return lambda call, cid, _: _guarded_done(call, use_case, cid)
    return None


def _replica_handler(use_case: CollectionUseCase, engine: Any) -> Handler | None:
    if engine is None:
        return None
    if use_case is _U.INITIATE_FAILOVER:
        return lambda call, cid, point: job_started(call, engine.submit_initiate(cid, point))
    if use_case is _U.REVERT_FAILOVER:
        return lambda call, cid, _: job_started(call, engine.submit_revert(cid))
    if use_case is _U.COMMIT_FAILOVER:
        return lambda call, cid, _: job_started(call, engine.submit_commit(cid))
    if use_case is _U.TEST_REPLICA_COLLECTION:
        return _test(engine)
    if use_case is _U.REVERT_TEST_REPLICA_COLLECTION:
        return lambda call, cid, _: job_started(call, engine.submit_revert_test(cid))
    if use_case in _PLANNED:
        return _planned(engine, use_case)
    return None


def _start(engine: Any) -> Handler:
    def handler(call: MethodCall, collection_id: str, point: str | None) -> MethodResult:
        start = call.param("StartTime")
        kind = int(call.param("InitialReplicationType"))
        location = call.param("InitialReplicationExportLocation")
        return job_started(call, engine.submit_start(collection_id, kind, location,
                                                     start.datetime if start is not None else None))

    return handler


def _resynchronize(engine: Any) -> Handler:
    def handler(call: MethodCall, collection_id: str, point: str | None) -> MethodResult:
        start = call.param("StartTime")
        when = start.datetime if start is not None else None
        return job_started(call, engine.submit_resynchronize(collection_id, when,
                                                             bool(call.param("IncludeSuspended"))))

    return handler


def _test(engine: Any) -> Handler:
    def handler(call: MethodCall, collection_id: str, point: str | None) -> MethodResult:
        job, test_id = engine.submit_test(collection_id, point)
        resulting = naming.collection_path(call.namespace, test_id)
        return job_started(call, job, {"ResultingCollection": resulting})

    return handler


def _planned(engine: Any, use_case: CollectionUseCase) -> Handler:
    def handler(call: MethodCall, collection_id: str, point: str | None) -> MethodResult:
        settings = settings_of(call)[0] if use_case is _U.REVERSE_REPLICATION_RELATIONSHIP else None
        return job_started(call, engine.submit_planned(use_case, collection_id, settings))

    return handler


def _guarded_done(call: MethodCall, use_case: CollectionUseCase, collection_id: str) -> MethodResult:
    call.runtime.collections.guard(use_case, collection_id)
    return done()
