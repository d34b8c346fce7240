"""The planned move of a redundancy set (``Msvm_RedundancySet.Failover`` with FailoverFrom reachable): a
planned failover with reverse replication, zero loss, for one VM at a time (issue 7 item 4).

The three steps of Hyper-V's planned failover, each on the host it belongs to:
1. on the primary host A: prepare (``PlannedFailover``: lock the turned-off VM, ship its last changes as a
   PLANNED log);
2. on the replica host B: ``InitiateFailover`` to the latest point, which is that planned point;
3. on B: ``ReverseReplication.reverse`` — A becomes B's replica without a copy, B the primary.

Either host may drive: A runs step 1 itself and asks B for steps 2-3 (``POST /peer/v1/vms/{id}/planned-
failover/take-over``); B asks A for step 1 (``…/planned-failover/prepare``) and runs 2-3 itself. Rollback:
a failed step 2 or 3 reverts B's failover when it is still Recovered, and A's prepare is cancelled
(``RevertFailover`` on a prepared primary, ``…/planned-failover/cancel``). Once A has become B's replica
there is nothing to roll back to: the move stands and only its first cycle is missing (state 9 or 10 on B).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from standby.domain.entities import ReplicationSettings
from standby.domain.enums import ReplicationMode, ReplicationState
from standby.domain.errors import InvalidState, StandbyError, Unavailable
from standby.domain.groups import error_class
from standby.domain.peer_access import PeerRoute
from standby.domain.preconditions import Operation
from standby.engine.jobs import JobManager
from standby.engine.peer_access import Caller, PeerAccess
from standby.store.port import Store

log = logging.getLogger("standby.redundancy")
#: ``(host, port or None) → PeerClient`` (an async context manager with the planned-failover calls).
PeerFor = Callable[[str, int | None], Any]
#: How long one step may take (a prepare ships a log; a reverse runs a whole cycle).
STEP_TIMEOUT = 600.0
_PRIMARY = 0


class PlannedMove:
    """Planned failover with reverse replication of one VM between this host and its peer."""

    def __init__(self, db: Store, jobs: JobManager | None, *, failover: Any, planned: Any, reverse: Any,
                 peer: PeerFor | None, peer_port: int = 0, step_timeout: float = STEP_TIMEOUT) -> None:
        self._db = db
        self._jobs = jobs
        self._failover = failover
        self._planned = planned
        self._reverse = reverse
        self._peer = peer
        self._peer_port = peer_port
        self._timeout = step_timeout

    # -- checks (before the caller's job: the table must not see that job as busy) ---------------------------

    def check_primary(self, vm_id: str) -> None:
        """The primary VM here may be prepared (off, Replicating, idle)."""
        self._failover.guards.guard(Operation.PREPARE_PLANNED_FAILOVER, vm_id)

    def check_replica(self, vm_id: str) -> None:
        """The replica VM here may fail over."""
        self._failover.guards.guard(Operation.INITIATE_FAILOVER, vm_id)

    # -- drivers ---------------------------------------------------------------------------------------------

    async def from_primary(self, vm_id: str) -> dict[str, str]:
        """This host is A: prepare here, then B takes over; on failure the prepare is cancelled."""
        settings = self._relationship_settings(vm_id)
        prepared = await self._step(self._planned.prepare(vm_id), "prepare")
        try:
            client = self._client(settings.recovery_connection_point, settings.recovery_port or None)
            async with client as peer:
                taken = await peer.take_over(vm_id, {"port": self._peer_port})
        except BaseException:
            await self._cancel_here(vm_id)
            raise
        return {"Prepared": prepared.get("Sequence", ""), **{str(k): str(v) for k, v in taken.items()}}

    async def from_replica(self, vm_id: str) -> dict[str, str]:
        """This host is B: A prepares, then B fails over and reverses; on failure A's prepare is cancelled."""
        primary = self._relationship_settings(vm_id).primary_connection_point
        async with self._client(primary, None) as peer:
            await peer.prepare_planned(vm_id)
            try:
                return await self.take_over(vm_id, port=None)
            except BaseException:
                with contextlib.suppress(StandbyError):
                    await peer.cancel_planned(vm_id)
                raise

    # -- the steps (also what the peer routes run) -----------------------------------------------------------

    async def prepare_for_peer(self, caller: Caller, vm_id: str) -> dict[str, str]:
        """Step 1 on A for B (only the VM's recorded replica host): the prepare job (JobType 96), waited
        for; its result or its error."""
        PeerAccess(self._db).admit(PeerRoute.PLANNED_PREPARE, caller, vm_id)
        if self._jobs is None:
            raise Unavailable("planned failover needs the daemon's job manager",
                              message_id="JobManagerStopped")
        job = self._planned.submit_prepare(vm_id)
        job = await self._jobs.wait(job.job_id, self._timeout)
        if not job.state.is_terminal:
            raise Unavailable("the planned-failover prepare did not finish in time", message_id="PeerTimeout",
                              target=vm_id)
        if job.error_code:
            raise error_class(job.error_code)(job.error_description or "the prepare failed")
        return dict(job.result or {})

    async def cancel_for_peer(self, caller: Caller, vm_id: str) -> dict[str, str]:
        """Undo step 1 on A for B (only the VM's recorded replica host): RevertFailover of a prepared
        primary (unlocks it; Replicating again)."""
        PeerAccess(self._db).admit(PeerRoute.PLANNED_CANCEL, caller, vm_id)
        return await self._cancel_prepared(vm_id)

    async def _cancel_prepared(self, vm_id: str) -> dict[str, str]:
        vm = self._db.vms.get(vm_id)
        if vm.replication_mode is not ReplicationMode.PRIMARY or not vm.locked_from_start:
            # nothing prepared: nothing to undo
            return {"ReplicationState": str(int(self._state(vm_id) or 0))}
        result: dict[str, str] = await self._failover.revert(vm_id)
        return result

    async def take_over_for_peer(self, caller: Caller, vm_id: str, *, port: int | None) -> dict[str, str]:
        """Steps 2-3 on B for A (only the primary this replica records), after the failover guard."""
        site = PeerAccess(self._db).admit(PeerRoute.PLANNED_TAKE_OVER, caller, vm_id).site
        assert site is not None  # a replica route's admission carries its record
        self.check_replica(site.vm_id)
        return await self.take_over(site.vm_id, port=port)

    async def take_over(self, vm_id: str, *, port: int | None) -> dict[str, str]:
        """Steps 2-3 on B; a failure before A became the replica reverts B's failover."""
        failed_over = await self._step(self._failover.initiate(vm_id, None), "failover")
        rel = self._db.relationships.get(vm_id, _PRIMARY)
        settings = dataclasses.replace(
            rel.settings, recovery_connection_point=rel.settings.primary_connection_point,
            primary_connection_point="", recovery_port=port or self._peer_port)
        try:
            settings = self._reverse.settings_for(self._db.vms.get(vm_id), settings)
            reversed_ = await self._step(self._reverse.reverse(vm_id, settings), "reverse")
        except BaseException:
            if self._state(vm_id) is ReplicationState.RECOVERED:  # A did not become the replica yet
                with contextlib.suppress(StandbyError):
                    await self._failover.revert(vm_id)
            raise
        return {"RecoveryPoint": failed_over.get("RecoveryPoint", ""), **reversed_}

    # -- helpers ---------------------------------------------------------------------------------------------

    async def _step(self, step: Awaitable[dict[str, str]], name: str) -> dict[str, str]:
        try:
            return await asyncio.wait_for(step, self._timeout)
        except TimeoutError:
            raise Unavailable(f"the planned failover's {name} step did not finish in time",
                              message_id="PeerTimeout", target=name) from None

    async def _cancel_here(self, vm_id: str) -> None:
        try:
            await self._cancel_prepared(vm_id)
        except StandbyError as exc:
            log.error("cancelling the planned-failover prepare of %s failed: %s", vm_id, exc)

    def _client(self, host: str, port: int | None) -> Any:
        if self._peer is None or not host:
            raise Unavailable("the other host of this virtual machine cannot be reached (no peer client)",
                              message_id="PeerUnreachable", target=host or "?", reason="no peer client")
        return self._peer(host, port)

    def _relationship_settings(self, vm_id: str) -> ReplicationSettings:
        rel = self._db.relationships.find(vm_id, _PRIMARY)
        if rel is None:
            raise InvalidState(f"virtual machine {vm_id} does not replicate",
                               message_id="RedundancyNotReplicated", vm=vm_id)
        return rel.settings

    def _state(self, vm_id: str) -> ReplicationState | None:
        rel = self._db.relationships.find(vm_id, _PRIMARY)
        return rel.state if rel is not None else None
