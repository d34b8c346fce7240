"""Start-up recovery of collections (issue 7): a collection a stopped daemon left mid-operation is settled.

A collection job writes a "while it runs" state before touching its members — 4 Failover initiated
(``InitiateFailover``), 15 Partially disabled (``RemoveReplicationRelationship``), 12 Repurpose initiated —
and its own end state only after the last member. A daemon that stops in between leaves that state behind;
the job itself is marked interrupted by ``JobManager.recover_after_restart`` and the members' own intents are
settled by the failover hook (which runs first: hooks run in registration order). This hook then:

- state 4: all or nothing, as a collection failover promises — members that the interrupted job already
  failed over (relationship Recovered) are reverted;
- every listed state: the collection's state is derived again from its members' relationships
  (``collection_state``); a collection whose members all lost their relationship is disabled.

14 Partially enabled and 16 Partially recovered are derived again too: the members may have moved on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from standby.domain.clock import Clock
from standby.domain.entities import Collection
from standby.domain.enums import (
    CollectionReplicationState,
    CollectionReplicationType,
    ReplicationMode,
    ReplicationState,
)
from standby.domain.errors import StandbyError
from standby.engine.group_replication import set_collection
from standby.store.port import Store

log = logging.getLogger("standby.groups")
_C = CollectionReplicationState
_S = ReplicationState
#: States a collection job writes while it runs (or a partial outcome the members may have moved past).
UNSETTLED = frozenset({_C.FAILOVER_INITIATED, _C.REPURPOSE_INITIATED, _C.PARTIALLY_ENABLED,
                       _C.PARTIALLY_DISABLED, _C.PARTIALLY_RECOVERED})
#: A member relationship's state → the collection's, when every member agrees.
_SAME: dict[ReplicationState, CollectionReplicationState] = {
    _S.DISABLED: _C.DISABLED, _S.READY_FOR_REPLICATION: _C.READY_FOR_REPLICATION,
    _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION: _C.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
    _S.REPLICATING: _C.REPLICATING, _S.SYNCED_REPLICATION_COMPLETE: _C.PLANNED_FAILOVER_INITIATED,
    _S.RECOVERED: _C.RECOVERED, _S.COMMITTED: _C.COMMITTED, _S.SUSPENDED: _C.SUSPENDED,
    _S.CRITICAL: _C.CRITICAL, _S.WAITING_TO_START_RESYNCHRONIZATION: _C.WAITING_TO_START_RESYNCHRONIZATION,
    _S.RESYNCHRONIZING: _C.RESYNCHRONIZING,
}
_FAILED_OVER = frozenset({_S.RECOVERED, _S.COMMITTED})


def collection_state(members: Sequence[ReplicationState | None]) -> CollectionReplicationState:
    """The collection state its members' relationship states (None: no relationship) stand for.

    Every member alike → the matching collection state; none replicating → Disabled; some without a
    relationship → Partially enabled; mixed with a failed-over member → Partially recovered; mixed with a
    replicating member → Partially enabled; anything else mixed → Critical (someone has to look).
    """
    present = [state for state in members if state is not None]
    if not present:
        return _C.DISABLED
    if len(present) < len(members):
        return _C.PARTIALLY_ENABLED
    if len(set(present)) == 1 and present[0] in _SAME:
        return _SAME[present[0]]
    if any(state in _FAILED_OVER for state in present):
        return _C.PARTIALLY_RECOVERED
    if _S.REPLICATING in present:
        return _C.PARTIALLY_ENABLED
    return _C.CRITICAL


async def settle_collections(db: Store, clock: Clock, failover: Any = None) -> list[str]:
    """Settle every unsettled collection with no job running on it; the ids settled."""
    settled = []
    for collection in db.collections.list():
        if collection.replication_state not in UNSETTLED or db.jobs.active_on(collection.collection_id):
            continue
        reverted = await _undo_partial_failover(db, collection, failover)
        state = _settle(db, collection)
        db.events.record(clock(), "collection.recovered", "CollectionSettled",
                         element_id=collection.collection_id,
                         args={"collection": collection.name, "before": int(collection.replication_state),
                               "state": int(state), "reverted": len(reverted)})
        settled.append(collection.collection_id)
    return settled


async def _undo_partial_failover(db: Store, collection: Collection, failover: Any) -> list[str]:
    """State 4: revert the members the interrupted collection failover had already failed over."""
    if collection.replication_state is not _C.FAILOVER_INITIATED or failover is None:
        return []
    reverted = []
    for vm_id in collection.member_vm_ids:
        rel = db.relationships.find(vm_id, 0)
        if rel is None or rel.state is not _S.RECOVERED:
            continue
        try:
            await failover.revert(vm_id)
            reverted.append(vm_id)
        except StandbyError as exc:  # keep going: every other member must still go back
            log.error("reverting member %s of collection %s failed: %s", vm_id, collection.name, exc)
    return reverted


def _settle(db: Store, collection: Collection) -> CollectionReplicationState:
    states = [rel.state if (rel := db.relationships.find(vm_id, 0)) is not None else None
              for vm_id in collection.member_vm_ids]
    state = collection_state(states)
    changes: dict[str, Any] = {"state": state}
    if state is _C.DISABLED:
        changes["mode"] = ReplicationMode.NONE
        db.collection_settings.delete(collection.collection_id)
        db.group_cycles.forget(collection.collection_id)
    if state not in (_C.RECOVERED, _C.COMMITTED, _C.PARTIALLY_RECOVERED):
        changes["failed_over_type"] = CollectionReplicationType.NONE
    set_collection(db, collection.collection_id, **changes)
    return state
