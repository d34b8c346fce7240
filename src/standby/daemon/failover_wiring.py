"""Builds the failover use cases for the composition root (``compose.build_services`` calls ``build``).

The split-brain guard of an unplanned failover asks the primary host whether the VM still runs
(``GET /peer/v1/vms/{vm_id}/running`` through ``peer.client.PeerClient``), at the relationship's
PrimaryConnectionPoint on the peer port this daemon is configured with (hosts of one site share it). Without
a peer client, a site CA or a primary name, the primary counts as unreachable: that is what an unplanned
failover is for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from standby.daemon.primary_wiring import peer_client
from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.errors import NotFound
from standby.engine.failover import FailoverUseCases
from standby.engine.replication import ReplicationUseCases

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.failover")


def build(services: Services) -> FailoverUseCases:
    """The failover use cases over the daemon's store, jobs and hypervisor."""

    async def probe(vm: VirtualMachine, relationship: Relationship) -> bool | None:
        return await primary_runs(services, vm, relationship)

    applier = services.replica.applier
    failover = FailoverUseCases(services.db, services.clock, services.jobs, services.hypervisor,
                                ReplicationUseCases(services.db, services.clock), primary_probe=probe,
                                after_revert=applier.apply_kept_logs, chain_guard=applier.chain_guard)
    services.add_recovery_hook("failover", _recover)
    return failover


async def primary_runs(services: Services, vm: VirtualMachine, relationship: Relationship) -> bool | None:
    """Whether the VM runs on its primary host; None when that cannot be asked."""
    host = relationship.settings.primary_connection_point
    if not host or services.config.tls.ca_file is None:
        return None
    try:
        async with peer_client(services.config, host) as client:
            answer = await client.vm_running(vm.vm_id)
    except NotFound:
        return False  # the primary host no longer has the VM
    running = answer[0] if isinstance(answer, tuple) else answer
    return bool(running)


async def _recover(services: Services) -> None:
    touched = await services.failover.recover()
    if touched:
        log.info("failover recovery", extra={"fields": {"vms": ",".join(touched)}})
