"""Builds the primary side of replication for the composition root (``compose.build_services`` calls
``build``): capture over the QEMU driver, the cycle runner, the relationship use cases and the scheduler.

``peer_client`` is the one place a mutual-TLS client of another host is made; without ``[tls] ca_file``
every peer call fails with ``Unavailable`` (a clear refusal, not a crash). ``start``/``stop`` run the
scheduler; a recovery hook aborts cycles a previous daemon left half done before the scheduler starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from standby.domain.entities import Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import RelationshipIndex, ReplicationHealth, ReplicationMode, ReplicationState
from standby.domain.errors import StandbyError, Unavailable
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.hypervisor.qemu.driver import QemuHypervisor
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls

if TYPE_CHECKING:
    from standby.daemon.compose import Services
    from standby.daemon.config import Config
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


def build(services: Services) -> Primary:
    """The primary side over the daemon's hypervisor."""
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
    # Re-attaching to QEMU processes that outlived a daemon must come before the VM recovery, which marks
    # every VM without a process as off.
    services.recovery_hooks.insert(0, ("qemu-reattach", _reattach))
    tracking = TrackingGuard(services)
    services.hypervisor.subscribe(tracking.on_event)
    if isinstance(services.hypervisor, QemuHypervisor):
        # In this order: the last cycle's own bitmap changes must be restamped before the compare.
        services.hypervisor.add_pre_start(scheduler.before_start)
        services.hypervisor.add_pre_start(tracking.before_start)
    services.hypervisor.subscribe(scheduler.on_vm_event)  # the last cycle at a clean stop
    return Primary(use_cases, runner, scheduler)


async def _reattach(services: Services) -> None:
    hypervisor = services.hypervisor
    if isinstance(hypervisor, QemuHypervisor):
        adopted = await hypervisor.reattach(services.db.vms.list())
        if adopted:
            log.info("re-attached to running VMs", extra={"fields": {"vms": ",".join(adopted)}})


#: Relationship states in which lost change tracking means a resynchronization (hyperv-api §9.7).
_TRACKED = frozenset({ReplicationState.REPLICATING, ReplicationState.SUSPENDED,
                      ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, ReplicationState.CRITICAL})


class TrackingGuard:
    """Resync triggers the hypervisor reveals: QEMU killed (its bitmaps come back inconsistent) and a disk
    changed while the VM was off (size or mtime differ from what the clean stop recorded)."""

    def __init__(self, services: Services) -> None:
        self._db = services.db
        self._clock = services.clock

    def on_event(self, event: VmEvent) -> None:
        """Crash → state 9 at once; clean stop → stamp the images."""
        if event.kind is VmEventKind.CRASHED:
            self._lose(event.vm_id, "QEMU stopped uncleanly")
        elif event.kind in (VmEventKind.STOPPED, VmEventKind.GUEST_SHUTDOWN):
            vm = self._db.vms.find(event.vm_id)
            if vm is not None and self._primary(vm.vm_id) is not None:
                self._db.disk_stamps.put(vm.vm_id, [_stamp(d.disk_id, d.path) for d in vm.disks])

    def before_start(self, vm: VirtualMachine) -> None:
        """Compare the images with the stamps of the last clean stop, then forget them."""
        stamps = self._db.disk_stamps.get(vm.vm_id)
        if not stamps:
            return
        now = [_stamp(d.disk_id, d.path) for d in vm.disks]
        if sorted(now) != sorted(stamps):
            self._lose(vm.vm_id, "a disk changed while the virtual machine was off")
        self._db.disk_stamps.clear(vm.vm_id)

    def _primary(self, vm_id: str) -> Relationship | None:
        vm = self._db.vms.find(vm_id)
        if vm is None or vm.replication_mode is not ReplicationMode.PRIMARY:
            return None
        return self._db.relationships.find(vm_id, int(RelationshipIndex.PRIMARY))

    def _lose(self, vm_id: str, why: str) -> None:
        rel = self._primary(vm_id)
        if rel is None or rel.state not in _TRACKED:
            return
        try:
            resync = ReplicationState.WAITING_TO_START_RESYNCHRONIZATION
            self._db.relationships.update(replace(rel, state=resync, health=ReplicationHealth.CRITICAL))
            self._db.events.record(self._clock(), "replication.resync-required", "HealthResyncRequired",
                                   element_id=vm_id, args={"reason": why})
        except StandbyError as exc:  # the next cycle finds the lost tracking anyway
            log.warning("could not mark %s for resynchronization: %s", vm_id, exc)


def _stamp(disk_id: str, path: str) -> tuple[str, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (disk_id, -1, -1)
    return (disk_id, info.st_size, info.st_mtime_ns)


async def _recover(services: Services) -> None:
    settled = await services.primary.runner.recover()
    if settled:
        log.info("aborted half-done replication cycles", extra={"fields": {"vms": ",".join(settled)}})


def start(services: Services) -> None:
    """Start the scheduler (after start-up recovery, on the daemon's loop)."""
    services.primary.scheduler.start()


async def stop(services: Services) -> None:
    """Stop the scheduler (a cycle in flight aborts its cut)."""
    await services.primary.scheduler.stop()


def peer_factory(services: Services) -> Any:
    """``settings → PeerClient`` for the relationship's RecoveryConnectionPoint:RecoveryServerPortNumber."""
    config = services.config

    clients: dict[str, Any] = {}
    services.closers.append(lambda: _close_all(clients))

    def make(settings: ReplicationSettings) -> PeerPort:
        url = peer_url(settings.recovery_connection_point, settings.recovery_port or config.peer.port)
        if url not in clients:  # one connection pool per replica host
            clients[url] = peer_client(config, settings.recovery_connection_point,
                                       settings.recovery_port or config.peer.port)
        client: PeerPort = clients[url]
        return client

    return make


def peer_url(host: str, port: int) -> str:
    """``https://host:port`` (an IPv6 address in brackets)."""
    url_host = f"[{host}]" if ":" in host else host
    return f"https://{url_host}:{port}"


def peer_client(config: Config, host: str, port: int | None = None) -> PeerClient:
    """A mutual-TLS client of another host's peer listener; ``Unavailable`` without a site CA."""
    ca = config.tls.ca_file
    if ca is None:
        raise Unavailable("replication needs [tls] ca_file (the site CA) in the configuration",
                          message_id="PeerTlsMissing")
    tls = PeerTls(ca, config.listeners.https.cert_file, config.listeners.https.key_file)
    return PeerClient(peer_url(host, port or config.peer.port), tls)


def _close_all(clients: dict[str, Any]) -> None:
    """At daemon exit (the loop may be gone): drop the pools; sockets close with the process."""
    clients.clear()
