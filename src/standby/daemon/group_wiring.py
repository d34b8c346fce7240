"""Builds groups and redundancy sets for the composition root (``compose.build_services`` calls ``build``).

- collection management and guards, the replica side's ``PointAssembler`` (a listener of the applier, so
  collection recovery points appear as member logs are applied) and the redundancy sets;
- the primary side's group replication, group cycles (``CollectionUnits``: collections become units of the
  primary's scheduler, which then no longer schedules their members on their own), and collection failover.
``start``/``stop`` have nothing of their own to run: the primary's scheduler runs the collections' cycles.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from standby.daemon.primary_wiring import peer_client
from standby.domain.errors import StandbyError, Unavailable
from standby.engine.capture import Capture
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import CollectionUnits, GroupCycle, PointAssembler, QmpPauser
from standby.engine.group_failover import GroupFailover
from standby.engine.group_planned import PlannedMove
from standby.engine.group_recovery import settle_collections
from standby.engine.group_replication import GroupReplication
from standby.engine.redundancy import RedundancyUseCases
from standby.peer.client import PeerClient

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.groups")


@dataclass(eq=False)
class Groups:
    """What the surfaces call for collections and redundancy sets."""

    management: CollectionUseCases
    assembler: PointAssembler
    redundancy: RedundancyUseCases
    replication: GroupReplication
    failover: GroupFailover
    cycle: GroupCycle
    units: CollectionUnits
    #: Redundancy-set planned moves (the peer routes drive them from the other host).
    planned_move: PlannedMove


def build(services: Services) -> Groups:
    """Groups over the daemon's store, jobs, hypervisor and both sides of per-VM replication."""
    db, clock, hypervisor, primary = services.db, services.clock, services.hypervisor, services.primary
    management = CollectionUseCases(db, clock)
    assembler = PointAssembler(db, clock)
    services.replica.applier.point_listeners.append(assembler.note)
    planned_move = _planned_move(services)
    redundancy = RedundancyUseCases(db, clock, services.host, jobs=services.jobs, failover=services.failover,
                                    reachable=_reachable(services), planned=planned_move)
    services.add_recovery_hook("collections", _recover_collections)
    cycle = GroupCycle(db, primary.runner, Capture(hypervisor, services.config.data_dir / "run"),
                       QmpPauser(hypervisor), clock)
    units = CollectionUnits(db, cycle, primary.runner, hypervisor.state, clock)
    primary.scheduler.add_kind(units)
    planned = services.planned
    return Groups(
        management, assembler, redundancy,
        replication=GroupReplication(db, clock, services.jobs, management, primary.use_cases),
        failover=GroupFailover(db, clock, services.jobs, management, failover=services.failover,
                               assembler=assembler, planned=planned.planned, reverse=planned.reverse),
        cycle=cycle, units=units, planned_move=planned_move)


def _planned_move(services: Services) -> PlannedMove:
    """Redundancy-set planned moves (``engine.group_planned``)."""
    config = services.config

    def peer(host: str, port: int | None) -> PeerClient:
        return peer_client(config, host, port)

    return PlannedMove(services.db, services.jobs, failover=services.failover,
                       planned=services.planned.planned, reverse=services.planned.reverse, peer=peer,
                       peer_port=config.peer.port)


async def _recover_collections(services: Services) -> None:
    """Settle collections a stopped daemon left mid-operation (``engine.group_recovery``)."""
    touched = await settle_collections(services.db, services.clock, services.failover)
    if touched:
        log.info("collection recovery", extra={"fields": {"collections": ",".join(touched)}})


def _reachable(services: Services) -> Callable[[str], Awaitable[bool]]:
    """Whether a peer host answers ``GET /peer/v1/ping`` (refused = reachable; unreachable = not)."""

    async def reachable(host: str) -> bool:
        if services.config.tls.ca_file is None or not host:
            return False
        try:
            async with peer_client(services.config, host) as client:
                await client.ping()
        except Unavailable:
            return False
        except StandbyError:
            return True  # it answered (e.g. 403): it is up
        return True

    return reachable


def start(services: Services) -> None:
    """Nothing to start: the collections' cycles run in the primary's scheduler (``primary_wiring.start``)."""


async def stop(services: Services) -> None:
    """Nothing to stop: ``primary_wiring.stop`` stops the collections' cycles with every other unit's."""
