"""Builds the primary side of replication for the composition root (``compose.build_services`` calls
``build``): capture over the QEMU driver, the cycle runner, the relationship use cases and the scheduler.

The peer client is the replica side's (``peer.client.PeerClient(base_url, tls)``); until it is importable,
or when ``[tls] ca_file`` is not configured, every peer call fails with ``Unavailable`` (a clear refusal,
not a crash). ``start``/``stop`` run the scheduler; a recovery hook aborts cycles a previous daemon left
half done before the scheduler starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from standby.domain.entities import ReplicationSettings
from standby.domain.errors import Unavailable

if TYPE_CHECKING:
    from standby.daemon.compose import Services
    from standby.engine.cycle import CycleRunner, PeerPort
    from standby.engine.replication import PrimaryReplication
    from standby.engine.scheduler import Scheduler

log = logging.getLogger("standby.replication")


@dataclass(eq=False)
class Primary:
    """The primary side's objects: use cases for the surfaces, the runner and the scheduler."""

    use_cases: PrimaryReplication
    runner: CycleRunner
    scheduler: Scheduler

    def __getattr__(self, name: str) -> Any:
        # Surfaces call ``services.primary.submit_start(...)`` and friends directly.
        return getattr(self.use_cases, name)


def build(services: Services) -> Primary | None:
    """The primary side over the daemon's hypervisor (None without one)."""
    if services.hypervisor is None:
        return None
    from standby.engine.capture import Capture
    from standby.engine.cycle import CycleRunner
    from standby.engine.replication import PrimaryReplication, ReplicationUseCases
    from standby.engine.scheduler import Scheduler

    config = services.config
    peers = peer_factory(services)
    capture = Capture(services.hypervisor, config.data_dir / "run")
    runner = CycleRunner(services.db, capture, peers, services.clock)
    guards = ReplicationUseCases(services.db, services.clock)
    use_cases = PrimaryReplication(guards, services.jobs, runner, peers, db=services.db, clock=services.clock,
                                   host_name=config.host.fqdn)
    scheduler = Scheduler(services.db, runner, services.hypervisor.state, services.clock, peers=peers,
                          resyncer=use_cases)
    services.add_recovery_hook("replication-cycles", _recover)
    return Primary(use_cases, runner, scheduler)


async def _recover(services: Services) -> None:
    primary = getattr(services, "primary", None)
    if primary is not None:
        settled = await primary.runner.recover()
        if settled:
            log.info("aborted half-done replication cycles", extra={"fields": {"vms": ",".join(settled)}})


def start(services: Services) -> None:
    """Start the scheduler (after start-up recovery, on the daemon's loop)."""
    primary = getattr(services, "primary", None)
    if primary is not None:
        primary.scheduler.start()


async def stop(services: Services) -> None:
    """Stop the scheduler (a cycle in flight aborts its cut)."""
    primary = getattr(services, "primary", None)
    if primary is not None:
        await primary.scheduler.stop()


def peer_factory(services: Services) -> Any:
    """``settings → PeerClient`` for the relationship's RecoveryConnectionPoint:RecoveryServerPortNumber."""
    config = services.config

    clients: dict[str, Any] = {}
    services.closers.append(lambda: _close_all(clients))

    def make(settings: ReplicationSettings) -> PeerPort:
        try:
            from standby.peer.client import PeerClient
            from standby.peer.tls import PeerTls
        except ModuleNotFoundError as exc:
            raise Unavailable("this daemon has no peer client yet", message_id="PeerClientMissing") from exc
        ca = config.tls.ca_file
        if ca is None:
            raise Unavailable("replication needs [tls] ca_file (the site CA) in the configuration",
                              message_id="PeerTlsMissing")
        tls = PeerTls(ca, config.listeners.https.cert_file, config.listeners.https.key_file)
        host, port = settings.recovery_connection_point, settings.recovery_port or config.peer.port
        url_host = f"[{host}]" if ":" in host else host
        url = f"https://{url_host}:{port}"
        if url not in clients:  # one connection pool per replica host
            clients[url] = PeerClient(url, tls)
        client: PeerPort = clients[url]
        return client

    return make


def _close_all(clients: dict[str, Any]) -> None:
    """At daemon exit (the loop may be gone): drop the pools; sockets close with the process."""
    clients.clear()
