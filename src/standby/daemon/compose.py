"""The composition root: build every service of the daemon from its configuration.

``build_services(config)`` opens the store, creates the job manager and the use cases, and returns them as
``Services``; ``serve.py`` wires them to the listeners, ``api.app.create_app`` to routes. Nothing else
constructs these objects, so swapping an implementation is a change here only.

Start-up recovery: ``Services.recover()`` first ends jobs a previous daemon left running
(``JobManager.recover_after_restart``), then runs the registered recovery hooks in order. A use case that
keeps intent state (DESIGN §3: "an intent state is written before side effects") registers its hook here with
one line, ``services.add_recovery_hook("name", hook)``, inside ``build_services``; a hook is
``hook(services)`` returning None or an awaitable. A failing hook is logged and does not stop the daemon.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from standby.cim.backend import ObjectManager
from standby.cim.object_manager import build_object_manager
from standby.cim.runtime import CimRuntime
from standby.cim.schema import load_schema
from standby.daemon import failover_wiring, group_wiring, primary_wiring, replica_wiring
from standby.daemon.config import Config
from standby.daemon.group_wiring import Groups
from standby.daemon.passwords import PasswordVerifier
from standby.daemon.primary_wiring import Primary
from standby.domain.clock import Clock
from standby.domain.entities import Host
from standby.engine.collection_service import CollectionReplicationService
from standby.engine.connection import ReplicationConnectionTester
from standby.engine.failover import FailoverUseCases
from standby.engine.inventory import Inventory
from standby.engine.jobs import JobManager
from standby.engine.planned import PlannedServices
from standby.engine.planned import build as build_planned
from standby.engine.replica import ReplicaUseCases
from standby.engine.replication import ReplicationUseCases
from standby.engine.service import ReplicationService
from standby.engine.systems import Engine, VirtualSystems
from standby.engine.vms import VmUseCases
from standby.hypervisor.port import Hypervisor
from standby.hypervisor.qemu.driver import QemuHypervisor
from standby.hypervisor.qemu.images import QemuImages
from standby.store.sqlite import Database

log = logging.getLogger("standby.daemon")

RecoveryHook = Callable[["Services"], Awaitable[None] | None]
#: Holds this host's GUID inside the data directory.
HOST_ID_FILE = "host-id"


def utc_now() -> datetime:
    """The daemon's clock: aware UTC now."""
    return datetime.now(UTC)


@dataclass(eq=False)
class Services:
    """Everything the daemon's surfaces (REST, CIM-XML, CLI via REST, peer routes) call.

    The parts after ``host`` are built in dependency order by ``build_services`` (each builder may read the
    parts built before it), so they are set after construction rather than passed in.
    """

    config: Config
    clock: Clock
    db: Database
    jobs: JobManager
    verifier: PasswordVerifier
    connection_tester: ReplicationConnectionTester
    started_at: datetime
    host: Host
    hypervisor: Hypervisor = field(init=False)
    vms: VmUseCases = field(init=False)
    primary: Primary = field(init=False)
    replica: ReplicaUseCases = field(init=False)
    failover: FailoverUseCases = field(init=False)
    planned: PlannedServices = field(init=False)
    groups: Groups = field(init=False)
    #: The engine entries every surface calls (one per Hyper-V operation).
    engine: Engine = field(init=False)
    object_manager: ObjectManager = field(init=False)
    recovery_hooks: list[tuple[str, RecoveryHook]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """Where this host keeps its state."""
        return self.config.data_dir

    @property
    def peer_port(self) -> int:
        """The port of this host's peer listener (the default for other hosts of the site)."""
        return self.config.peer.port

    def add_recovery_hook(self, name: str, hook: RecoveryHook) -> None:
        """Run ``hook(services)`` at start-up, after jobs are recovered, in registration order."""
        self.recovery_hooks.append((name, hook))

    async def recover(self) -> None:
        """Start-up recovery: interrupted jobs first, then every hook."""
        await asyncio.to_thread(self.jobs.recover_after_restart)
        for name, hook in self.recovery_hooks:
            try:
                outcome = hook(self)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("recovery hook failed", extra={"fields": {"hook": name}})
            else:
                log.info("recovery hook done", extra={"fields": {"hook": name}})

    def close(self) -> None:
        """Release what the services hold (closers in reverse order, the database last)."""
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                log.exception("closing a service failed")
        self.db.close()


def build_services(
    config: Config, *, clock: Clock = utc_now, loop: asyncio.AbstractEventLoop | None = None,
    db: Database | None = None, hypervisor: Hypervisor | None = None,
) -> Services:
    """Open the store and build every service (call it on the daemon's event loop, or pass ``loop``).

    ``hypervisor`` replaces the QEMU driver (the in-memory fake of unit tests).
    """
    database = db if db is not None else Database.open(config.database_path)
    try:
        jobs = JobManager(database, clock, loop=loop)
        services = Services(
            config=config,
            clock=clock,
            db=database,
            jobs=jobs,
            verifier=PasswordVerifier(config.users_map),
            connection_tester=ReplicationConnectionTester(
                jobs,
                timeout=config.replication.connection_timeout_seconds,
                ca_file=config.tls.ca_file,
                client_cert=(config.listeners.https.cert_file, config.listeners.https.key_file),
            ),
            started_at=clock(),
            host=local_host(config, database),
        )
        services.hypervisor = hypervisor if hypervisor is not None else QemuHypervisor(
            config.data_dir / "run", accel=config.hypervisor.accel, binary=config.hypervisor.qemu_binary)
        services.vms = _build_vms(services)
        services.primary = primary_wiring.build(services)
        services.replica = replica_wiring.build(services)
        services.failover = failover_wiring.build(services)
        services.planned = _build_planned(services)
        services.groups = group_wiring.build(services)
        services.engine = _build_engine(services)
        services.object_manager = _build_object_manager(services)
    except BaseException:
        database.close()
        raise
    return services


def local_host(config: Config, db: Database) -> Host:
    """This host's identity: a GUID kept in ``<data-dir>/host-id`` and its row in ``db.hosts``."""
    id_file = config.data_dir / HOST_ID_FILE
    try:
        host_id = id_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        host_id = ""
    if not host_id:
        host_id = str(uuid.uuid4()).upper()
        id_file.write_text(host_id + "\n", encoding="ascii")
    host = Host(host_id=host_id, name=config.host.name, fqdn=config.host.fqdn)
    stored = db.hosts.find(host_id)
    if stored is None:
        db.hosts.insert(host)
    elif stored != host:
        db.hosts.update(host)  # renamed host: keep the identity, take the new names
    return host


def _build_vms(services: Services) -> VmUseCases:
    """The VM use cases over the hypervisor; they mark VMs lost while the daemon was down."""
    vms = VmUseCases(services.db, services.hypervisor, services.clock,
                     vm_dir=services.config.data_dir / "vms", images=QemuImages(), jobs=services.jobs,
                     data_dir=services.config.data_dir)
    services.add_recovery_hook("vms", _recover_vms)
    return vms


def _recover_vms(services: Services) -> None:
    services.vms.recover()


def _build_planned(services: Services) -> PlannedServices:
    """Planned failover, reverse and extended replication over the primary's runner and peers."""
    applier = services.replica.applier
    return build_planned(services.db, services.clock, services.jobs, services.primary.runner,
                         primary_wiring.peer_factory(services), host_name=services.config.host.fqdn,
                         lock=applier.lock, point_listeners=applier.point_listeners,
                         heartbeat_listeners=services.replica.heartbeat_listeners)


def _build_engine(services: Services) -> Engine:
    """The engine entries over the use cases built before."""
    db, clock, groups = services.db, services.clock, services.groups
    replication = ReplicationService(
        db, clock, services.jobs,
        ReplicationUseCases(db, clock, certificate_path=services.config.listeners.https.cert_file),
        services.primary.use_cases, services.failover, services.planned, services.replica,
        services.connection_tester)
    collections = CollectionReplicationService(db, clock, groups.management, groups.replication,
                                               groups.failover, groups.assembler)
    return Engine(replication=replication, collections=collections, collection_management=groups.management,
                  redundancy=groups.redundancy, systems=VirtualSystems(services.vms, services.failover),
                  jobs=services.jobs, inventory=Inventory(db))


def _build_object_manager(services: Services) -> ObjectManager:
    """The CIM object model over the engine entries."""
    runtime = CimRuntime(clock=services.clock, host=services.host, schema=load_schema(),
                         engine=services.engine, assembler=services.groups.assembler)
    return build_object_manager(runtime)
