"""Failover on the replica (issue 5 items 1-5): InitiateFailover, RevertFailover, CommitFailover, failover IP
settings; test failover lives in ``failover_drill.py``.

Each ``submit_*`` call first runs the precondition table through ``ReplicationUseCases.guard`` (so a refusal
is the table's code, at once) and refuses a member of a collection failed over as a whole (32775: the
collection's methods are the ones to use), then starts a job (JobType 97 / 98 / 99). The job bodies
(``initiate``, ``revert``, ``commit``) can be awaited directly too; collection failover does so.

- InitiateFailover: unplanned failovers first ask the primary host whether the VM still runs and refuse
  (32775) if it does, unless forced; an unreachable primary is fine. The relationship shows 12 and records
  its intent, then one overlay per disk is made over the chosen point (``failover/<disk>.qcow2``, constant
  time), plus the cloud-init seed when the VM has failover IP settings; the VM's disks point at them, the
  point is held, and the relationship becomes 5 Recovered with health Warning. The replica applier sees
  state 5/12/6 and keeps arriving logs aside (R's ``incoming/``).
- RevertFailover: the VM is powered off if it runs, its disks point at the head again, the failover files go,
  and the relationship returns to ``state_before_failover``. On a primary prepared for a planned failover
  (state 4) it cancels the prepare: state 3, the VM may start again.
- CommitFailover: the failover disk stays the VM's disk, on top of the chosen point's chain; every other
  recovery point is dropped (rows, and files not in a kept chain). Chosen over flattening with ``qemu-img
  convert`` because it is constant time and keeps the chosen point intact as the base reverse replication
  compares from (issue 5 item 7). State 6 Committed.

Start-up recovery (``recover``): a relationship left in 12 by a failover is rolled back, an interrupted commit
is finished, files of test VMs that no longer exist are deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from standby.domain.entities import Job, RecoveryPoint, Relationship, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    JobType,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.domain.errors import (
    InvalidParameter,
    InvalidState,
    NotFound,
    OperationTimeout,
    StandbyError,
    Unavailable,
)
from standby.domain.failover import (
    FAILOVER_DIR,
    SEED_DIR,
    FailoverNetworkSettings,
    failed_over_type,
    validate_network_settings,
)
from standby.domain.groups import require_member_failover
from standby.domain.health import HealthInputs, Side, evaluate_health
from standby.domain.intents import IntentKind, commit_intent, failover_intent, parse
from standby.domain.preconditions import Operation
from standby.engine.failover_drill import FailoverDrill
from standby.engine.failover_support import (
    ChainGuard,
    FailoverStore,
    head_disks,
    overlay_disks,
    own_locks,
    remove_folder_files,
    replica_dir,
    seed_disk,
)
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.port import Hypervisor
from standby.storage import failover_images
from standby.store.port import Store

#: Asks the primary host whether the VM runs there: True/False, None when it cannot be told (unreachable).
PrimaryProbe = Callable[[VirtualMachine, Relationship], Awaitable[bool | None]]
Progress = Callable[[int], None]
_S = ReplicationState
_RECOVERY_MODES = (ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA)


def _no_progress(percent: int) -> None:
    """Progress sink for job bodies awaited without a job."""


class FailoverUseCases:
    """Failover of a replica VM; test failover is ``self.drill``."""

    def __init__(
        self,
        db: Store,
        clock: Callable[[], Any],
        jobs: JobManager | None,
        hypervisor: Hypervisor,
        guards: ReplicationUseCases,
        *,
        primary_probe: PrimaryProbe | None = None,
        after_revert: Callable[[str], Awaitable[object]] | None = None,
        chain_guard: ChainGuard | None = None,
    ) -> None:
        self.store = FailoverStore(db, clock)
        #: The replica applier's ``chain_guard``: held while a point is chosen and recorded as in use, so
        #: retention cannot merge it away in between (own locks when this host applies no logs).
        self.chain_guard = chain_guard or own_locks()
        #: Applies the logs kept aside while failed over (the replica applier's ``apply_kept_logs``).
        self.after_revert = after_revert
        self.db = db
        self.jobs = jobs
        self.hypervisor = hypervisor
        self.guards = guards
        self.primary_probe = primary_probe
        self.drill = FailoverDrill(self.store, jobs, hypervisor, guards, chain_guard=self.chain_guard)

    # -- queries ------------------------------------------------------------------------------------------

    def points(self, vm_id: str) -> list[RecoveryPoint]:
        """The VM's recovery points, oldest first."""
        self.db.vms.get(vm_id)
        return self.db.recovery_points.list(vm_id=vm_id)

    def network_settings(self, vm_id: str) -> list[FailoverNetworkSettings]:
        """The failover IP settings stored for the VM's NICs."""
        return self.db.failover_network.list(vm_id=vm_id)

    # -- SetFailoverNetworkAdapterSettings (synchronous: a store write) -----------------------------------

    def set_network_settings(
        self, vm_id: str, items: Sequence[FailoverNetworkSettings]
    ) -> list[FailoverNetworkSettings]:
        """Store one setting per NIC (see ``store_network_settings``)."""
        return store_network_settings(self.store, self.guards, vm_id, items)

    # -- jobs -----------------------------------------------------------------------------------------------

    def _submit(self, job_type: JobType, vm: VirtualMachine, message_id: str,
                body: Callable[[Progress], Awaitable[dict[str, str]]]) -> Job:
        if self.jobs is None:
            raise Unavailable("failover needs the daemon's job manager", message_id="JobManagerStopped")

        async def work(handle: JobHandle) -> dict[str, str]:
            handle.progress(5)
            return await body(handle.progress)

        return self.jobs.submit(job_type, element_id=vm.vm_id, description="",
                                work=work, message_id=message_id, args={"vm": vm.name})

    def submit_initiate(self, vm_id: str, point_id: str | None, *, force: bool = False) -> Job:
        """InitiateFailover as a JobType 97 job, after the precondition check."""
        target = self.guards.guard(Operation.INITIATE_FAILOVER, vm_id, point_id=point_id)
        self._not_a_collection_unit(Operation.INITIATE_FAILOVER, target.vm)
        return self._submit(JobType.INITIATE_FAILOVER, target.vm, "FailoverJob",
                            lambda progress: self.initiate(vm_id, point_id, force=force, progress=progress))

    def submit_revert(self, vm_id: str) -> Job:
        """RevertFailover as a JobType 98 job, after the precondition check."""
        target = self.guards.guard(Operation.REVERT_FAILOVER, vm_id)
        self._not_a_collection_unit(Operation.REVERT_FAILOVER, target.vm)
        return self._submit(JobType.REVERT_FAILOVER, target.vm, "RevertFailoverJob",
                            lambda progress: self.revert(vm_id, progress=progress))

    def submit_commit(self, vm_id: str) -> Job:
        """CommitFailover as a JobType 99 job, after the precondition check."""
        target = self.guards.guard(Operation.COMMIT_FAILOVER, vm_id)
        self._not_a_collection_unit(Operation.COMMIT_FAILOVER, target.vm)
        return self._submit(JobType.COMMIT_FAILOVER, target.vm, "CommitFailoverJob",
                            lambda progress: self.commit(vm_id, progress=progress))

    def _not_a_collection_unit(self, operation: Operation, vm: VirtualMachine) -> None:
        """A member of a collection failed over as a whole takes failover operations through the collection
        only (``domain.groups.require_member_failover``); the collection's own use cases do not come here."""
        require_member_failover(operation, vm.name, self.db.collections.containing(vm.vm_id))

    # -- InitiateFailover ---------------------------------------------------------------------------------

    async def initiate(self, vm_id: str, point_id: str | None, *, force: bool = False,
                       progress: Progress = _no_progress) -> dict[str, str]:
        """Fail the replica VM over to ``point_id`` (None = the latest point)."""
        vm = self.db.vms.get(vm_id)
        point = self.store.point(vm_id, point_id)
        kind = failed_over_type(point.kind)
        if kind is not ReplicationType.PLANNED:
            await self._split_brain_guard(vm, force)
        progress(20)
        async with self.chain_guard(vm_id):
            point = self._still_there(vm_id, point, point_id)
            kind = failed_over_type(point.kind)
            self.store.update_relationship(vm_id, lambda r: dataclasses.replace(
                r, state=_S.FAILOVER_IN_PROGRESS, state_before_failover=r.state,
                intent=failover_intent(point.point_id)))
        folder = replica_dir(point)
        try:
            # A diskless VM's point has no images: no disks to make (a VM with disks gets PointImageMissing).
            disks = await asyncio.to_thread(overlay_disks, vm, point, (folder or Path()) / FAILOVER_DIR)
            progress(60)
            instance = f"{vm.vm_id.lower()}-failover-{self.store.clock():%Y%m%d%H%M%S%f}"
            seed = None if folder is None else \
                await asyncio.to_thread(seed_disk, self.store, vm, folder / SEED_DIR, instance)
            progress(80)
            with self.db.transaction():
                self.store.update_vm(vm_id, lambda v: dataclasses.replace(
                    v, disks=tuple(disks) + ((seed,) if seed else ())))
                self.db.point_holds.release(vm_id)
                self._hold(point, vm_id, "failover")
                self.store.update_relationship(vm_id, lambda r: dataclasses.replace(
                    r, state=_S.RECOVERED, failed_over_type=kind, health=ReplicationHealth.WARNING,
                    intent=None))
        except BaseException:
            await asyncio.to_thread(self._undo_failover_files, folder)
            self.store.update_relationship(vm_id, lambda r: dataclasses.replace(
                r, state=r.state_before_failover or _S.REPLICATING, state_before_failover=None, intent=None))
            raise
        self.store.event(vm_id, "failover.initiated", "FailoverInitiated", vm=vm.name,
                         point=point.point_id, sequence=point.sequence, type=int(kind))
        return {"RecoveryPoint": point.point_id, "Sequence": str(point.sequence),
                "FailedOverReplicationType": str(int(kind))}

    def _still_there(self, vm_id: str, chosen: RecoveryPoint, point_id: str | None) -> RecoveryPoint:
        """``chosen`` again, after the split-brain probe: retention may have merged it away meanwhile (a
        point asked for by name is then gone; "the latest" is whatever is latest now)."""
        try:
            return self.store.point(vm_id, chosen.point_id)
        except NotFound:
            if point_id is not None:
                raise
            return self.store.point(vm_id, None)

    async def _split_brain_guard(self, vm: VirtualMachine, force: bool) -> None:
        relationship = self.store.relationship(vm.vm_id)
        host = relationship.settings.primary_connection_point or "(unknown)"
        if force:
            self.store.event(vm.vm_id, "failover.forced", "FailoverForced", vm=vm.name, host=host)
            return
        running: bool | None = None
        if self.primary_probe is not None and relationship.settings.primary_connection_point:
            try:
                running = await self.primary_probe(vm, relationship)
            except (Unavailable, OperationTimeout):
                running = None
        if running:
            raise InvalidState(
                f"virtual machine {vm.name} still runs on its primary host {host}; stop it there, or force "
                "the failover", message_id="FailoverPrimaryRunning", vm=vm.name, host=host)
        if running is None:
            self.store.event(vm.vm_id, "failover.primary-unknown", "FailoverPrimaryUnreachable",
                             vm=vm.name, host=host)

    def _hold(self, point: RecoveryPoint, holder: str, reason: str) -> None:
        from standby.store.port import PointHold

        self.db.point_holds.hold(PointHold(point.point_id, holder, reason, self.store.clock()))

    @staticmethod
    def _undo_failover_files(folder: Path | None) -> None:
        if folder is None:
            return
        remove_folder_files(folder / FAILOVER_DIR)
        remove_folder_files(folder / SEED_DIR)

    # -- RevertFailover -------------------------------------------------------------------------------------

    async def revert(self, vm_id: str, *, progress: Progress = _no_progress) -> dict[str, str]:
        """Undo the failover (or cancel a planned-failover prepare on a primary)."""
        vm = self.db.vms.get(vm_id)
        if vm.replication_mode == ReplicationMode.PRIMARY:
            return self._cancel_prepare(vm)
        if self.hypervisor.state(vm_id) is not EnabledState.DISABLED:
            await self.hypervisor.stop(vm_id, graceful=False)
        progress(40)
        head = self.store.point(vm_id, None)
        disks = head_disks(vm, head)
        with self.db.transaction():
            self.store.update_vm(vm_id, lambda v: dataclasses.replace(
                v, disks=disks, enabled_state=EnabledState.DISABLED))
            self.db.point_holds.release(vm_id, "failover")
            relationship = self.store.update_relationship(vm_id, self._reverted)
        await asyncio.to_thread(self._undo_failover_files, replica_dir(head))
        self.store.event(vm_id, "failover.reverted", "FailoverReverted", vm=vm.name,
                         state=int(relationship.state))
        await self._apply_kept_logs(vm_id)
        return {"ReplicationState": str(int(relationship.state))}

    async def _apply_kept_logs(self, vm_id: str) -> None:
        # The revert itself is done; a kept log that cannot be applied is for the next cycle (or a resync).
        if self.after_revert is None:
            return
        try:
            await self.after_revert(vm_id)
        except StandbyError as exc:
            self.store.event(vm_id, "failover.kept-logs-failed", "KeptLogsNotApplied", reason=str(exc))

    def _reverted(self, relationship: Relationship) -> Relationship:
        state = relationship.state_before_failover or _S.REPLICATING
        verdict = evaluate_health(HealthInputs(
            state=state, mode=ReplicationMode.REPLICA, side=Side.REPLICA,
            interval_seconds=relationship.settings.interval_seconds,
            last_transfer_at=relationship.last_replication_time), self.store.clock())
        return dataclasses.replace(relationship, state=state, state_before_failover=None, intent=None,
                                   failed_over_type=ReplicationType.NONE, health=verdict.health)

    def _cancel_prepare(self, vm: VirtualMachine) -> dict[str, str]:
        with self.db.transaction():
            self.store.update_vm(vm.vm_id, lambda v: dataclasses.replace(v, locked_from_start=False))
            self.store.update_relationship(vm.vm_id, lambda r: dataclasses.replace(
                r, state=_S.REPLICATING, intent=None))
        self.store.event(vm.vm_id, "failover.prepare-cancelled", "PlannedFailoverCancelled", vm=vm.name)
        return {"ReplicationState": str(int(_S.REPLICATING))}

    # -- CommitFailover -------------------------------------------------------------------------------------

    async def commit(self, vm_id: str, *, progress: Progress = _no_progress) -> dict[str, str]:
        """Make the failover permanent: keep the failover disks, drop every other recovery point."""
        vm = self.db.vms.get(vm_id)
        chosen = self._failover_point(vm_id)
        self.store.update_relationship(vm_id, lambda r: dataclasses.replace(
            r, intent=commit_intent(chosen.point_id)))
        progress(20)
        dropped = await self._drop_other_points(vm, chosen)
        progress(80)
        with self.db.transaction():
            self.db.point_holds.release(vm_id, "failover")
            self._hold(chosen, vm_id, "committed")
            self.store.update_relationship(vm_id, lambda r: dataclasses.replace(
                r, state=_S.COMMITTED, state_before_failover=None, intent=None))
        self.store.event(vm_id, "failover.committed", "FailoverCommitted", vm=vm.name,
                         point=chosen.point_id, dropped=dropped)
        return {"RecoveryPoint": chosen.point_id, "DroppedPoints": str(dropped)}

    def _failover_point(self, vm_id: str) -> RecoveryPoint:
        holds = [h for h in self.db.point_holds.list(holder_id=vm_id)
                 if h.reason in ("failover", "committed")]
        if not holds:
            raise InvalidState(f"virtual machine {vm_id} is not failed over to a recovery point",
                               message_id="FailoverPointUnknown", vm=vm_id)
        return self.db.recovery_points.get(holds[0].point_id)

    async def _drop_other_points(self, vm: VirtualMachine, chosen: RecoveryPoint) -> int:
        """Forget all points but the chosen one and test-held ones; delete files no kept chain needs."""
        held = {h.point_id for h in self.db.point_holds.list() if h.holder_id != vm.vm_id}
        kept_points = [p for p in self.db.recovery_points.list(vm_id=vm.vm_id)
                       if p.point_id == chosen.point_id or p.point_id in held]
        tops = [Path(d.path) for d in vm.disks] + [Path(i) for p in kept_points for _, i in p.images]
        keep: set[Path] = set()
        for top in tops:
            if top.is_file():
                keep.update(await asyncio.to_thread(failover_images.backing_chain, top))
        doomed = [p for p in self.db.recovery_points.list(vm_id=vm.vm_id) if p not in kept_points]
        files = [Path(i).absolute() for p in doomed for _, i in p.images]
        with self.db.transaction():
            for point in doomed:
                self.db.recovery_points.delete(point.point_id)
        await asyncio.to_thread(failover_images.remove, [f for f in files if f not in keep])
        return len(doomed)

    # -- start-up recovery ----------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Settle what a stopped daemon left half done; the VM ids it touched."""
        touched = []
        for relationship in self.db.relationships.list():
            pending = parse(relationship.intent)
            if pending is None:
                continue
            if relationship.state == _S.FAILOVER_IN_PROGRESS and pending.kind is IntentKind.FAILOVER:
                await self._roll_back_failover(relationship)
                touched.append(relationship.vm_id)
            elif pending.kind is IntentKind.COMMIT:
                vm = self.db.vms.get(relationship.vm_id)
                await self._drop_other_points(vm, self.db.recovery_points.get(pending.point_id))
                self.store.update_relationship(vm.vm_id, lambda r: dataclasses.replace(
                    r, state=_S.COMMITTED, state_before_failover=None, intent=None))
                touched.append(vm.vm_id)
        await asyncio.to_thread(self.drill.remove_orphans)
        return touched

    async def _roll_back_failover(self, relationship: Relationship) -> None:
        vm = self.db.vms.get(relationship.vm_id)
        head = self.store.point(vm.vm_id, None)
        with self.db.transaction():
            self.store.update_vm(vm.vm_id, lambda v: dataclasses.replace(v, disks=head_disks(v, head)))
            self.db.point_holds.release(vm.vm_id, "failover")
            self.store.update_relationship(vm.vm_id, lambda r: dataclasses.replace(
                r, state=r.state_before_failover or _S.REPLICATING, state_before_failover=None, intent=None))
        await asyncio.to_thread(self._undo_failover_files, replica_dir(head))
        self.store.event(vm.vm_id, "failover.rolled-back", "FailoverRolledBack", vm=vm.name)


def store_network_settings(
    store: FailoverStore, guards: ReplicationUseCases, vm_id: str, items: Sequence[FailoverNetworkSettings]
) -> list[FailoverNetworkSettings]:
    """SetFailoverNetworkAdapterSettings: one item per NIC to change, checked, then all stored at once.

    An item with ``nic_id`` "" is for the NIC at its position in the list; NICs not named keep their
    settings. More items than NICs, an unknown or twice-named NIC, or bad values are ``InvalidParameter``
    (32773) and nothing is stored.
    """
    vm = guards.guard(Operation.SET_FAILOVER_NETWORK_SETTINGS, vm_id).vm
    if len(items) > len(vm.nics):
        raise InvalidParameter(
            f"{len(items)} network settings for {len(vm.nics)} network adapters of {vm.name}",
            message_id="FailoverNetworkTooMany", vm=vm.name, count=len(items), nics=len(vm.nics))
    known = {nic.nic_id for nic in vm.nics}
    checked: dict[str, FailoverNetworkSettings] = {}
    for position, item in enumerate(items):
        nic_id = item.nic_id or vm.nics[position].nic_id
        if nic_id not in known:
            raise InvalidParameter(f"virtual machine {vm.name} has no network adapter {nic_id}",
                                   message_id="FailoverNetworkNoNic", vm=vm.name, nic=nic_id)
        if nic_id in checked:
            raise InvalidParameter(f"network adapter {nic_id} is named twice",
                                   message_id="FailoverNetworkNicTwice", nic=nic_id)
        checked[nic_id] = validate_network_settings(dataclasses.replace(item, vm_id=vm.vm_id, nic_id=nic_id))
    with store.db.transaction():
        for item in checked.values():
            store.db.failover_network.put(item)
    store.event(vm.vm_id, "failover.network", "FailoverNetworkStored", vm=vm.name, count=len(checked))
    return store.db.failover_network.list(vm_id=vm.vm_id)


def is_failed_over(relationship: Relationship | None) -> bool:
    """Whether logs arriving for this replica must be kept aside, not applied (states 5, 6, 12)."""
    return relationship is not None and relationship.state in (
        _S.RECOVERED, _S.COMMITTED, _S.FAILOVER_IN_PROGRESS)
