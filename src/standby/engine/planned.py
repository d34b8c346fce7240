"""Planned failover on the primary and "enable as replica" (hyperv-api §4, §9.5).

- ``RequestReplicationStateChange(4)`` (prepare a planned failover, JobType 96): the VM must be off and the
  relationship Replicating (the precondition table). The job locks the VM from starting, shows state 4 while
  it runs (hyperv-api §4: "while the change runs, ReplicationState shows the requested value"), and ships the
  changes since the last acknowledged cut as a PLANNED log through the cycle runner's off-VM path (the
  persistent bitmap read with ``qemu-nbd``). The replica records it as a ``…Replica:PlannedFailover`` point,
  which ``InitiateFailover(NULL)`` then picks. A failed send unlocks the VM and returns to Replicating (or
  leaves 9 when the runner found the change tracking lost). ``RevertFailover`` on the primary cancels.
- ``RequestReplicationStateChange(2)`` on a plain VM (mode 0): it becomes a replica waiting for a seeded
  initial replication (mode 2, state 2); the primary's ``StartReplication(3)`` then compares block hashes
  against the VM's own disks (the replica side already supports a head-less seeded apply).

A VM a prepare locked does not start: ``domain.replica.check_startable`` (hyperv-api §5.8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from standby.domain.clock import Clock
from standby.domain.cycles import CycleKind
from standby.domain.entities import Job, RecoveryPoint, Relationship, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    JobType,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.domain.errors import InvalidState, NotSupported, Unavailable
from standby.domain.preconditions import Operation
from standby.engine.cycle import CycleRunner, PeerFactory
from standby.engine.extended import ExtendedReplication
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.replication import ReplicationUseCases
from standby.engine.reverse import ReverseReplication, ReverseTarget
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger("standby.planned")
_T = TypeVar("_T")

_S = ReplicationState
_RETRIES = 8


class PlannedFailover:
    """``RequestReplicationStateChange`` 4 (prepare) and 2 (as replica) as jobs."""

    def __init__(self, guards: ReplicationUseCases, jobs: JobManager | None, runner: CycleRunner | None, *,
                 db: Store, clock: Clock) -> None:
        self._guards = guards
        self._jobs = jobs
        self._runner = runner
        self._db = db
        self._clock = clock

    # -- prepare (4) ----------------------------------------------------------------------------------------

    def submit_prepare(self, vm_id: str, index: RelationshipIndex = RelationshipIndex.PRIMARY) -> Job:
        """RequestReplicationStateChange(4) as a JobType 96 job, after the precondition check."""
        target = self._guards.guard(Operation.PREPARE_PLANNED_FAILOVER, vm_id, index=index)
        if target.index is not RelationshipIndex.PRIMARY:
            raise NotSupported("a planned failover of an extended relationship is not supported; fail over "
                               "the primary relationship", message_id="PlannedExtendedUnsupported")
        vm = target.vm
        return self._submit(vm, "PlannedFailoverJob", lambda handle: self.prepare(vm.vm_id, handle.progress))

    async def prepare(self, vm_id: str, progress: Callable[[int], None] = lambda _: None) -> dict[str, str]:
        """Lock the VM, show state 4, ship the last changes as a PLANNED log; undo the lock on failure."""
        runner = self._require_runner()
        vm = self._update_vm(vm_id, lambda v: dataclasses.replace(v, locked_from_start=True))
        synced = _S.SYNCED_REPLICATION_COMPLETE
        self._update_relationship(vm_id, lambda r: dataclasses.replace(r, state=synced))
        progress(10)
        try:
            result = await runner.run(vm_id, RelationshipIndex.PRIMARY, CycleKind.PLANNED, progress=progress)
        except BaseException:
            self._undo_prepare(vm_id)
            raise
        self._update_relationship(vm_id, lambda r: dataclasses.replace(
            r, state=synced, last_replication_type=ReplicationType.PLANNED))
        self._event(vm_id, "replication.planned", "PlannedFailoverPrepared", vm=vm.name,
                    sequence=result.sequence)
        return {"ReplicationState": str(int(synced)), "Sequence": str(result.sequence),
                "DirtyBytes": str(result.dirty_bytes), "WireBytes": str(result.wire_bytes)}

    def _undo_prepare(self, vm_id: str) -> None:
        # The runner leaves 9 when the tracking is lost; any other failure returns to Replicating.
        self._update_relationship(vm_id, lambda r: dataclasses.replace(
            r, state=_S.REPLICATING if r.state == _S.SYNCED_REPLICATION_COMPLETE else r.state))
        self._update_vm(vm_id, lambda v: dataclasses.replace(v, locked_from_start=False))

    # -- as replica (2) -------------------------------------------------------------------------------------

    def submit_as_replica(self, vm_id: str) -> Job:
        """RequestReplicationStateChange(2) on a plain VM: a replica waiting for a seeded initial copy."""
        target = self._guards.guard(Operation.ENABLE_AS_REPLICA, vm_id)
        vm = target.vm
        if vm.enabled_state is not EnabledState.DISABLED:
            raise InvalidState(f"virtual machine {vm.name} must be turned off to become a replica",
                               message_id="VmRunning", vm=vm.name)

        async def work(handle: JobHandle) -> dict[str, str]:
            return self.as_replica(vm.vm_id)

        return self._submit(vm, "AsReplicaJob", work)

    def as_replica(self, vm_id: str) -> dict[str, str]:
        """Mode 2 and a relationship in state 2; the primary's seeded start fills in its settings."""
        waiting = _S.WAITING_TO_COMPLETE_INITIAL_REPLICATION
        with self._db.transaction():
            vm = self._db.vms.get(vm_id)
            self._db.vms.update(dataclasses.replace(vm, replication_mode=ReplicationMode.REPLICA))
            existing = self._db.relationships.find(vm_id, int(RelationshipIndex.PRIMARY))
            if existing is not None:
                self._db.relationships.delete(vm_id, int(RelationshipIndex.PRIMARY))
            self._db.relationships.insert(Relationship(vm_id, RelationshipIndex.PRIMARY, waiting,
                                                       ReplicationHealth.WARNING))
        self._event(vm_id, "replication.as-replica", "VmBecameReplica", vm=vm.name)
        return {"ReplicationState": str(int(waiting)), "ReplicationMode": str(int(ReplicationMode.REPLICA))}

    # -- helpers --------------------------------------------------------------------------------------------

    def _require_runner(self) -> CycleRunner:
        if self._runner is None:
            raise Unavailable("planned failover needs the primary side of replication (a hypervisor)",
                              message_id="PrimaryUnavailable")
        return self._runner

    def _submit(self, vm: VirtualMachine, message_id: str,
                work: Callable[[JobHandle], Awaitable[dict[str, str]]]) -> Job:
        if self._jobs is None:
            raise Unavailable("this needs the daemon's job manager", message_id="JobManagerStopped")
        return self._jobs.submit(JobType.REPLICATE_STATE_CHANGE, element_id=vm.vm_id, description="",
                                 work=work, message_id=message_id, args={"vm": vm.name})

    def _update_vm(self, vm_id: str, change: Callable[[VirtualMachine], VirtualMachine]) -> VirtualMachine:
        return _retry(lambda: self._db.vms.update(change(self._db.vms.get(vm_id))))

    def _update_relationship(self, vm_id: str,
                             change: Callable[[Relationship], Relationship]) -> Relationship:
        index = int(RelationshipIndex.PRIMARY)
        repo = self._db.relationships
        return _retry(lambda: repo.update(change(repo.get(vm_id, index))))

    def _event(self, vm_id: str, kind: str, message_id: str, **args: object) -> None:
        self._db.events.record(self._clock(), kind, message_id, element_id=vm_id, args=args)


def _retry(write: Callable[[], _T]) -> _T:
    """Compare-and-swap writes re-read and re-apply when another writer got there first."""
    for _ in range(_RETRIES):
        try:
            return write()
        except StaleWrite:
            continue
    return write()


# -- composition -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PlannedServices:
    """What ``daemon/compose.py`` builds for the surfaces: prepare / as-replica, reverse (this host as the
    new primary), the peer side of reverse (this host as the new replica) and extended replication."""

    planned: PlannedFailover
    reverse: ReverseReplication
    target: ReverseTarget
    extended: ExtendedReplication


def build(db: Store, clock: Clock, jobs: JobManager | None, runner: CycleRunner | None,
          peers: PeerFactory | None, *, host_name: str = "",
          lock: Callable[[str], asyncio.Lock] | None = None,
          point_listeners: list[Callable[[RecoveryPoint, Any], None]] | None = None,
          heartbeat_listeners: list[Callable[[str], None]] | None = None) -> PlannedServices:
    """The planned-failover, reverse and extended use cases over one store (``runner``/``peers`` None on a
    host without a hypervisor: those use cases then answer 32777). ``lock`` is the replica applier's per-VM
    lock and ``point_listeners`` its listeners (recorded points are forwarded to extended replicas), as
    ``heartbeat_listeners`` are the replica use cases' (recorded heartbeats reach extended replicas too)."""
    guards = ReplicationUseCases(db, clock)
    target = ReverseTarget(db, clock) if lock is None else ReverseTarget(db, clock, lock)
    extended = ExtendedReplication(guards, jobs, runner, peers, db=db, clock=clock, host_name=host_name)
    if lock is not None:
        extended.chain_lock = lock
    if point_listeners is not None:
        point_listeners.append(extended.on_point)
    if heartbeat_listeners is not None:
        heartbeat_listeners.append(extended.on_heartbeat)
    return PlannedServices(
        planned=PlannedFailover(guards, jobs, runner, db=db, clock=clock),
        reverse=ReverseReplication(guards, jobs, runner, peers, db=db, clock=clock, host_name=host_name),
        target=target,
        extended=extended,
    )
