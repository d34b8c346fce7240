"""Msvm_CollectionReplicationService methods → the collection engine entries
(``engine.collection_service.CollectionReplicationService``), which pick the sending or the receiving side.
"""

from __future__ import annotations

from collections.abc import Callable

from pywbem import CIMInstance

from standby.cim import convert, naming
from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.providers._base import done, job_started
from standby.cim.providers.registry import MethodCall, MethodResult
from standby.domain.entities import ReplicationSettings
from standby.domain.errors import InvalidParameter, NotSupported
from standby.domain.groups import GroupStatistics
from standby.engine.collection_service import PLANNED_STEPS, STATE_CHANGES, CollectionReplicationService
from standby.engine.operations import CollectionUseCase
from standby.engine.service import InitialReplication, Outcome

STATISTICS = "Msvm_CollectionReplicationStatistics"
_U = CollectionUseCase
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
    report = call.runtime.engine.collections.statistics(collection_id)
    return done({"ReplicationStatistics": statistics_instance(call, report.statistics, collection_id),
                 "ReplicationHealthIssues": report.issues})


def route(use_case: CollectionUseCase, call: MethodCall, collection_id: str,
          point_id: str | None) -> MethodResult:
    """Carry the method out through its engine entry."""
    service = call.runtime.engine.collections
    if use_case is _U.GET_REPLICATION_STATISTICS:
        return statistics(call, collection_id)
    handler = _HANDLERS.get(use_case)
    if handler is None:
        raise NotSupported(f"{use_case.value} is not a method of the collection replication service",
                           message_id="NotImplementedYet", method=use_case.value)
    return answer(call, handler(service, call, collection_id, point_id), collection=True)


def answer(call: MethodCall, outcome: Outcome, *, collection: bool = False) -> MethodResult:
    """An entry's outcome as a method result (a test collection is ``ResultingCollection``)."""
    out: dict[str, object] = {}
    if outcome.resulting_system is not None and collection:
        out["ResultingCollection"] = naming.collection_path(call.namespace, outcome.resulting_system)
    return job_started(call, outcome.job, out) if outcome.job is not None else done(out)


def _start(service: CollectionReplicationService, call: MethodCall, cid: str, _: str | None) -> Outcome:
    kind = call.param("InitialReplicationType")
    if kind is None:
        raise InvalidParameter("InitialReplicationType is required", message_id="ParameterRequired",
                               parameter="InitialReplicationType")
    start = call.param("StartTime")
    request = InitialReplication(int(kind), call.param("InitialReplicationExportLocation"),
                                 start.datetime if start is not None else None)
    return service.start_replication(cid, request)


def _resynchronize(service: CollectionReplicationService, call: MethodCall, cid: str,
                   _: str | None) -> Outcome:
    start = call.param("StartTime")
    return service.resynchronize(cid, start.datetime if start is not None else None,
                                 include_suspended=bool(call.param("IncludeSuspended")))


def _planned(use_case: CollectionUseCase) -> Handler:
    def handler(service: CollectionReplicationService, call: MethodCall, cid: str, _: str | None) -> Outcome:
        settings = settings_of(call)[0] if use_case is _U.REVERSE_REPLICATION_RELATIONSHIP else None
        return service.planned_step(use_case, cid, settings)

    return handler


def _state(use_case: CollectionUseCase) -> Handler:
    return lambda service, call, cid, _: service.change_state(use_case, cid)


Handler = Callable[[CollectionReplicationService, MethodCall, str, "str | None"], Outcome]
_HANDLERS: dict[CollectionUseCase, Handler] = {
    _U.CREATE_REPLICATION_RELATIONSHIP:
        lambda s, call, cid, _: s.create_relationship(cid, *settings_of(call)),
    _U.MODIFY_REPLICATION_SETTINGS:
        lambda s, call, cid, _: s.modify_replication_settings(cid, *settings_of(call)),
    _U.START_REPLICATION: _start,
    _U.REMOVE_REPLICATION_RELATIONSHIP: lambda s, call, cid, _: s.remove_relationship(cid),
    _U.RESYNCHRONIZE: _resynchronize,
    _U.CANCEL_UPDATE_DISK_SET: lambda s, call, cid, _: s.cancel_update_disk_set(cid),
    _U.INITIATE_FAILOVER: lambda s, call, cid, point: s.initiate_failover(cid, point),
    _U.REVERT_FAILOVER: lambda s, call, cid, _: s.revert_failover(cid),
    _U.COMMIT_FAILOVER: lambda s, call, cid, _: s.commit_failover(cid),
    _U.TEST_REPLICA_COLLECTION: lambda s, call, cid, point: s.test_replica_collection(cid, point),
    _U.REVERT_TEST_REPLICA_COLLECTION: lambda s, call, cid, _: s.revert_test_replica_collection(cid),
    _U.RESET_REPLICATION_STATISTICS: lambda s, call, cid, _: s.reset_statistics(cid),
    **{use_case: _state(use_case) for use_case in STATE_CHANGES},
    **{use_case: _planned(use_case) for use_case in PLANNED_STEPS},
}
