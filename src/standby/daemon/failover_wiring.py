"""Builds the failover use cases for the composition root (``compose.build_services`` calls ``build``).

The split-brain guard of an unplanned failover asks the primary host whether the VM still runs
(``GET /peer/v1/vms/{vm_id}/running`` through ``peer.client.PeerClient``), at the relationship's
PrimaryConnectionPoint on the peer port this daemon is configured with (hosts of one site share it). Without
a peer client, a site CA or a primary name, the primary counts as unreachable: that is what an unplanned
failover is for.
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

    replica = getattr(services, "replica", None)
    after_revert = replica.applier.apply_kept_logs if replica is not None else None
    chain_guard = replica.applier.chain_guard if replica is not None else None
    failover = FailoverUseCases(services.db, services.clock, services.jobs, services.hypervisor,
                                ReplicationUseCases(services.db, services.clock), primary_probe=probe,
                                after_revert=after_revert, chain_guard=chain_guard)
    services.add_recovery_hook("failover", _recover)
    return failover


async def primary_runs(services: Any, vm: VirtualMachine, relationship: Relationship) -> bool | None:
    """Whether the VM runs on its primary host; None when that cannot be asked."""
    host = relationship.settings.primary_connection_point
    client = _peer_client(services, host) if host else None
    if client is None:
        return None
    try:
        async with client:
            answer = await client.vm_running(vm.vm_id)
    except NotFound:
        return False  # the primary host no longer has the VM
    running = answer[0] if isinstance(answer, tuple) else answer
    return bool(running)


def _peer_client(services: Any, host: str) -> Any | None:
    config = services.config
    ca = getattr(getattr(config, "tls", None), "ca_file", None)
    port = getattr(getattr(config, "peer", None), "port", None)
    if ca is None or port is None:
        return None
    try:
        from standby.peer.client import PeerClient
        from standby.peer.tls import PeerTls
    except ModuleNotFoundError:
        return None
    tls = PeerTls(ca, config.listeners.https.cert_file, config.listeners.https.key_file)
    url_host = f"[{host}]" if ":" in host else host
    return PeerClient(f"https://{url_host}:{port}", tls)


async def _recover(services: Services) -> None:
    failover = getattr(services, "failover", None)
    if failover is not None:
        touched = await failover.recover()
        if touched:
            log.info("failover recovery", extra={"fields": {"vms": ",".join(touched)}})
