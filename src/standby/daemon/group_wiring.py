"""Builds groups and redundancy sets for the composition root (``compose.build_services`` calls ``build``).

- always: collection management and guards, the replica side's ``PointAssembler`` (a listener of the
  applier, so collection recovery points appear as member logs are applied) and the redundancy sets;
- with a hypervisor: the primary side's group replication, group cycles (``CollectionUnits``: collections
  become units of the primary's scheduler, which then no longer schedules their members on their own), and
  collection failover.
``start``/``stop`` have nothing of their own to run: the primary's scheduler runs the collections' cycles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from standby.domain.errors import StandbyError, Unavailable
from standby.engine.collections import CollectionUseCases
from standby.engine.group_cycle import CollectionUnits, GroupCycle, PointAssembler, QmpPauser
from standby.engine.group_failover import GroupFailover
from standby.engine.group_replication import GroupReplication
from standby.engine.redundancy import RedundancyUseCases

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.groups")


@dataclass(eq=False)
class Groups:
    """What the surfaces call for collections and redundancy sets."""

    management: CollectionUseCases
    assembler: PointAssembler
    redundancy: RedundancyUseCases
    replication: GroupReplication | None = None
    failover: GroupFailover | None = None
    cycle: GroupCycle | None = None
    units: CollectionUnits | None = None


def build(services: Services) -> Groups:
    """Groups over the daemon's store, jobs and (when there is one) hypervisor."""
    db, clock = services.db, services.clock
    management = CollectionUseCases(db, clock)
    assembler = PointAssembler(db, clock)
    replica = getattr(services, "replica", None)
    if replica is not None:
        replica.applier.point_listeners.append(assembler.note)
    failover = getattr(services, "failover", None)
    groups = Groups(management, assembler,
                    RedundancyUseCases(db, clock, services.host, jobs=services.jobs, failover=failover,
                                       reachable=_reachable(services), planned=_planned_move(services)))
    services.add_recovery_hook("collections", _recover_collections)
    primary, hypervisor = getattr(services, "primary", None), services.hypervisor
    if primary is not None and hypervisor is not None:
        from standby.engine.capture import Capture

        capture = Capture(hypervisor, services.config.data_dir / "run")
        groups.cycle = GroupCycle(db, primary.runner, capture, QmpPauser(hypervisor), clock)
        groups.units = CollectionUnits(db, groups.cycle, primary.runner, hypervisor.state, clock)
        primary.scheduler.add_kind(groups.units)
        groups.replication = GroupReplication(db, clock, services.jobs, management, primary.use_cases)
    if failover is not None:
        planned = getattr(services, "planned", None)
        groups.failover = GroupFailover(db, clock, services.jobs, management, failover=failover,
                                        assembler=assembler, planned=getattr(planned, "planned", None),
                                        reverse=getattr(planned, "reverse", None))
    return groups


def _planned_move(services: Services) -> Any:
    """Redundancy-set planned moves (``engine.group_planned``) when this daemon has both sides."""
    planned, failover = getattr(services, "planned", None), getattr(services, "failover", None)
    if planned is None or failover is None or getattr(services, "primary", None) is None:
        return None
    from standby.engine.group_planned import PlannedMove

    config = services.config

    def peer(host: str, port: int | None) -> Any:
        from standby.peer.client import PeerClient
        from standby.peer.tls import PeerTls

        ca = getattr(getattr(config, "tls", None), "ca_file", None)
        if ca is None:
            raise Unavailable("replication needs [tls] ca_file (the site CA) in the configuration",
                              message_id="PeerTlsMissing")
        tls = PeerTls(ca, config.listeners.https.cert_file, config.listeners.https.key_file)
        url_host = f"[{host}]" if ":" in host else host
        return PeerClient(f"https://{url_host}:{port or config.peer.port}", tls)

    return PlannedMove(services.db, services.jobs, failover=failover, planned=planned.planned,
                       reverse=planned.reverse, peer=peer, peer_port=config.peer.port)


async def _recover_collections(services: Services) -> None:
    """Settle collections a stopped daemon left mid-operation (``engine.group_recovery``)."""
    from standby.engine.group_recovery import settle_collections

    touched = await settle_collections(services.db, services.clock, getattr(services, "failover", None))
    if touched:
        log.info("collection recovery", extra={"fields": {"collections": ",".join(touched)}})


def _reachable(services: Services) -> Any:
    """Whether a peer host answers ``GET /peer/v1/ping`` (refused = reachable; unreachable = not)."""
    async def reachable(host: str) -> bool:
        config = services.config
        ca = getattr(getattr(config, "tls", None), "ca_file", None)
        if ca is None or not host:
            return False
        try:
            from standby.peer.client import PeerClient
            from standby.peer.tls import PeerTls
        except ModuleNotFoundError:
            return False
        tls = PeerTls(ca, config.listeners.https.cert_file, config.listeners.https.key_file)
        url_host = f"[{host}]" if ":" in host else host
        try:
            async with PeerClient(f"https://{url_host}:{config.peer.port}", tls) as client:
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
