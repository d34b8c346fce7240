"""Redundancy sets (``Msvm_RedundancySet`` in root/HyperVCluster/v2, hyperv-api §8.8; issue 7 item 4).

Sets are derived from the relationships of this host and written to ``db.redundancy_sets`` (so the
association ``Msvm_MemberOfRedundancySet`` and every surface see them), next to sets stored by other means:
- one per replicated VM (``VM-<GUID>``, TypeOfSet 4 Sparing): the primary VM and its replica VM. The VM on the
  other host is named ``<GUID>@<host>`` (its host from the relationship's connection point), since both
  copies share the GUID; the active member is the one running the workload (the replica once failed over);
  RedundancyStatus from the relationship (``domain.groups.redundancy_status``);
- one per pair of hosts that replicate to each other (``HOSTS-<peer>``, TypeOfSet 2 N+1): this host and the
  peer, with the worst status of the VM sets between them.

``Failover(FailoverFrom, FailoverTo)`` answers seed 000's codes: 4 for a NULL, unknown or non-member From,
From = To, or From not the active member (for a host set: From runs no VM replicated to To); 1 when To is not
a member or the set's type (or a set whose VMs do not replicate) has no failover; 3 when an operation runs on
a member; 2 for anything else. For a VM set whose replica is here, the failover is unplanned to the latest
point when From cannot be reached; for a host set, that for every VM replicated From → To, all or nothing.
When From can be reached (or is this host) the move is a planned failover with reverse replication, zero
loss (``engine.group_planned.PlannedMove``; the VM must be turned off on From); a host set moves its VMs one
after the other and stops at the first failure (the VMs moved before it stay moved: a finished reverse has
no undo). Each VM moved leaves a ``FailoverIndication`` record (planned: type 1 Other, "Planned").
"""

from __future__ import annotations

import contextlib
import logging
import time as _time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from standby.domain.clock import Clock
from standby.domain.entities import Host, RedundancySet, Relationship, VirtualMachine
from standby.domain.enums import (
    FailoverCode,
    FailoverIndicationType,
    JobState,
    JobType,
    PerceivedSeverity,
    RedundancyStatus,
    ReplicationMode,
    ReplicationState,
    TypeOfSet,
)
from standby.domain.errors import InUse, InvalidParameter, NotSupported, StandbyError, Unavailable
from standby.domain.groups import FailoverIndication, error_class, failover_code, redundancy_status
from standby.domain.preconditions import Operation
from standby.engine.jobs import JobHandle, JobManager
from standby.store.port import Store

if TYPE_CHECKING:
    from standby.engine.failover import FailoverUseCases
    from standby.engine.group_planned import PlannedMove

log = logging.getLogger("standby.redundancy")
#: Whether a host answers (its peer listener is reachable).
Reachable = Callable[[str], Awaitable[bool]]
VM_SET = "VM-"
HOST_SET = "HOSTS-"
SEPARATOR = "@"
#: How long a synchronous Failover waits for its work (it has no Job out-parameter).
FAILOVER_TIMEOUT = 600.0
_FAILED_OVER = frozenset({ReplicationState.RECOVERED, ReplicationState.COMMITTED,
                          ReplicationState.FAILOVER_IN_PROGRESS})
_RECOVERY = (ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA)


def peer_vm(vm_id: str, host: str) -> str:
    """The member name of a VM's copy on another host."""
    return f"{vm_id}{SEPARATOR}{host}"


@dataclass(frozen=True, slots=True)
class PeerSystem:
    """A member on another host (a host, or a VM's copy there)."""

    name: str
    element_name: str
    host: str
    vm_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Move:
    """What a failover will do: move these VMs from host ``source`` to host ``target``. ``outgoing``: the
    VMs are primaries here (a planned move driven from this host); else replicas here (planned when
    ``source`` answers, unplanned to the latest point when not)."""

    set_id: str
    source: str
    vm_ids: tuple[str, ...]
    target: str = ""
    outgoing: bool = False


class RedundancyUseCases:
    """Derives, lists and fails over redundancy sets (see the module docstring)."""

    def __init__(self, db: Store, clock: Clock, host: Host, *, jobs: JobManager | None = None,
                 failover: FailoverUseCases | None = None, reachable: Reachable | None = None,
                 planned: PlannedMove | None = None) -> None:
        self._db = db
        self._clock = clock
        self._host = host
        self._jobs = jobs
        self._failover = failover
        self._reachable = reachable
        #: ``engine.group_planned.PlannedMove`` (None: planned moves answer 1 Not supported).
        self.planned = planned

    # -- the sets -------------------------------------------------------------------------------------------

    def sets(self) -> list[RedundancySet]:
        """Every set: the derived ones (written through to the store) and any stored by other means."""
        derived = {rs.set_id: rs for rs in self._derive()}
        for stored in self._db.redundancy_sets.list():
            if stored.set_id.startswith((VM_SET, HOST_SET)) and stored.set_id not in derived:
                self._db.redundancy_sets.delete(stored.set_id)
        for rs in derived.values():
            current = self._db.redundancy_sets.find(rs.set_id)
            if current is None:
                self._db.redundancy_sets.insert(rs)
            elif current != rs:
                self._db.redundancy_sets.update(rs)
        return self._db.redundancy_sets.list()

    def get(self, set_id: str) -> RedundancySet:
        """One set by id (``NotFound`` → 32773 / Failover 4)."""
        self.sets()
        return self._db.redundancy_sets.get(set_id)

    def peer_systems(self) -> list[PeerSystem]:
        """The members on other hosts: peer hosts and the VMs' copies there."""
        found: dict[str, PeerSystem] = {}
        for vm, _rel, peer in self._replicated():
            found.setdefault(peer, PeerSystem(peer, peer, peer))
            name = peer_vm(vm.vm_id, peer)
            found.setdefault(name, PeerSystem(name, vm.name, peer, vm.vm_id))
        return list(found.values())

    def indications(self) -> list[FailoverIndication]:
        """The failover indications kept, oldest first."""
        return self._db.failover_indications.list()

    def _replicated(self) -> list[tuple[VirtualMachine, Relationship, str]]:
        """(VM, its relationship, the peer host) for every replicated VM here."""
        out = []
        for rel in self._db.relationships.list():
            if int(rel.index) != 0:
                continue
            vm = self._db.vms.find(rel.vm_id)
            if vm is None:
                continue
            peer = _peer_of(vm, rel)
            if peer:
                out.append((vm, rel, peer))
        return out

    def _derive(self) -> list[RedundancySet]:
        sets: list[RedundancySet] = []
        by_peer: dict[str, list[RedundancyStatus]] = {}
        for vm, rel, peer in self._replicated():
            here, there = vm.vm_id, peer_vm(vm.vm_id, peer)
            primary_here = vm.replication_mode is ReplicationMode.PRIMARY
            members = (here, there) if primary_here else (there, here)
            active = here if primary_here or rel.state in _FAILED_OVER else there
            can_run = primary_here or self._db.recovery_points.latest(vm.vm_id) is not None \
                or rel.state is not ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
            status = redundancy_status(rel, can_run=can_run)
            sets.append(RedundancySet(f"{VM_SET}{vm.vm_id}", f"{vm.name}", TypeOfSet.SPARING, status, members,
                                      active))
            by_peer.setdefault(peer, []).append(status)
        for peer, statuses in sorted(by_peer.items()):
            sets.append(RedundancySet(f"{HOST_SET}{peer}", f"{self._host.name} + {peer}", TypeOfSet.N_PLUS_1,
                                      max(statuses), (self._host.name, peer), self._host.name))
        return sets

    # -- Failover --------------------------------------------------------------------------------------------

    def failover_now(self, set_id: str, source: str | None, target: str | None,
                     timeout: float = FAILOVER_TIMEOUT) -> FailoverCode:
        """``Msvm_RedundancySet.Failover`` from a worker thread: checked, run as a job, waited for."""
        try:
            move = self.plan(set_id, source, target)
            self._guard_members(move)  # before the job: the table must not see our own job as busy
            if self._jobs is None:
                raise Unavailable("failover needs the daemon's job manager", message_id="JobManagerStopped")
            job = self._jobs.submit(JobType.INITIATE_FAILOVER, element_id=_element(move),
                                    description=f"Redundancy set failover: {set_id}",
                                    work=self._work(move))
            deadline = _time.monotonic() + timeout
            while not (job := self._jobs.get(job.job_id)).state.is_terminal:
                if _time.monotonic() > deadline:
                    raise Unavailable("the failover did not finish in time", message_id="PeerTimeout",
                                      target=set_id)
                _time.sleep(0.05)
            if job.state is not JobState.COMPLETED:
                raise error_class(job.error_code)(job.error_description or "the failover failed")
        except StandbyError as exc:
            log.info("redundancy set failover refused", extra={"fields": {"set": set_id, "error": str(exc)}})
            return failover_code(exc)
        return FailoverCode.COMPLETED

    def plan(self, set_id: str, source: str | None, target: str | None) -> _Move:
        """Check a Failover call; what it would move, or the refusal (see the module docstring)."""
        if not source or not target:
            raise InvalidParameter("FailoverFrom and FailoverTo are required", message_id="ParameterRequired",
                                   parameter="FailoverFrom" if not source else "FailoverTo")
        rs = self.get(set_id)
        members = {m.upper(): m for m in rs.member_ids}
        source, target = members.get(source.upper(), source), members.get(target.upper(), target)
        if source not in rs.member_ids:
            raise InvalidParameter(f"{source} is not a member of redundancy set {rs.name}",
                                   message_id="RedundancyNotMember", member=source, set=rs.name)
        if target not in rs.member_ids:
            raise NotSupported(f"{target} is not a member of redundancy set {rs.name}",
                               message_id="RedundancyNotMember", member=target, set=rs.name)
        if source == target:
            raise InvalidParameter("FailoverFrom and FailoverTo name the same member",
                                   message_id="RedundancySameMember", member=source)
        if rs.set_id.startswith(VM_SET) and rs.type_of_set is TypeOfSet.SPARING:
            return self._vm_move(rs, source, target)
        if rs.set_id.startswith(HOST_SET) and rs.type_of_set is TypeOfSet.N_PLUS_1:
            return self._host_move(rs, source, target)
        raise NotSupported(f"redundancy set {rs.name} has no failover (its members do not replicate)",
                           message_id="RedundancyNoFailover", set=rs.name)

    def _vm_move(self, rs: RedundancySet, source: str, target: str) -> _Move:
        if source != rs.active_member_id:
            raise InvalidParameter(f"{source} is not the active member of redundancy set {rs.name}",
                                   message_id="RedundancyNotActive", member=source, set=rs.name)
        vm_id = rs.set_id[len(VM_SET):]
        self._check_idle((vm_id,))
        if SEPARATOR in target:  # the primary is here: a planned failover to the replica host
            self._require_planned(rs)
            return _Move(rs.set_id, self._host.name, (vm_id,), target.split(SEPARATOR, 1)[1], outgoing=True)
        return _Move(rs.set_id, source.split(SEPARATOR, 1)[1], (vm_id,), self._host.name)

    def _host_move(self, rs: RedundancySet, source: str, target: str) -> _Move:
        peer = target if source == self._host.name else source
        self._check_idle(tuple(vm.vm_id for vm, _rel, other in self._replicated() if other == peer))
        if target != self._host.name:
            self._require_planned(rs)
            leaving = tuple(vm.vm_id for vm, rel, peer in self._replicated()
                            if peer == target and vm.replication_mode is ReplicationMode.PRIMARY)
            if not leaving:
                raise InvalidParameter(f"{source} runs no virtual machine replicated to {target}",
                                       message_id="RedundancyNotActive", member=source, set=rs.name)
            return _Move(rs.set_id, source, leaving, target, outgoing=True)
        moving = tuple(vm.vm_id for vm, rel, peer in self._replicated()
                       if peer == source and vm.replication_mode in _RECOVERY
                       and rel.state not in _FAILED_OVER)
        if not moving:
            raise InvalidParameter(f"{source} runs no virtual machine replicated to {target}",
                                   message_id="RedundancyNotActive", member=source, set=rs.name)
        return _Move(rs.set_id, source, moving, target)

    def _require_planned(self, rs: RedundancySet) -> None:
        if self.planned is None:
            raise NotSupported("a planned failover with reverse replication needs the primary side of "
                               "replication on this daemon", message_id="RedundancyPlannedPending",
                               set=rs.name)

    def _check_idle(self, vm_ids: tuple[str, ...]) -> None:
        """3 Busy when a job runs on one of the VMs, or on a collection holding one (it acts on them)."""
        elements = set(vm_ids) | {c.collection_id for vm_id in vm_ids
                                  for c in self._db.collections.containing(vm_id)}
        for vm_id in sorted(elements):
            job = self._db.jobs.active_on(vm_id)
            if job is not None:
                raise InUse(f"job {job.job_id} is still running on {vm_id}", message_id="JobBusyOnElement",
                            job=job.job_id, element=vm_id)

    def _guard_members(self, move: _Move) -> None:
        if self._failover is None:
            raise NotSupported("this daemon has no failover", message_id="NotImplementedYet",
                               method="Failover")
        operation = Operation.PREPARE_PLANNED_FAILOVER if move.outgoing else Operation.INITIATE_FAILOVER
        for vm_id in move.vm_ids:
            try:
                self._failover.guards.guard(operation, vm_id)
            except InUse:
                raise
            except StandbyError as exc:  # the VM cannot fail over: "2 anything else", not a parameter error
                raise StandbyError(str(exc), message_id=exc.message_id, **exc.args_map) from exc

    def _work(self, move: _Move) -> Callable[[JobHandle], Awaitable[dict[str, str]]]:
        async def work(handle: JobHandle) -> dict[str, str]:
            return await self.run(move)

        return work

    async def run(self, move: _Move) -> dict[str, str]:
        """Carry a move out: planned when From answers (or is here), else unplanned, all or nothing."""
        if self._failover is None:
            raise NotSupported("this daemon has no failover", message_id="NotImplementedYet",
                               method="Failover")
        if move.outgoing or (self._reachable is not None and await self._reachable(move.source)):
            return await self._run_planned(move)
        done: list[str] = []
        try:
            for vm_id in move.vm_ids:
                await self._failover.initiate(vm_id, None)
                done.append(vm_id)
        except BaseException:
            for vm_id in reversed(done):
                with contextlib.suppress(StandbyError):
                    await self._failover.revert(vm_id)
            raise
        for vm_id in done:
            self._indicate(move, vm_id)
        return {"Moved": str(len(done))}

    async def _run_planned(self, move: _Move) -> dict[str, str]:
        """One VM after the other; a failure stops (its own steps are rolled back, earlier moves stand)."""
        if self.planned is None:
            raise NotSupported(f"{move.source} can be reached: a planned failover with reverse replication "
                               "is needed, which this daemon cannot run",
                               message_id="RedundancyPlannedPending", set=move.set_id)
        moved = 0
        for vm_id in move.vm_ids:
            try:
                if move.outgoing:
                    await self.planned.from_primary(vm_id)
                else:
                    await self.planned.from_replica(vm_id)
            except StandbyError as exc:
                if moved:
                    raise type(exc)(f"{exc}; {moved} virtual machine(s) moved before stay moved",
                                    message_id="RedundancyPlannedStopped", reason=str(exc),
                                    moved=moved) from exc
                raise
            moved += 1
            self._indicate(move, vm_id, planned=True)
        return {"Moved": str(moved), "Planned": "true"}

    def _indicate(self, move: _Move, vm_id: str, *, planned: bool = False) -> None:
        kind = FailoverIndicationType.OTHER if planned else FailoverIndicationType.UNPLANNED
        self._db.failover_indications.insert(FailoverIndication(
            str(uuid.uuid4()).upper(), move.set_id, vm_id, move.target or self._host.name, move.source,
            kind, "Planned" if planned else "", PerceivedSeverity.INFORMATION, self._clock()))


def _peer_of(vm: VirtualMachine, rel: Relationship) -> str:
    if vm.replication_mode is ReplicationMode.PRIMARY:
        return rel.settings.recovery_connection_point
    if vm.replication_mode in _RECOVERY:
        return rel.settings.primary_connection_point
    return ""


def _element(move: _Move) -> str:
    return move.vm_ids[0] if len(move.vm_ids) == 1 else move.set_id
