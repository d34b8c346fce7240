"""Builds the failover use cases for the composition root (``compose.build_services`` calls ``build``).

The split-brain guard of an unplanned failover asks the primary host whether the VM still runs
(``GET /peer/v1/vms/{vm_id}/running``). The peer client is the replica side's (``peer/``): when the services
carry ``peer_client_for(host)`` returning an object with ``async vm_running(vm_id)`` (a bool, or the route's
``{running, enabled_state}`` answer), the probe uses it; until then the primary counts as unreachable, which
is what an unplanned failover is for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.errors import NotFound

if TYPE_CHECKING:
    from standby.daemon.compose import Services
    from standby.engine.failover import FailoverUseCases

log = logging.getLogger("standby.failover")


def build(services: Services) -> FailoverUseCases | None:
    """The failover use cases over the daemon's store, jobs and hypervisor (None without a hypervisor)."""
    if services.hypervisor is None:
        return None
    from standby.engine.failover import FailoverUseCases
    from standby.engine.replication import ReplicationUseCases

    async def probe(vm: VirtualMachine, relationship: Relationship) -> bool | None:
        return await primary_runs(services, vm, relationship)

    failover = FailoverUseCases(services.db, services.clock, services.jobs, services.hypervisor,
                                ReplicationUseCases(services.db, services.clock), primary_probe=probe)
    services.add_recovery_hook("failover", _recover)
    return failover


async def primary_runs(services: Any, vm: VirtualMachine, relationship: Relationship) -> bool | None:
    """Whether the VM runs on its primary host; None when no peer client exists or the host says nothing."""
    client_for = getattr(services, "peer_client_for", None)
    host = relationship.settings.primary_connection_point
    if client_for is None or not host:
        return None
    try:
        answer = await client_for(host).vm_running(vm.vm_id)
    except NotFound:
        return False  # the primary host no longer has the VM
    if isinstance(answer, dict):
        return bool(answer.get("running"))
    return bool(answer)


async def _recover(services: Services) -> None:
    failover = getattr(services, "failover", None)
    if failover is not None:
        touched = await failover.recover()
        if touched:
            log.info("failover recovery", extra={"fields": {"vms": ",".join(touched)}})
